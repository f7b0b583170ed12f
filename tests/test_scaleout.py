"""prepare and evaluate --generate split over processes (torchrun, gloo on the CPU) and over jobs
(--shard I/N): the result is byte for byte a one-process run's, after a kill too; and each face
network's batch call matches its one-image call within the stated tolerance.

The runs go through tests/support/scaleout_probe.py, whose stand-in networks are pixel arithmetic:
the split, the writes, the merge and the resume are under test here; the networks' batching below.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from magicface_core.errors import SettingsError
from magicface_core.scaleout import Shard
from tests.support.paths import OFFICIAL, REPO

PROBE = REPO / "tests" / "support" / "scaleout_probe.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def probe(*args, processes: int = 1, wait: bool = True, env: dict | None = None):
    """The probe alone (one process) or under ``torchrun --nproc_per_node N`` (gloo, CPU)."""
    launcher = [] if processes == 1 else ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                          str(processes)]
    command = [sys.executable, *launcher, str(PROBE), *map(str, args)]
    env = {**ENV, **(env or {})}
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Five frame-folder clips cut from the official portraits (one with a blank frame) and an unreadable video."""
    root = tmp_path_factory.mktemp("scaleout") / "videos"
    sources = [np.asarray(Image.open(OFFICIAL / n).convert("RGB").resize((48, 48)))
               for n in ("00025.png", "00381.png", "00512.png")]
    for c in range(5):
        (root / f"clip{c}").mkdir(parents=True)
        for f in range(3):
            frame = np.zeros_like(sources[0]) if (c, f) == (2, 1) else np.roll(sources[(c + f) % 3], 2 * f, axis=0)
            Image.fromarray(frame).save(root / f"clip{c}" / f"{f:03d}.png")
    (root / "broken.mp4").write_bytes(os.urandom(512))
    return root


@pytest.fixture(scope="module")
def one_process(videos) -> dict[str, bytes]:
    out = videos.parent / "one"
    probe("prepare", videos, out)
    files = tree(out)
    assert "index.json" in files and sum(name.endswith("_cond.png") for name in files) == 5 * 3 - 1
    return files


def test_two_processes_write_what_one_process_writes(videos, one_process):
    out = videos.parent / "two"
    probe("prepare", videos, out, processes=2)
    assert tree(out) == one_process  # index.json, every image and every done.json, byte for byte


def test_a_killed_run_resumes_to_the_same_result(videos, one_process):
    from tests.test_distributed_training import kill_job

    out = videos.parent / "killed"
    job = probe("prepare", videos, out, processes=2, wait=False, env={"PROBE_DELAY": "0.4"})
    deadline = time.monotonic() + 60
    while not list(out.glob("clips/*/done.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    kill_job(job)
    done = list(out.glob("clips/*/done.json"))
    assert 0 < len(done) < 6 and not (out / "index.json").exists()  # killed midway
    probe("prepare", videos, out, processes=2)
    assert tree(out) == one_process
    assert not list(out.rglob("*.partial*"))


def test_shards_then_merge_equal_one_run_and_a_rerun_changes_nothing(videos, one_process):
    out = videos.parent / "shards"
    probe("prepare", videos, out, "--shard", "0/2")
    assert not (out / "index.json").exists()  # the other shard's clips are not done yet
    merge = subprocess.run([sys.executable, str(PROBE), "prepare", str(videos), str(out), "--merge"], cwd=REPO,
                           env=ENV, capture_output=True, text=True, timeout=120)
    assert merge.returncode != 0 and "not prepared" in merge.stderr and "clip0, clip2, clip4" in merge.stderr
    probe("prepare", videos, out, "--shard", "1/2")
    assert tree(out) == one_process  # the shard that finished last wrote the index
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "done.json"}
    probe("prepare", videos, out, "--shard", "1/2")  # a finished run, again
    assert tree(out) == one_process
    # nothing rewritten (only the unreadable clip's record is, as it is tried again)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "done.json"} == stamps


def test_shards_or_a_rerun_with_other_frame_settings_are_refused_before_any_work(videos, tmp_path):
    from magicface_core.training.prepare import Settings, merge, prepare
    from tests.support.scaleout_probe import StubToolkit

    out = tmp_path / "mixed"
    settings = Settings(frame_step=1, max_frames=10, min_gap=1, pairs_per_clip=4, seed=0)
    prepare(videos, out, StubToolkit(), settings, Shard.parse("0/2"))
    before = tree(out)
    other = Settings(frame_step=2, max_frames=10, min_gap=1, pairs_per_clip=4, seed=0)
    refused = r"clip1 was prepared .* with other frame settings \(--frame-step 1 there, 2 here\)"
    with pytest.raises(SettingsError, match=refused):
        prepare(videos, out, StubToolkit(), other, Shard.parse("1/2"))
    with pytest.raises(SettingsError, match="other frame settings"):
        merge(videos, out, other)
    assert tree(out) == before  # the refused shard wrote nothing
    # other pairing settings only re-pair: the clips stay, the index follows the run's settings
    prepare(videos, out, StubToolkit(), settings, Shard.parse("1/2"))
    report = merge(videos, out, Settings(frame_step=1, max_frames=10, min_gap=1, pairs_per_clip=1, seed=0))
    assert report.pairs == 5


def test_evaluate_generate_on_two_processes_equals_one(tmp_path):
    identities = tmp_path / "identities"
    identities.mkdir()
    for name in ("00025.png", "00381.png", "00512.png"):
        Image.open(OFFICIAL / name).convert("RGB").save(identities / name)
    deltas = tmp_path / "deltas.txt"
    deltas.write_text("AU12=3,AU6=2\nAU26=4\nAU4=-1\n")
    probe("evaluate", identities, deltas, tmp_path / "one")
    probe("evaluate", identities, deltas, tmp_path / "two", processes=2)
    one, two = tree(tmp_path / "one"), tree(tmp_path / "two")
    assert one.keys() == two.keys() and len([k for k in one if k.endswith(".png")]) == 9
    for name in one:
        a, b = one[name], two[name]
        if name.endswith((".csv", ".json")):  # they name the edits' paths, under each run's own --out
            a = a.replace(str(tmp_path / "one").encode(), b"OUT")
            b = b.replace(str(tmp_path / "two").encode(), b"OUT")
        assert a == b, name
    assert b"nan" not in one["summary.json"].lower()


def test_evaluate_shards_with_other_settings_are_refused_and_merge_writes_the_tables(tmp_path):
    from magicface_core.evaluation.evaluate import RESULTS, TRIPLES, EvalTools, EvaluateJob, generate_and_evaluate, run
    from tests.support.scaleout_probe import StubTools, stub_edit

    identities = tmp_path / "identities"
    identities.mkdir()
    for name in ("00025.png", "00381.png"):
        Image.open(OFFICIAL / name).convert("RGB").save(identities / name)
    (tmp_path / "deltas.txt").write_text("AU12=3\nAU26=4\n")
    out = tmp_path / "out"
    job = EvaluateJob(generate=True, identities=identities, deltas=tmp_path / "deltas.txt", out=out)
    people, deltas = job.generation_inputs()
    tools = EvalTools(StubTools.estimate_aus, StubTools.parse, StubTools.landmarks, StubTools.embed)
    generate_and_evaluate(people, deltas, stub_edit, tools, out, Shard(0, 2), job.made_with(deltas, torch.float32))
    before = tree(out)
    fewer_steps = EvaluateJob(generate=True, identities=identities, deltas=tmp_path / "deltas.txt", out=out,
                              sampling=type(job.sampling)(steps=20))
    with pytest.raises(SettingsError, match="00025.png's edits .* were made with other settings \\(sampling differ\\)"):
        generate_and_evaluate(people, deltas, stub_edit, tools, out, Shard(1, 2),
                              fewer_steps.made_with(deltas, torch.float32))
    assert tree(out) == before  # nothing edited or written
    generate_and_evaluate(people, deltas, stub_edit, tools, out, Shard(1, 2), job.made_with(deltas, torch.float32))
    tables = {name: (out / name).read_bytes() for name in (TRIPLES, *RESULTS)}  # the last shard wrote them
    for name in tables:
        (out / name).unlink()  # as if that shard had died before writing them
    run(EvaluateJob(generate=True, identities=identities, deltas=tmp_path / "deltas.txt", out=out, merge=True),
        None, "cpu", torch.float32)
    assert {name: (out / name).read_bytes() for name in tables} == tables


def test_shard_parsing_and_the_split():
    assert Shard.parse("1/3") == Shard(1, 3) and str(Shard(1, 3)) == "1/3"
    keys = [f"k{i}" for i in range(7)]
    parts = [Shard(i, 3).take(reversed(keys)) for i in range(3)]
    assert sorted(sum(parts, [])) == keys and parts[0] == ["k0", "k3", "k6"]
    assert Shard(1, 2).split(Shard(1, 4)) == Shard(5, 8)  # job 1 of 2, its process 1 of 4
    for bad in ("2/2", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(SettingsError, match="I/N|shard"):
            Shard.parse(bad)


# --- batches of frames through each face network: equal to one frame at a time -------------------
# Stated tolerance (random weights, CPU, fp32): landmarks (2D-FAN, D3DFR) within 1e-3 px, S3FD boxes
# within 1e-3 px, AUs within 1e-5, BiSeNet labels equal on at least 99.9% of pixels (an arg-max tie
# may go either way when the batch changes the float rounding).

def _frames(size: int, count: int = 2) -> list[np.ndarray]:
    return [np.asarray(Image.open(OFFICIAL / n).convert("RGB").resize((size, size)))
            for n in ("00025.png", "00381.png", "00512.png")[:count]]


def test_s3fd_and_fan_batches_equal_single_frames(tmp_path):
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.detection.sfd.sfd_detector import SFDDetector
    from face_alignment.models import FAN

    from magicface_core.faces.landmarks import FaceAlignmentBackend, FaceBox, _import_face_alignment

    torch.manual_seed(0)
    torch.save(s3fd().state_dict(), tmp_path / "s3fd.pth")
    backend = FaceAlignmentBackend.__new__(FaceAlignmentBackend)
    _, _, backend._crop, backend._flip, backend._get_preds = _import_face_alignment()
    backend.detector = SFDDetector("cpu", path_to_detector=str(tmp_path / "s3fd.pth"), filter_threshold=0.06)
    backend.fan = FAN(1).eval()  # one hourglass instead of four: the batching is what is under test
    images = _frames(64)
    single = [backend.detect(image) for image in images]
    batched = backend.detect_batch(images)
    assert [len(b) for b in batched] == [len(s) for s in single] and sum(map(len, single)) > 0
    for s, b in zip(single, batched):
        assert np.abs(np.array([[x.x0, x.y0, x.x1, x.y1] for x in s]) -
                      np.array([[x.x0, x.y0, x.x1, x.y1] for x in b])).max() < 1e-3
    boxes = [FaceBox(10, 12, 50, 56), FaceBox(8, 8, 40, 44)]
    points = backend.landmarks_batch(images, boxes)
    for image, box, p in zip(images, boxes, points):
        assert np.abs(backend.landmarks(image, box) - p).max() < 1e-3


def test_bisenet_d3dfr_and_libreface_batches_equal_single_frames(tmp_path):
    from magicface_core.faces.au_estimation import LibreFaceAUNet, LibreFaceEstimator
    from magicface_core.faces.d3dfr import BFMKeypoints, D3DFRLandmarks, D3DFRNet
    from magicface_core.faces.parsing import BiSeNet, BiSeNetParser
    from tests.support.factories import bisenet_state, d3dfr_state, libreface_checkpoint, write_bfm_mat

    images = _frames(512)
    parser = BiSeNet()
    parser.load_state_dict({k.removeprefix("module."): v for k, v in bisenet_state(0).items()}, strict=False)
    parser = BiSeNetParser(parser.eval())
    for one, many in zip([parser.parse(i) for i in images], parser.parse_batch(images)):
        assert (one == many).mean() >= 0.999

    network = D3DFRNet()
    network.load_state_dict(d3dfr_state(0), strict=False)
    fit = D3DFRLandmarks(network.eval(), BFMKeypoints.from_mat(write_bfm_mat(tmp_path / "bfm.mat")))
    five = [np.array([[190, 230], [320, 230], [256, 300], [200, 370], [312, 370]], float)] * 2
    five.append(np.full((5, 2), 5000.0))  # outside the image: its error, in its place
    batched = fit.landmarks68_batch(images + images[:1], five)
    assert isinstance(batched[2], Exception)
    for image, points, b in zip(images, five, batched):
        assert np.abs(fit.landmarks68(image, points) - b).max() < 1e-3

    model = LibreFaceAUNet()
    model.load_state_dict({k.removeprefix("module."): v for k, v in libreface_checkpoint(0)["model"].items()})
    estimator = LibreFaceEstimator(model.eval())
    landmarks = [np.stack(np.meshgrid(np.linspace(180, 330, 17), np.linspace(200, 400, 4)), -1).reshape(-1, 2)[:68]] * 2
    together = estimator.estimate(list(zip(images, landmarks))).values
    apart = torch.cat([estimator.estimate([(i, lm)]).values for i, lm in zip(images, landmarks)])
    assert (together - apart).abs().max() < 1e-5


class _FakeAlignment:
    """A face box and 68 points from arithmetic (the networks' batching is tested above): a blank
    frame has no face; the points are one face's landmarks placed in the box."""

    detection_modules = landmark_modules = ()

    def __init__(self):
        template = np.load(REPO / "tests" / "data" / "libreface_align_reference.npz")["landmarks"][0]
        self.template = (template - template.min(0)) / (template.max(0) - template.min(0))

    def detect(self, image):
        return self.detect_batch([image])[0]

    def detect_batch(self, images):
        from magicface_core.faces.landmarks import FaceBox

        return [[] if i.std() < 1 else [FaceBox(i.shape[1] * .27, i.shape[0] * .27, i.shape[1] * .73, i.shape[0] * .8)]
                for i in images]

    def landmarks(self, image, box):
        return self.landmarks_batch([image], [box])[0]

    def landmarks_batch(self, images, boxes):
        return [(self.template * [b.width, b.height] + [b.x0, b.y0] + i.mean() / 255).astype(np.float32)
                for i, b in zip(images, boxes)]


class _FakeParser:
    def parse(self, image):
        return self.parse_batch([image])[0]

    def parse_batch(self, images):
        return [(image.mean(axis=2) > 90).astype(np.uint8) * 17 for image in images]


def test_a_batch_of_frames_gives_what_each_frame_gives_alone(tmp_path):
    """prepare's batched steps (faces_of_frames) against its frame-by-frame steps (face_of_frame):
    the same frames drop out, the same portraits and conditions, AUs (LibreFace, random) within 1e-5."""
    from magicface_core.faces.au_estimation import LibreFaceAUNet, LibreFaceEstimator
    from magicface_core.faces.toolkit import FaceToolkit
    from magicface_core.training.prepare import face_of_frame, faces_of_frames
    from tests.support.factories import libreface_checkpoint

    toolkit = FaceToolkit(tmp_path, "cpu", jaw="2d")
    model = LibreFaceAUNet()
    model.load_state_dict({k.removeprefix("module."): v for k, v in libreface_checkpoint(0)["model"].items()})
    toolkit.__dict__.update(_alignment=_FakeAlignment(), _au_estimator=LibreFaceEstimator(model.eval()))
    toolkit._parsers["bisenet"] = _FakeParser()
    frames = _frames(200, 3)
    frames.insert(1, np.zeros_like(frames[0]))  # no face
    alone = [face_of_frame(frame, toolkit) for frame in frames]
    together = faces_of_frames(frames, toolkit)
    assert [type(r) for r in alone] == [type(r) for r in together] and isinstance(together[1], Exception)
    assert sum(isinstance(r, tuple) for r in together) == 3
    for one, many in zip(alone, together):
        if isinstance(one, tuple):
            assert np.array_equal(one[0], many[0]) and np.array_equal(one[1], many[1])
            assert np.abs(np.subtract(one[2], many[2])).max() < 1e-5

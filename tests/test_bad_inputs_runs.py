"""Bad-input rows for whole runs (issue 21, part B): video, train, prepare and evaluate.

Each row reproduces a finding of the sweep and checks the behaviour a user expects instead.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from magicface_core.errors import OutputPathError
from magicface_core.files import exclusive_output
from magicface_core.video.io import VideoFile, write_video

ROOT = Path(__file__).resolve().parents[1]


def _frames(count: int, seed: int, size: int = 16) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


def test_video_temporary_names_are_unique_per_run(tmp_path, monkeypatch):
    """Finding 2: two runs with one --out shared `.x.partial.mp4`; the second's file held the first's frames."""
    import av

    target = tmp_path / "x.mp4"
    opened = []
    real_open = av.open

    def spy(name, *args, **kwargs):
        if args and args[0] == "w" or kwargs.get("mode") == "w":
            opened.append(Path(name).name)
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(av, "open", spy)
    write_video(target, _frames(3, 0), 25)
    write_video(target, _frames(3, 1), 25)
    assert len(opened) == 2 and opened[0] != opened[1]
    assert all(name.startswith(".x.mp4.") and name.endswith(".partial.mp4") for name in opened)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mp4"]  # no temporary file or lock left


def test_video_second_run_on_the_same_out_is_refused_and_the_first_is_whole(tmp_path):
    """Finding 2: while one run writes --out, a second run fails cleanly; the first run's file stays whole."""
    target = tmp_path / "x.mp4"
    with exclusive_output(target):
        with pytest.raises(OutputPathError, match="another run is writing"):
            write_video(target, _frames(3, 1), 25)
        assert not target.exists()
    assert write_video(target, _frames(4, 2), 25) == 4
    assert len(list(VideoFile(target))) == 4


def test_video_sigterm_leaves_no_partial_output(tmp_path):
    """Finding 2 (signals): SIGTERM left `.x.partial.mp4` behind; now it unwinds like Ctrl-C (exit 130)."""
    target = tmp_path / "x.mp4"
    script = textwrap.dedent(f"""
        import os, signal, sys, time
        import numpy as np
        from magicface_core import cli
        from magicface_core.video.io import write_video

        def frames():
            for i in range(10**6):
                if i == 2:
                    print("writing", flush=True)
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(5)
                yield np.zeros((16, 16, 3), np.uint8)

        class Parser:  # cli.main's parser, reduced to the one command under test
            def parse_args(self, argv):
                return type("Args", (), {{"command": "video"}})()

        cli.build_parser = Parser
        cli.COMMANDS["video"] = lambda args: write_video({str(target)!r}, frames(), 25)
        sys.exit(cli.main(["video"]))  # through main, so the handler main installs is the one under test
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 130, result.stderr
    assert "interrupted" in result.stderr
    assert list(tmp_path.iterdir()) == []


class _StubToolkit:
    """The face toolkit's four calls, faked: prepare's bookkeeping is under test, not the networks."""

    def __init__(self):
        self.clips = 0

    def crop(self, image):
        return image, None

    def landmarks(self, portrait):
        return np.zeros((68, 2), np.float32)

    def condition(self, portrait, landmarks):
        return portrait, None

    def estimate_aus(self, portraits, landmarks):
        return type("AUs", (), {"values": np.full((1, 12), float(portraits[0].mean()), np.float32)})()


def _two_clips_one_stem(videos: Path) -> None:
    from tests.support.video_clips import write_clip

    videos.mkdir()
    write_clip(videos / "a.mp4", [np.full((32, 32, 3), 40, np.uint8)] * 4)
    write_clip(videos / "a.mkv", [np.full((32, 32, 3), 200, np.uint8)] * 6)


def test_prepare_clips_with_one_stem_each_get_their_own_record(tmp_path):
    """Finding 8: with a.mp4 and a.mkv, a.mkv reused a.mp4's done.json and each a.mp4 frame was listed twice."""
    from magicface_core.training.dataset import read_index
    from magicface_core.training.prepare import Settings, prepare

    _two_clips_one_stem(tmp_path / "videos")
    report = prepare(tmp_path / "videos", tmp_path / "data", _StubToolkit(), Settings(frame_step=1, min_gap=1))
    frames, _ = read_index(tmp_path / "data")
    assert report.clips == 2 and report.frames_kept == 4 + 6
    assert sorted({f.clip for f in frames}) == ["a.mkv", "a.mp4"]
    assert len({(f.clip, f.frame) for f in frames}) == len(frames)  # no frame listed twice


def test_prepare_half_written_done_json_does_not_block_a_rerun(tmp_path):
    """Prepare item: a half-written done.json gave a JSONDecodeError on every re-run; now the clip is done again."""
    from magicface_core.training.prepare import Settings, prepare

    videos = tmp_path / "videos"
    videos.mkdir()
    from tests.support.video_clips import write_clip
    write_clip(videos / "talk.mp4", [np.full((32, 32, 3), 90, np.uint8)] * 3)
    (tmp_path / "data" / "clips" / "talk").mkdir(parents=True)
    (tmp_path / "data" / "clips" / "talk" / "done.json").write_text('{"frames": [{"clip": "ta')
    report = prepare(videos, tmp_path / "data", _StubToolkit(), Settings(frame_step=1, min_gap=1))
    assert report.clips == 1 and report.frames_kept == 3


@pytest.mark.parametrize("flags, words", [
    (["--frame-step", "0"], ["--frame-step", "at least 1"]),
    (["--max-frames", "-1"], ["--max-frames", "at least 1"]),
    (["--min-gap", "-3"], ["--min-gap", "0 or more"]),
    (["--batch-size", "0"], ["--batch-size", "at least 1"]),
    (["--shard", "2/2"], ["--shard 2/2", "0 <= I < N"]),
    (["--shard", "first"], ["--shard", "I/N"]),
])
def test_prepare_refuses_bad_settings_before_loading(tmp_path, monkeypatch, capsys, flags, words):
    """Prepare items: --frame-step 0 was a traceback, --max-frames -1 reported good videos unreadable."""
    from magicface_core import cli

    def no_toolkit(job):
        raise AssertionError("the face networks loaded before the settings were checked")

    monkeypatch.setattr(cli.commands, "_face_toolkit", no_toolkit)
    (tmp_path / "videos").mkdir()
    assert cli.main(["prepare", "--videos", str(tmp_path / "videos"), "--out", str(tmp_path / "data"), *flags]) == 2
    message = capsys.readouterr().err
    assert all(word in message for word in words), message


def test_prepare_empty_videos_folder_is_an_error(tmp_path):
    """Prepare item: an empty --videos folder exited 0 with an empty index."""
    from magicface_core.errors import MagicFaceError
    from magicface_core.training.prepare import Settings, prepare

    (tmp_path / "videos").mkdir()
    with pytest.raises(MagicFaceError, match="nothing to prepare"):
        prepare(tmp_path / "videos", tmp_path / "data", _StubToolkit(), Settings())
    assert not (tmp_path / "data" / "index.json").exists()


def test_evaluate_reads_a_csv_with_an_excel_byte_order_mark(tmp_path):
    """Messages item: Excel's UTF-8 CSV starts with a byte-order mark; it read as a missing `identity` column."""
    from magicface_core.evaluation.evaluate import read_triples

    (tmp_path / "edits.csv").write_text("identity,au_delta,edited\r\na.png,AU12=3,b.png\r\n", encoding="utf-8-sig")
    ((identity, delta, edited),) = read_triples(tmp_path / "edits.csv")
    assert identity == tmp_path / "a.png" and edited == tmp_path / "b.png"
    assert delta.to_dicts(skip_zeros=True) == [{"AU12": 3.0}]


@pytest.mark.parametrize("text, words", [
    ("identity,au_delta,edited\n", "has no rows under its header"),
    ("", "is empty"),
])
def test_evaluate_header_only_or_empty_csv_says_so(tmp_path, text, words):
    """Messages item: a header-only CSV reported a missing `identity` column."""
    from magicface_core.errors import MagicFaceError
    from magicface_core.evaluation.evaluate import read_triples

    (tmp_path / "edits.csv").write_text(text)
    with pytest.raises(MagicFaceError, match=words) as error:
        read_triples(tmp_path / "edits.csv")
    assert "missing" not in str(error.value)


def test_train_help_shows_the_real_defaults():
    """Messages item: `train --help` printed `(default: <object object at 0x...>)`."""
    from magicface_core.cli.train import build_parser

    text = build_parser().format_help()
    assert "object at 0x" not in text
    text = " ".join(text.split())  # argparse wraps lines
    assert "(default: csv)" in text and "(default: 2)" in text and "(default: magicface-training)" in text


@pytest.mark.parametrize("value", [
    {"AU12": True}, {"AU12": np.bool_(False)}, [True] + [0.0] * 11, np.zeros(12, bool),
])
def test_au_vector_refuses_booleans(value):
    """Silently accepted: `AUVector.from_dict({"AU12": True})` read as 1."""
    from magicface_core.au import AUVector
    from magicface_core.errors import AUInputError

    with pytest.raises(AUInputError, match="number"):
        AUVector.coerce(value)


# --- settings refused only after the models had loaded (issue 21, moved into the job checks by issue 20) ---

@pytest.fixture()
def no_models(monkeypatch):
    """Loading a model fails the test: each row's refusal must come first."""
    from magicface_core.model.magicface import MagicFace
    from magicface_core.model import sd15

    def loaded(*args, **kwargs):
        raise AssertionError("a model loaded before the settings were checked")

    monkeypatch.setattr(MagicFace, "from_pretrained", loaded)
    monkeypatch.setattr(sd15, "load_sd15", loaded)


def _photo(path: Path, width: int, height: int) -> Path:
    from PIL import Image

    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(path)
    return path


@pytest.mark.parametrize("case, words", [
    ("photo", ["the image is 600x400", "--crop"]),
    ("condition", ["the condition image is 600x400"]),
])
def test_edit_refuses_a_non_square_photo_or_condition_before_loading(tmp_path, no_models, capsys, case, words):
    """Issue 21: `edit` with a non-square photo (no --crop) or --condition was refused only after the models loaded."""
    from magicface_core.cli import main

    square, wide = _photo(tmp_path / "square.png", 512, 512), _photo(tmp_path / "wide.png", 600, 400)
    inputs = ["--image", str(wide)] if case == "photo" else ["--image", str(square), "--condition", str(wide)]
    assert main(["edit", *inputs, "--au", "AU12=2", "--out", str(tmp_path / "out.png"), "--device", "cpu"]) == 2
    message = capsys.readouterr().err
    assert all(word in message for word in words), message
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("flags, deltas, words", [
    (["--steps", "0"], "AU12=2\n", ["steps must be from 1"]),
    ([], "AU12=2\nAU12=500\n", ["far outside"]),
])
def test_evaluate_generate_refuses_bad_settings_before_loading(tmp_path, no_models, capsys, flags, deltas, words):
    """Issue 21: `evaluate --generate --steps 0`, or a delta of 500, were refused only after the models loaded."""
    from magicface_core.cli import main

    (tmp_path / "ids").mkdir()
    _photo(tmp_path / "ids" / "a.png", 512, 512)
    (tmp_path / "deltas.txt").write_text(deltas)
    assert main(["evaluate", "--generate", "--identities", str(tmp_path / "ids"), "--deltas",
                 str(tmp_path / "deltas.txt"), "--out", str(tmp_path / "out"), "--device", "cpu", *flags]) == 2
    message = capsys.readouterr().err
    assert all(word in message for word in words), message


def _evaluate(tmp_path, *flags) -> int:
    from magicface_core import cli

    return cli.main(["evaluate", "--out", str(tmp_path / "results"), "--weights", str(tmp_path / "no-weights"),
                     "--device", "cpu", *flags])


def test_evaluate_generate_never_replaces_files_in_out(tmp_path, monkeypatch, capsys):
    """Finding 9: evaluate --generate replaced a triples.csv the user had in --out, and earlier results."""
    from magicface_core import cli
    from PIL import Image

    monkeypatch.setattr("magicface_core.cli.commands._face_toolkit", lambda job: None)  # refused before anything loads
    (tmp_path / "identities").mkdir()
    Image.new("RGB", (512, 512)).save(tmp_path / "identities" / "a.png")
    (tmp_path / "deltas.txt").write_text("AU12=2\n")
    flags = ["--generate", "--identities", str(tmp_path / "identities"), "--deltas", str(tmp_path / "deltas.txt")]
    results = tmp_path / "results"
    results.mkdir()
    for name, text in (("triples.csv", "identity,au_delta,edited\nmine.png,AU1=1,x.png\n"),
                       ("summary.json", '{"mine": 1}'), ("edits/a_000.png", "my own file")):
        (results / name).parent.mkdir(exist_ok=True)
        (results / name).write_text(text)
        assert _evaluate(tmp_path, *flags) == 2
        assert name.split("/")[-1] in capsys.readouterr().err
        assert (results / name).read_text() == text
        (results / name).rename(results / (name + ".kept"))
    assert sorted(p.name for p in results.rglob("*") if p.is_file()) == [
        "a_000.png.kept", "summary.json.kept", "triples.csv.kept"]


def test_evaluate_triples_never_replaces_earlier_results(tmp_path, monkeypatch, capsys):
    """Finding 9: evaluate --triples replaced per_edit.csv / summary files already in --out."""
    from magicface_core import cli

    monkeypatch.setattr("magicface_core.cli.commands._face_toolkit", lambda job: None)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "per_edit.csv").write_text("earlier")
    (tmp_path / "triples.csv").write_text("identity,au_delta,edited\n")
    assert _evaluate(tmp_path, "--triples", str(tmp_path / "triples.csv")) == 2
    assert "per_edit.csv" in capsys.readouterr().err
    assert (tmp_path / "results" / "per_edit.csv").read_text() == "earlier"

"""Bad-input rows for video (issue 21, items 3 and 4 and the late refusals): variable frame rate,
rotation metadata, output containers and folders, and frame numbers checked before any model loads.

Each row reproduces a finding of the sweep and checks the behaviour a user expects instead. The
rows that run an edit use the tiny random models and the real dlib detector of test_video_edit.py.
"""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np
import pytest

from magicface_core import cli
from magicface_core.faces.toolkit import FaceToolkit
from magicface_core.video.io import VideoFile
from tests.support.factories import write_tiny_sd15
from tests.support.video_clips import audio_packets, linear_path, moving_clip, portrait, write_clip

STEPS = 1  # every row here is about the clip around the edit, not the sampling


def _frame_times(path) -> list[Fraction]:
    """Each decoded frame's presentation time in seconds, exactly (pts x time base)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [frame.pts * stream.time_base for frame in container.decode(stream)]


def _stored(path) -> tuple[int, int, int]:
    """(rotation of the display matrix, stored width, stored height) of a clip's video stream."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return int(frame.rotation), frame.width, frame.height


# --- runs on the tiny models -------------------------------------------------------------------

@pytest.fixture(scope="module")
def faces(face_weights):
    return FaceToolkit(face_weights, "cpu", detector="dlib", jaw="2d")


@pytest.fixture(scope="module")
def sd15_dir(tmp_path_factory):
    return write_tiny_sd15(tmp_path_factory.mktemp("sd15"))


@pytest.fixture()
def cli_faces(monkeypatch, faces):
    monkeypatch.setattr("magicface_core.cli.commands._face_toolkit", lambda job: faces)


@pytest.fixture(scope="module")
def face_frames():
    """A face in the first frame only: the rest pass through, so one frame is sampled (seconds, not minutes)."""
    frames = moving_clip(linear_path((40, 20), (4, 2), 3), canvas=(320, 352), size=240)
    return [frames[0]] + [np.full_like(f, 110) for f in frames[1:]]


def _run(command, tiny_checkpoint, sd15_dir, *extra) -> list[str]:
    return [command, "--weights", str(tiny_checkpoint), "--sd15", str(sd15_dir), "--steps", str(STEPS),
            "--device", "cpu", *extra]


def test_variable_frame_rate_keeps_each_frame_time_and_the_audio(tiny_checkpoint, sd15_dir, face_frames, tmp_path,
                                                                 cli_faces, capsys):
    """Item 3: a 30 fps clip with a 1 s gap of dropped frames came out flattened (a frame after the gap
    moved half a second ahead of the copied audio). Each frame now keeps its own timestamp."""
    clip = tmp_path / "vfr.mp4"
    write_clip(clip, face_frames, fps=30, audio_seconds=1.2, pts=[0, 1, 32])  # frames 2..31 dropped
    out = tmp_path / "edited.mp4"
    code = cli.main(_run("video", tiny_checkpoint, sd15_dir, "--video", str(clip), "--au", "AU12=2", "--out", str(out)))
    assert code == 0, capsys.readouterr().err
    times = _frame_times(out)
    assert times == _frame_times(clip) == [0, Fraction(1, 30), Fraction(32, 30)]
    assert audio_packets(out) == audio_packets(clip)


def test_rotated_clip_is_edited_upright_and_keeps_its_rotation(tiny_checkpoint, sd15_dir, face_frames, tmp_path,
                                                               cli_faces, capsys):
    """Item 4: a phone clip (frames stored turned, a rotation-90 display matrix) failed with "no face found
    in any of the clip's frames", and an edit came out with rotation 0, playing turned."""
    clip = tmp_path / "phone.mp4"
    write_clip(clip, [np.ascontiguousarray(np.rot90(f, -1)) for f in face_frames[:2]], fps=25, rotation=90)
    out = tmp_path / "edited.mp4"
    code = cli.main(_run("video", tiny_checkpoint, sd15_dir, "--video", str(clip), "--au", "AU12=2", "--out", str(out)))
    assert code == 0, capsys.readouterr().err
    assert "1 of 2 frames edited" in capsys.readouterr().out
    assert _stored(out) == _stored(clip) == (90, 320, 352)  # stored turned as before, the same matrix
    info = VideoFile(out).info
    assert (info.width, info.height, info.rotation) == (352, 320, 90)  # and it plays upright
    assert _frame_times(out) == _frame_times(clip)


def test_rotated_driving_clip_animates(tiny_checkpoint, sd15_dir, face_frames, tmp_path, cli_faces, capsys):
    """Item 4, animate: a rotated driving clip failed with "no face found in any of the driving clip's frames"."""
    from PIL import Image

    clip = tmp_path / "phone.mp4"
    write_clip(clip, [np.ascontiguousarray(np.rot90(f, 1)) for f in face_frames[:2]], fps=25, rotation=-90)
    Image.fromarray(portrait(size=512)).save(tmp_path / "portrait.png")
    out = tmp_path / "animated.mp4"
    code = cli.main(_run("animate", tiny_checkpoint, sd15_dir, "--image", str(tmp_path / "portrait.png"),
                         "--driving", str(clip), "--out", str(out)))
    assert code == 0, capsys.readouterr().err
    assert _stored(out) == (0, 512, 512)  # the portrait's own frames, upright
    assert _frame_times(out) == _frame_times(clip)


def test_face_index_past_the_faces_says_so(tiny_checkpoint, sd15_dir, face_frames, tmp_path, cli_faces, capsys):
    """--face-index 3 on a one-face clip said "no face found"; it now says the clip has fewer faces."""
    clip = tmp_path / "one-face.mp4"
    write_clip(clip, face_frames[:2])
    out = tmp_path / "out.mp4"
    code = cli.main(_run("video", tiny_checkpoint, sd15_dir, "--video", str(clip), "--face-index", "3",
                         "--au", "AU12=2", "--out", str(out)))
    err = capsys.readouterr().err
    assert code == 2 and "face index 3" in err and "more than 1 face" in err and "no face found" not in err, err
    assert not out.exists()


# --- refused before any model loads ----------------------------------------------------------------

@pytest.fixture()
def no_models(monkeypatch):
    """Every model loader of the video commands fails the test if reached."""
    def loaded(*args, **kwargs):
        raise AssertionError("a model loaded before the job was checked")

    monkeypatch.setattr("magicface_core.cli.commands._video_models", loaded)
    monkeypatch.setattr("magicface_core.cli.commands._face_toolkit", loaded)
    monkeypatch.setattr("magicface_core.model.magicface.MagicFace.from_pretrained", loaded)


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory):
    """Four grey frames with an AAC track: the container is all these checks read."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_clip(path, [np.full((32, 32, 3), 100 + i, np.uint8) for i in range(4)], audio_seconds=4 / 25)
    return path


@pytest.fixture(scope="module")
def portrait_file(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("portrait") / "portrait.png"
    Image.fromarray(np.full((512, 512, 3), 120, np.uint8)).save(path)
    return path


def _refused(argv, words, capsys):
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2 and all(word in err for word in words), err
    return err


@pytest.mark.parametrize("flags, words", [
    (["--reference-frame", "99"], ["--reference-frame 99", "past the clip's end", "4 frames"]),
    (["--reference-frame", "-1"], ["--reference-frame -1", "negative"]),
    (["--keyframes", "0:AU12=0;3:AU12=1e6"], ["1e+06", "keyframe", "+-100"]),
    (["--au", "AU12=50", "--keyframes", "0:AU12=0;3:AU12=60"], ["110", "--au", "+-100"]),
    (["--au-cutoff", "nan"], ["--au-cutoff", "nan"]),
    (["--keyframes", "0:AU12=0;5000:AU12=3"], ["keyframe 5000", "past the clip's end", "0 to 3"]),
    (["--keyframes", "-5:AU12=2"], ["'-5:AU12=2'", "negative frame", "count from 0"]),
])
def test_video_settings_refused_before_models_load(flags, words, small_clip, tmp_path, no_models, capsys):
    """Late refusals: these were refused only after the models loaded (--au-cutoff nan without naming the flag),
    a keyframe past the end was silently accepted, and a negative keyframe gave argparse's "expected one argument"."""
    _refused(["video", "--video", str(small_clip), *flags, "--out", str(tmp_path / "out.mp4")], words, capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("frame, words", [("99", ["--neutral-frame 99", "past the clip's end"]),
                                          ("-2", ["--neutral-frame -2", "negative"])])
def test_animate_neutral_frame_refused_before_models_load(frame, words, small_clip, portrait_file, tmp_path,
                                                          no_models, capsys):
    """animate --neutral-frame 99 was refused only after the models loaded, as "no face in the neutral frame"."""
    _refused(["animate", "--image", str(portrait_file), "--driving", str(small_clip), "--neutral-frame", frame,
              "--out", str(tmp_path / "out.mp4")], words, capsys)


@pytest.mark.parametrize("name", ["out.gif", "out.webm", "out.txt", "folder"])
@pytest.mark.parametrize("command", ["video", "animate"])
def test_video_out_that_cannot_hold_the_clip_is_refused_first(command, name, small_clip, portrait_file, tmp_path,
                                                              no_models, capsys):
    """A --out ending in .gif, .webm or .txt, or naming an existing folder, gave a traceback after the work;
    now refused first, naming the containers that hold it."""
    out = tmp_path / name
    if name == "folder":
        out.mkdir()
    inputs = (["--video", str(small_clip), "--au", "AU12=1"] if command == "video"
              else ["--image", str(portrait_file), "--driving", str(small_clip)])
    _refused([command, *inputs, "--out", str(out), "--overwrite"], [str(out) if name == "folder" else out.suffix,
                                                                  ".mp4", ".mkv"], capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["folder"] if name == "folder" else [])


def _edit_argv(tmp_path, out):
    from PIL import Image

    Image.fromarray(np.full((512, 512, 3), 120, np.uint8)).save(tmp_path / "in.png")
    return ["edit", "--image", str(tmp_path / "in.png"), "--au", "AU12=1", "--out", str(out),
            "--weights", str(tmp_path / "no-weights")]


def _argv(command, out, small_clip, portrait_file, tmp_path):
    if command == "edit":
        return _edit_argv(tmp_path, out)
    if command == "video":
        return ["video", "--video", str(small_clip), "--au", "AU12=1", "--out", str(out)]
    return ["animate", "--image", str(portrait_file), "--driving", str(small_clip), "--out", str(out)]


@pytest.mark.parametrize("command", ["edit", "video", "animate"])
def test_output_under_a_file_is_refused_first(command, small_clip, portrait_file, tmp_path, no_models, capsys):
    """Output folder's parent a file: a traceback after the whole edit; now refused before work."""
    (tmp_path / "notes").write_text("mine")
    out = tmp_path / "notes" / "sub" / ("out.png" if command == "edit" else "out.mp4")
    _refused(_argv(command, out, small_clip, portrait_file, tmp_path), ["is a file", "notes"], capsys)
    assert (tmp_path / "notes").read_text() == "mine"


@pytest.mark.parametrize("command", ["edit", "video", "animate"])
def test_output_in_a_read_only_folder_is_refused_first(command, small_clip, portrait_file, tmp_path, no_models,
                                                       capsys):
    """Output folder read-only: a traceback after the whole edit; now refused before work."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("this user writes in read-only folders (root)")
        out = locked / ("out.png" if command == "edit" else "out.mp4")
        _refused(_argv(command, out, small_clip, portrait_file, tmp_path), ["read-only", "locked"], capsys)
    finally:
        locked.chmod(0o755)

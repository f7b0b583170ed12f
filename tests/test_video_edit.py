"""The two video edits end to end on tiny random weights, with the real dlib detector: chunking,
frames without a face, progress and cancel, the CLI commands, and bad inputs."""

import numpy as np
import pytest
import torch

from magicface_core.faces.toolkit import FaceToolkit

from magicface_core.au import AUVector
from magicface_core.cli import main
from magicface_core.edit import EditSettings
from magicface_core.errors import NoFaceError, VideoInputError
from magicface_core.model.sd15 import load_sd15
from magicface_core.video.edit import VideoSettings, animate_portrait, edit_clip
from magicface_core.video.io import VideoFile
from magicface_core.video.keyframes import ExpressionChange
from tests.support.factories import write_tiny_sd15
from tests.support.video_clips import audio_packets, linear_path, moving_clip, portrait, write_clip

STEPS = 2


@pytest.fixture(scope="module")
def faces(face_weights):
    return FaceToolkit(face_weights, "cpu", detector="dlib", jaw="2d")


@pytest.fixture(scope="module")
def sd15_dir(tmp_path_factory):
    return write_tiny_sd15(tmp_path_factory.mktemp("sd15"))


@pytest.fixture(scope="module")
def sd15(sd15_dir):
    return load_sd15(str(sd15_dir), "cpu", torch.float32)


@pytest.fixture(scope="module")
def clip():
    """Four frames: a moving face, and at frame 2 no face at all."""
    frames = moving_clip(linear_path((40, 20), (6, 2), 4), canvas=(320, 352), size=240)
    frames[2] = np.full_like(frames[2], 110)
    return frames


def _edit(clip, tiny_model, sd15, faces, chunk, **kwargs):
    report, frames = edit_clip(clip, 25, ExpressionChange(AUVector.parse("AU12=3"), "0:AU6=0;3:AU6=2"), tiny_model,
                               sd15, faces, VideoSettings(frames_per_chunk=chunk), EditSettings(steps=STEPS), **kwargs)
    return report, list(frames)


def test_chunks_give_the_frames_of_one_batch_and_faceless_frames_pass_through(clip, tiny_model, sd15, faces):
    progress = []
    report, chunked = _edit(clip, tiny_model, sd15, faces, chunk=1, on_progress=lambda d, n: progress.append((d, n)))
    _, whole = _edit(clip, tiny_model, sd15, faces, chunk=4)
    assert report.frames == 4 and report.edited == 3 and report.without_face == [2] and report.reference_frame == 0
    assert "1 without a face passed through unchanged (2)" in str(report)
    for a, b in zip(chunked, whole):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert np.array_equal(chunked[2], clip[2])  # no face: unchanged
    for t in (0, 1, 3):
        assert chunked[t].shape == clip[t].shape and not np.array_equal(chunked[t], clip[t])
    # Progress counts frames x steps, to the end.
    assert progress[-1] == (3 * STEPS, 3 * STEPS) and [d for d, _ in progress] == sorted(d for d, _ in progress)


def test_cancel_stops_within_a_step(clip, tiny_model, sd15, faces):
    calls = []

    def cancel(done, total):
        calls.append(done)
        raise KeyboardInterrupt

    report, frames = edit_clip(clip, 25, ExpressionChange(), tiny_model, sd15, faces, VideoSettings(frames_per_chunk=2),
                               EditSettings(steps=50), on_progress=cancel)
    with pytest.raises(KeyboardInterrupt):
        next(frames)
    assert calls == [2]  # after the first step of the first chunk of 2 frames


def test_animate_follows_every_driving_frame(clip, tiny_model, sd15, faces):
    driving = [clip[0], clip[1], clip[3]]
    report, frames = animate_portrait(portrait(size=512), driving, 25, tiny_model, sd15, faces,
                                      VideoSettings(frames_per_chunk=2), EditSettings(steps=STEPS))
    frames = list(frames)
    assert report.frames == 3 and len(frames) == 3 and all(f.shape == (512, 512, 3) for f in frames)


@pytest.mark.parametrize("case, error, message", [
    ("no face", NoFaceError, "no face found in any of the clip's 3 frames"),
    ("chunk 0", VideoInputError, "frames_per_chunk must be 1 or more, got 0"),
    ("reference", NoFaceError, "no face in the reference frame 2; frames with a face: 0-1, 3"),
])
def test_bad_clip_edits_fail_before_any_frame(case, error, message, clip, tiny_model, sd15, faces):
    frames = [np.full_like(clip[0], 110)] * 3 if case == "no face" else clip
    settings = VideoSettings(frames_per_chunk=0 if case == "chunk 0" else 2)
    with pytest.raises(error, match=message):
        edit_clip(frames, 25, ExpressionChange(), tiny_model, sd15, faces, settings, EditSettings(steps=STEPS),
                  reference_frame=2 if case == "reference" else None)


def test_a_driving_clip_needs_two_frames(clip, tiny_model, sd15, faces):
    with pytest.raises(VideoInputError, match="the driving clip has 1 frame; animating needs at least 2"):
        animate_portrait(portrait(size=512), clip[:1], 25, tiny_model, sd15, faces, VideoSettings(),
                         EditSettings(steps=STEPS))


# --- the CLI ---------------------------------------------------------------------------------

@pytest.fixture()
def cli_faces(monkeypatch, faces):
    monkeypatch.setattr("magicface_core.cli.commands._face_toolkit", lambda job: faces)


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory, clip):
    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    write_clip(path, clip, fps=12, audio_seconds=len(clip) / 12)
    return path


def _args(command, tiny_checkpoint, sd15_dir, *extra):
    return [command, "--weights", str(tiny_checkpoint), "--sd15", str(sd15_dir), "--steps", str(STEPS),
            "--device", "cpu", *extra]


def test_cli_video_edits_the_clip_and_keeps_its_audio(tiny_checkpoint, sd15_dir, clip_file, tmp_path, cli_faces, capsys):
    out = tmp_path / "edited.mp4"
    code = main(_args("video", tiny_checkpoint, sd15_dir, "--video", str(clip_file), "--au", "AU12=3",
                      "--keyframes", "0:AU6=0;3:AU6=2", "--frames-per-chunk", "2", "--out", str(out)))
    assert code == 0, capsys.readouterr().err
    edited, source = VideoFile(out), VideoFile(clip_file)
    assert sum(1 for _ in edited) == 4 and edited.info.fps == source.info.fps == 12
    assert audio_packets(out) == audio_packets(clip_file)
    assert "3 of 4 frames edited" in capsys.readouterr().out


def test_cli_animate_writes_one_frame_per_driving_frame(tiny_checkpoint, sd15_dir, clip_file, tmp_path, cli_faces,
                                                        capsys):
    from PIL import Image

    Image.fromarray(portrait(size=512)).save(tmp_path / "portrait.png")
    out = tmp_path / "animated.mp4"
    code = main(_args("animate", tiny_checkpoint, sd15_dir, "--image", str(tmp_path / "portrait.png"),
                      "--driving", str(clip_file), "--absolute", "--out", str(out)))
    assert code == 0, capsys.readouterr().err
    video = VideoFile(out)
    assert sum(1 for _ in video) == 4 and (video.info.width, video.info.height) == (512, 512)


@pytest.mark.parametrize("extra, message", [
    (["--keyframes", "0:AU12=0;x:AU12=3"], "cannot read keyframe 'x:AU12=3'"),
    (["--frames-per-chunk", "0"], "frames_per_chunk must be 1 or more, got 0"),
    (["--detect-every", "0"], "detect_every must be 1 or more"),
    (["--au", "AU13=1"], "unknown action unit"),
])
def test_cli_checks_settings_before_loading_models(extra, message, clip_file, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    code = main(["video", "--video", str(clip_file), "--weights", str(tmp_path / "no-weights"), *extra,
                 "--out", str(out)])
    assert code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_to_overwrite(clip_file, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"mine")
    code = main(["video", "--video", str(clip_file), "--au", "AU12=2", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "already exists" in err and "--overwrite" in err and out.read_bytes() == b"mine"


@pytest.mark.parametrize("case, message", [
    ("unreadable", "cannot read the video"),
    ("no face", "no face found in any of the clip's 3 frames"),
    ("short driving", "the driving clip has 1 frame"),
])
def test_cli_bad_videos_get_a_message_and_nothing_is_written(case, message, tiny_checkpoint, sd15_dir, clip, tmp_path,
                                                             cli_faces, capsys):
    video = tmp_path / "in.mp4"
    if case == "unreadable":
        video.write_text("not a video")
    else:
        write_clip(video, [np.full_like(clip[0], 110)] * 3 if case == "no face" else clip[:1])
    out = tmp_path / "out.mp4"
    if case == "short driving":
        from PIL import Image

        Image.fromarray(portrait(size=512)).save(tmp_path / "portrait.png")
        args = _args("animate", tiny_checkpoint, sd15_dir, "--image", str(tmp_path / "portrait.png"),
                     "--driving", str(video), "--out", str(out))
    else:
        args = _args("video", tiny_checkpoint, sd15_dir, "--video", str(video), "--au", "AU12=2", "--out", str(out))
    assert main(args) == 2 and message in capsys.readouterr().err
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())

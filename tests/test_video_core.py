"""Video building blocks: keyframes, smoothing, face tracking with the real dlib detector, video io."""

import numpy as np
import pytest

from magicface_core.au import AUVector
from magicface_core.errors import AUInputError, VideoInputError
from magicface_core.video.io import VideoFile, write_video
from magicface_core.video.keyframes import ExpressionChange, interpolate_keyframes
from magicface_core.video.smoothing import fill_gaps, smooth_aus, smooth_series
from magicface_core.video.tracking import landmark_framing, track_faces, TrackSettings
from magicface_core.faces.toolkit import FaceToolkit
from tests.support.video_clips import audio_packets, linear_path, moving_clip, place, portrait, write_clip


# --- keyframes -----------------------------------------------------------------------------

def test_linear_keyframes_interpolate_between_and_hold_outside():
    aus = interpolate_keyframes("0:AU12=0; 30:AU12=3; 60:AU12=0", 70)
    au12 = aus.get("AU12").numpy()
    assert au12[[0, 15, 30, 45, 60, 69]] == pytest.approx([0, 1.5, 3, 1.5, 0, 0])
    assert au12[10] == pytest.approx(1.0)
    assert aus.get("AU6").abs().max() == 0  # never named: 0


def test_smooth_keyframes_follow_smoothstep():
    au12 = interpolate_keyframes("0:AU12=0;30:AU12=3", 31, "smooth").get("AU12").numpy()
    s = 10 / 30
    assert au12[10] == pytest.approx(3 * (3 * s**2 - 2 * s**3))
    assert au12[15] == pytest.approx(1.5)
    assert np.all(np.diff(au12) >= 0) and au12[1] - au12[0] < au12[15] - au12[14]  # eases in


def test_each_au_follows_only_the_keyframes_that_name_it():
    aus = interpolate_keyframes("10: AU6=2; 20: AU12=4, AU6=0", 25)
    assert aus.get("AU6").numpy()[[0, 10, 15, 20, 24]] == pytest.approx([2, 2, 1, 0, 0])
    assert aus.get("AU12").numpy()[[0, 19, 24]] == pytest.approx([4, 4, 4])  # held before its only key


def test_a_constant_change_adds_to_the_keyframes():
    change = ExpressionChange(AUVector.parse("AU12=1"), "0:AU12=0;4:AU12=2")
    assert change.per_frame(5).get("AU12").numpy() == pytest.approx([1, 1.5, 2, 2.5, 3])


@pytest.mark.parametrize("text, message", [
    ("0:AU12=0;thirty:AU12=3", "cannot read keyframe 'thirty:AU12=3'"),
    ("0:AU13=1", "unknown action unit"),
    ("0:AU12=1;0:AU12=2", "frame 0 has two keyframes"),
    ("AU12=3", "cannot read keyframe 'AU12=3'"),
    (" ; ", "no keyframes"),
])
def test_bad_keyframes_say_what_is_wrong(text, message):
    with pytest.raises(AUInputError, match=message):
        ExpressionChange(keyframes=text) if text.strip(" ;") else interpolate_keyframes(text, 3)


# --- smoothing -----------------------------------------------------------------------------

def test_zero_lag_smoothing_follows_a_ramp_and_removes_jitter():
    rng = np.random.default_rng(0)
    t = np.arange(100, dtype=np.float64)
    ramp = 3.0 * t  # 75 px/s at 25 fps
    noisy = ramp + rng.normal(0, 1.0, t.shape)
    smooth = smooth_series(noisy[:, None], 25.0, 1.0, 0.05)[:, 0]
    error = smooth[10:-10] - ramp[10:-10]
    assert abs(error.mean()) < 0.2  # no lag behind the motion (one causal pass lags by pixels)
    assert np.sqrt(np.mean(error ** 2)) < 0.8 * np.sqrt(np.mean((noisy - ramp)[10:-10] ** 2))
    still = smooth_series(rng.normal(0, 1.0, (100, 1)), 25.0, 1.0, 0.05)
    assert still[10:-10].std() < 0.3


@pytest.mark.parametrize("frames", [2, 5, 50])
def test_smoothing_follows_a_steady_motion_up_to_the_first_and_last_frames(frames):
    """The ends are padded by reflection, so a constant speed has no lag there either (one second of
    a 135 px/s motion would otherwise leave the first and last crops pixels behind)."""
    path = np.stack([5.0 * np.arange(frames), 2.0 * np.arange(frames)], axis=1)
    assert np.abs(smooth_series(path, 25.0, 1.0, 0.05) - path).max() < 0.05
    assert np.array_equal(smooth_series(path[:1], 25.0, 1.0, 0.05), path[:1])


def test_au_smoothing_keeps_a_constant_and_fills_gaps():
    aus = AUVector(np.full((10, 12), 2.0, np.float32))
    assert smooth_aus(aus, 25).allclose(aus, atol=1e-5)
    rows = np.full((4, 12), np.nan, np.float32)
    rows[1], rows[3] = 1.0, 3.0
    assert fill_gaps(rows)[:, 0].tolist() == [1, 1, 1, 3]


# --- tracking with dlib ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def dlib_faces(tmp_path_factory):
    """The library's dlib backend: real detection and landmarks, no weights to download."""
    return FaceToolkit(tmp_path_factory.mktemp("faces"), "cpu", detector="dlib")


@pytest.fixture(scope="module")
def framing_offset(dlib_faces):
    """Where the crop centre lies in the unmoved 256 px portrait: the true path is this plus the motion."""
    face = portrait(size=256)
    box = dlib_faces.detect(face)[0]
    return np.array(landmark_framing(dlib_faces.landmarks_in_box(face, box))[:2])


def _centres(track):
    return np.array([[t.center_x, t.center_y] for t in track.transforms])


def test_a_still_head_gives_a_still_crop(dlib_faces):
    frames = moving_clip(linear_path((120, 90), (0, 0), 25), noise=3.0)
    centres = _centres(track_faces(frames, dlib_faces, fps=25))
    jitter = np.sqrt(((centres - centres.mean(axis=0)) ** 2).sum(axis=1).mean())
    assert jitter < 0.5


@pytest.mark.parametrize("detect_every", [1, 4])
def test_a_moving_head_is_followed(dlib_faces, framing_offset, detect_every):
    path = linear_path((60, 60), (5, 2), 30)  # 135 px/s at 25 fps
    track = track_faces(moving_clip(path), dlib_faces, fps=25, settings=TrackSettings(detect_every=detect_every))
    error = _centres(track) - (np.array(path) + framing_offset)
    assert np.sqrt((error ** 2).sum(axis=1).mean()) < 3.0


def test_a_zooming_head_is_followed(dlib_faces, framing_offset):
    sizes = [230 + 3 * i for i in range(20)]
    background = np.full((480, 640, 3), 110, np.uint8)
    frames = [place(background, portrait(size=s), 150, 80) for s in sizes]
    track = track_faces(frames, dlib_faces, fps=25)
    truth = np.array([[150, 80] + framing_offset * s / 256 for s in sizes])
    assert np.sqrt(((_centres(track) - truth) ** 2).sum(axis=1).mean()) < 3.0
    widths = np.array([t.box_width for t in track.transforms])
    assert np.all(np.diff(widths) > 0)  # the crop grows with the face


def test_frames_without_a_face_are_marked(dlib_faces):
    frames = moving_clip(linear_path((100, 80), (2, 0), 8))
    blank = np.full_like(frames[0], 110)
    frames[3] = frames[4] = blank
    track = track_faces(frames, dlib_faces, fps=25)
    assert track.missing == [3, 4] and track.found == [0, 1, 2, 5, 6, 7]


def test_the_chosen_face_is_kept_when_the_other_grows_larger(dlib_faces):
    background = np.full((480, 800, 3), 110, np.uint8)
    right = portrait("00512.png", 230)
    frames = []
    for i in range(12):  # the left face starts smaller and ends larger than the right one
        left = portrait("00381.png", 200 + 8 * i)
        frames.append(place(place(background, left, 20, 60), right, 540, 100))
    assert [b.center[0] < 400 for b in dlib_faces.detect(frames[-1])] == [True, False]  # left is the largest now
    track = track_faces(frames, dlib_faces, fps=25, settings=TrackSettings(face_index=1))  # 1: the smaller, at first
    assert not track.missing and all(t.center_x > 540 for t in track.transforms)


# --- io --------------------------------------------------------------------------------------

def test_round_trip_keeps_audio_frame_count_and_fps(tmp_path):
    frames = moving_clip(linear_path((0, 0), (3, 1), 10), canvas=(240, 320), size=160)
    write_clip(tmp_path / "in.mp4", frames, fps=24, audio_seconds=10 / 24)
    clip = VideoFile(tmp_path / "in.mp4")
    assert clip.info.has_audio and clip.info.fps == 24
    count = write_video(tmp_path / "out.mp4", iter(clip), clip.info.fps, audio_from=tmp_path / "in.mp4")
    back = VideoFile(tmp_path / "out.mp4")
    assert count == 10 and sum(1 for _ in back) == 10 and back.info.fps == 24
    assert audio_packets(tmp_path / "out.mp4") == audio_packets(tmp_path / "in.mp4")
    first = next(iter(back)).astype(int)
    assert np.abs(first - frames[0]).mean() < 3  # H.264 at crf 18


def test_unreadable_and_empty_videos_get_clear_messages(tmp_path, dlib_faces):
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(VideoInputError, match="cannot read the video"):
        VideoFile(tmp_path / "text.mp4")
    with pytest.raises(VideoInputError, match="no video at"):
        VideoFile(tmp_path / "missing.mp4")
    with pytest.raises(VideoInputError, match="no frames to write"):
        write_video(tmp_path / "out.mp4", [], 25)
    assert not any(p.name.startswith((".out", "out")) for p in tmp_path.iterdir())
    with pytest.raises(VideoInputError, match="the clip has no frames"):
        track_faces([], dlib_faces, fps=25)


def test_a_failed_write_leaves_nothing(tmp_path):
    def frames():
        yield np.zeros((64, 64, 3), np.uint8)
        raise RuntimeError("the edit failed")

    with pytest.raises(RuntimeError):
        write_video(tmp_path / "out.mp4", frames(), 25)
    assert list(tmp_path.iterdir()) == []

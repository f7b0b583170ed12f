"""Video edits: speed and memory against clip length, crop jitter with the real dlib detector, flicker.

    python benchmarks/bench_video.py                          # tiny random model, CPU: 8, 32, 128 frames
    python benchmarks/bench_video.py --frames 8 32 --steps 2 --chunk 8
    python benchmarks/bench_video.py --jitter-only
    python benchmarks/bench_video.py --clip in.mp4 --weights mengtingwei/magicface --sd15 SD15_DIR \\
        --face-weights DIR --au AU12=3 --steps 25        # real weights: the flicker figure means something

1. **Speed and memory.** The whole clip edit, file to file (read, track, AUs, chunked sampling,
   decode, paste back, write), each clip length in a fresh process: frames per second, and the
   peak resident memory above its peak after a warm-up edit of one chunk (on a GPU, the CUDA
   allocator's peak). Frames stream from and to disk, so memory must not grow with the length.
2. **Crop jitter.** A real portrait on a canvas, held still (with sensor noise) or moving along a
   known path; dlib's detector and 68-point predictor; the rms distance of the smoothed crop centre
   from the true path (for the still head: from its own mean, the jitter proper), next to the same
   figure for the raw, unsmoothed landmark framing.
3. **Flicker.** The mean absolute frame-to-frame change of the edited clip inside the face boxes,
   divided by the input clip's: 1.0 = the edit adds no flicker. Meaningless on random weights;
   reported for every run so that runs with the real weights have it.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# --- 1. speed and memory, one clip length per process ----------------------------------------

def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_edit(args) -> dict:
    """Child process: one clip edit, file to file; prints a JSON line."""
    import torch

    from magicface_core import MagicFace
    from magicface_core.au import AUVector
    from magicface_core.edit import EditSettings
    from magicface_core.model.sd15 import load_sd15
    from magicface_core.video.edit import VideoSettings, edit_clip
    from magicface_core.video.io import VideoFile, write_video
    from magicface_core.video.keyframes import ExpressionChange

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = MagicFace.from_pretrained(args.weights, device=device, dtype=torch.float32)
    sd15 = load_sd15(args.sd15, device, torch.float32)
    faces = _faces(args)
    clip = VideoFile(args.clip)
    # Warm up on one full chunk of the first frame: every network has run and the allocator has
    # held one chunk's work, so the growth above this baseline is what a longer clip adds.
    report, frames = edit_clip([next(iter(clip))] * args.chunk, float(clip.info.fps), ExpressionChange(), model,
                               sd15, faces, VideoSettings(frames_per_chunk=args.chunk), EditSettings(steps=1))
    list(frames)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    peak_now = (lambda: torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else _peak_rss_mb
    base = peak_now()
    start = time.perf_counter()
    report, frames = edit_clip(clip, float(clip.info.fps), ExpressionChange(AUVector.parse(args.au)), model, sd15,
                               faces, VideoSettings(frames_per_chunk=args.chunk),
                               EditSettings(steps=args.steps, seed=0))
    halfway = {}

    def frames_noting_the_peak_halfway():
        for t, frame in enumerate(frames):
            if t == report.frames // 2:
                halfway["peak"] = peak_now()
            yield frame

    count = write_video(args.out, frames_noting_the_peak_halfway(), clip.info.fps, audio_from=args.clip)
    seconds = time.perf_counter() - start
    peak = peak_now() - base
    # A per-frame leak would raise the peak all through; a flat run reaches it within the first chunks.
    second_half = peak_now() - halfway.get("peak", base)
    result = {"frames": count, "seconds": seconds, "fps": count / seconds, "peak_growth_mb": peak,
              "peak_growth_second_half_mb": second_half, "peak_mb": peak_now(),
              "flicker": flicker(VideoFile(args.clip), VideoFile(args.out), faces, float(clip.info.fps))}
    print(json.dumps(result))
    return result


def _faces(args):
    from magicface_core.faces.toolkit import FaceToolkit

    if args.face_weights is None:  # real dlib detection and landmarks; random parser and AU networks
        from tests.support.factories import write_face_weights
        from tests.support.paths import scratch_dir

        return FaceToolkit(write_face_weights(scratch_dir() / "faces"), "cpu", detector="dlib", jaw="2d")
    return FaceToolkit(args.face_weights, args.device)


def flicker(source, edited, faces, fps: float) -> float:
    """Mean |frame t+1 - frame t| inside the face boxes, edited clip over input clip."""
    from magicface_core.video.tracking import track_faces

    track = track_faces(source, faces, fps)
    changes = {"source": [], "edited": []}
    for name, clip in (("source", source), ("edited", edited)):
        previous = None
        for t, frame in enumerate(clip):
            transform = track.transforms[t]
            if previous is not None and transform is not None:
                half = transform.box_width / 2
                x0, y0 = max(0, int(transform.center_x - half)), max(0, int(transform.center_y - half))
                x1, y1 = int(transform.center_x + half), int(transform.center_y + half)
                region = np.s_[y0:y1, x0:x1]
                changes[name].append(np.abs(frame[region].astype(np.float32) - previous[region]).mean())
            previous = frame.astype(np.float32)
    return float(np.mean(changes["edited"]) / max(np.mean(changes["source"]), 1e-6))


def make_clip(path: Path, frames: int, fps: int = 25) -> None:
    from tests.support.video_clips import moving_clip, write_clip

    # The face drifts to and fro (a sine, 3 s period) so that tracking and pasting do real work.
    path_xy = [(int(60 + 40 * np.sin(2 * np.pi * t / (3 * fps))), 40) for t in range(frames)]
    write_clip(path, moving_clip(path_xy, canvas=(320, 352), size=240), fps=fps, audio_seconds=frames / fps)


def speed_and_memory(args) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.weights is None:
            from tests.support.factories import TINY, write_published_checkpoint, write_tiny_sd15

            args.weights = str(write_published_checkpoint(tmp / "magicface", overrides=TINY))
            # An 8-channel VAE: the per-frame cost is then mostly the face networks' (real-sized
            # BiSeNet and LibreFace), and a 128-frame run fits a CPU.
            args.sd15 = str(write_tiny_sd15(tmp / "sd15", vae_channels=8))
        for count in args.frames:
            clip = Path(args.clip) if args.clip else tmp / f"clip{count}.mp4"
            if not args.clip:
                make_clip(clip, count)
            command = [sys.executable, __file__, "--child", "--clip", str(clip), "--out", str(tmp / f"out{count}.mp4"),
                       "--weights", args.weights, "--sd15", args.sd15 or "", "--steps", str(args.steps),
                       "--chunk", str(args.chunk), "--device", args.device, "--au", args.au,
                       "--threads", str(args.threads)]
            if args.face_weights:
                command += ["--face-weights", str(args.face_weights)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            row = json.loads(output.strip().splitlines()[-1])
            rows.append(row)
            print(f"{row['frames']:>6} frames  {row['fps']:.3f} frames/s  peak growth {row['peak_growth_mb']:.0f} MB  "
                  f"(in the second half {row['peak_growth_second_half_mb']:.0f} MB; peak {row['peak_mb']:.0f} MB)  "
                  f"flicker {row['flicker']:.2f}", flush=True)
            if args.clip:
                break
    return rows


# --- 2. crop jitter --------------------------------------------------------------------------

def crop_jitter(frames_count: int = 50) -> dict:
    from magicface_core.video.tracking import TrackSettings, landmark_framing, track_faces
    from magicface_core.faces.toolkit import FaceToolkit
    from tests.support.paths import scratch_dir
    from tests.support.video_clips import linear_path, moving_clip, portrait

    faces = FaceToolkit(scratch_dir(), "cpu", detector="dlib")
    face = portrait(size=256)
    offset = np.array(landmark_framing(faces.landmarks_in_box(face, faces.detect(face)[0]))[:2])
    results = {}
    cases = {"still": linear_path((120, 90), (0, 0), frames_count),
             "moving 135 px/s": linear_path((40, 40), (5, 2), frames_count)}
    for name, path in cases.items():
        frames = moving_clip(path, noise=3.0)
        for detect_every in (1, 5):
            start = time.perf_counter()
            track = track_faces(frames, faces, 25.0, TrackSettings(detect_every=detect_every))
            seconds = time.perf_counter() - start
            smooth = np.array([[t.center_x, t.center_y] for t in track.transforms])
            raw = np.array([landmark_framing(points)[:2] for points in track.landmarks])
            truth = np.array(path) + offset
            if name == "still":  # jitter about its own position
                err_smooth, err_raw = smooth - smooth.mean(axis=0), raw - raw.mean(axis=0)
            else:
                err_smooth, err_raw = smooth - truth, raw - truth
            rms = lambda e: float(np.sqrt((e ** 2).sum(axis=1).mean()))  # noqa: E731
            key = f"{name}, detect every {detect_every}"
            results[key] = {"smoothed_rms_px": rms(err_smooth), "raw_rms_px": rms(err_raw),
                            "tracking_fps": frames_count / seconds}
            print(f"{key:<36} smoothed {rms(err_smooth):.2f} px   raw {rms(err_raw):.2f} px   "
                  f"tracking {frames_count / seconds:.1f} frames/s", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=8, help="frames_per_chunk")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--au", default="AU12=3")
    parser.add_argument("--weights", default=None, help="MagicFace weights (default: tiny random)")
    parser.add_argument("--sd15", default=None)
    parser.add_argument("--face-weights", default=None, help="real face weights (default: dlib + random parser/AUs)")
    parser.add_argument("--clip", default=None, help="a clip to edit instead of the synthetic ones")
    parser.add_argument("--jitter-only", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_edit(args)
        return
    print(f"{platform.machine()}, {platform.python_version()}, device {args.device}, steps {args.steps}, "
          f"frames_per_chunk {args.chunk}")
    crop_jitter()
    if not args.jitter_only:
        speed_and_memory(args)


if __name__ == "__main__":
    main()

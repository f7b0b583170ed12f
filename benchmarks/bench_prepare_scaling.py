"""Frames per second of ``prepare`` against processes (1, 2; torchrun) and batch size (1, 8).

Random face weights in the published formats (tests/support/factories.py), on this machine's CPU
(or GPU with --device cuda). Every network runs (S3FD, 2D-FAN twice, BiSeNet, D3DFR, LibreFace);
only S3FD's boxes are replaced by a fixed box, since a random detector finds noise, which would
change what the rest of the pipeline is given.

    python benchmarks/bench_prepare_scaling.py [--clips 2] [--frames 8] [--size 128] [--device cpu]
        [--threads-per-process T]

By default the machine's threads are shared between the processes, as one would run it; with
``--threads-per-process 1`` each process gets one core of its own, which shows how the split scales
with processes on a CPU that has a core per process (as on a GPU per process).

Clips are frame folders cut from the official portraits. Frames per second counts the frames of
all clips over the wall time of the whole run (start-up and the index merge included, as a user
sees it); each configuration prepares into a fresh folder.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def worker(args) -> None:
    """One process of a run (started alone or by torchrun): prepare with the fixed face box."""
    from magicface_core.faces.landmarks import FaceAlignmentBackend, FaceBox
    from magicface_core.faces.toolkit import FaceToolkit
    from magicface_core.training.prepare import Settings, prepare

    real = FaceAlignmentBackend.detect_batch

    def detect_batch(self, images):
        real(self, images)  # S3FD runs (its cost counts); its random boxes are dropped
        return [[FaceBox(i.shape[1] * 0.27, i.shape[0] * 0.27, i.shape[1] * 0.73, i.shape[0] * 0.8)] for i in images]

    FaceAlignmentBackend.detect_batch = detect_batch
    settings = Settings(frame_step=1, max_frames=1000, min_gap=1, pairs_per_clip=10)
    prepare(Path(args.videos), Path(args.out), FaceToolkit(args.weights, args.device), settings,
            batch_size=args.batch_size)


def make_clips(root: Path, clips: int, frames: int, size: int) -> Path:
    from PIL import Image

    from tests.support.paths import OFFICIAL

    sources = [np.asarray(Image.open(OFFICIAL / n).convert("RGB").resize((size, size)))
               for n in ("00025.png", "00381.png", "00512.png")]
    for c in range(clips):
        (root / f"clip{c}").mkdir(parents=True)
        for f in range(frames):
            Image.fromarray(np.roll(sources[(c + f) % 3], f, axis=1)).save(root / f"clip{c}" / f"{f:04d}.png")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8, help="frames per clip")
    parser.add_argument("--size", type=int, default=128, help="frame side in pixels")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--threads-per-process", type=int, default=0, help="0: the machine's threads shared")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--videos", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    from tests.support.factories import write_face_weights

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        weights = write_face_weights(folder / "weights")
        videos = make_clips(folder / "videos", args.clips, args.frames, args.size)
        total = args.clips * args.frames
        threads = os.cpu_count()
        print(f"{args.clips} clips x {args.frames} frames ({args.size}x{args.size}), device {args.device}, "
              f"{threads} CPU threads, {args.threads_per_process or 'shared'} per process")
        results = []
        for processes in map(int, args.processes.split(",")):
            for batch in map(int, args.batch_sizes.split(",")):
                out = folder / f"out-{processes}-{batch}"
                launcher = [] if processes == 1 else ["-m", "torch.distributed.run", "--standalone",
                                                      "--nproc_per_node", str(processes)]
                # the machine's threads shared between the processes, as one would run it
                per_process = args.threads_per_process or max(1, threads // processes)
                env = {**os.environ, "OMP_NUM_THREADS": str(per_process)}
                command = [sys.executable, *launcher, __file__, "--worker", "--videos", str(videos), "--out", str(out),
                           "--weights", str(weights), "--device", args.device, "--batch-size", str(batch)]
                start = time.perf_counter()
                subprocess.run(command, check=True, env=env, cwd=ROOT)
                seconds = time.perf_counter() - start
                frames = len(json.loads((out / "index.json").read_text())["frames"])
                results.append((processes, batch, seconds, total / seconds))
                print(f"processes {processes}, batch {batch}: {seconds:.1f} s, {total / seconds:.3f} frames/s "
                      f"({frames} frames kept)", flush=True)
        base = results[0][3]
        print("\n| processes | batch size | seconds | frames/s | vs 1 process, batch 1 |\n|---|---|---|---|---|")
        for processes, batch, seconds, fps in results:
            print(f"| {processes} | {batch} | {seconds:.1f} | {fps:.3f} | {fps / base:.2f}x |")


if __name__ == "__main__":
    main()

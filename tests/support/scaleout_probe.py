"""Run alone, as a shard, or under torchrun by tests/test_scaleout.py: ``prepare`` and
``evaluate --generate``'s library calls with cheap, deterministic stand-ins for the networks.

What is under test is the split, the per-process writes, the merge and the resume; the face
networks' batching is tested on the networks themselves (test_scaleout.py). ``PROBE_DELAY``
(seconds) slows every frame, so a test can kill a run midway.

    python tests/support/scaleout_probe.py prepare VIDEOS OUT [--shard I/N] [--batch-size B] [--merge]
    python tests/support/scaleout_probe.py evaluate IDENTITIES DELTAS OUT [--shard I/N]
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from magicface_core.au import AUVector  # noqa: E402
from magicface_core.errors import NoFaceError  # noqa: E402
from magicface_core.scaleout import Shard  # noqa: E402

DELAY = float(os.environ.get("PROBE_DELAY", "0"))


class StubToolkit:
    """The toolkit's per-frame and batch calls as pixel arithmetic; a blank frame has no face."""

    def crop(self, image):
        time.sleep(DELAY)
        if image.std() < 1:
            raise NoFaceError("no face found (blank frame)")
        return np.ascontiguousarray(np.roll(image, 3, axis=1)[::2, ::2]), None

    def landmarks(self, portrait):
        return np.full((68, 2), portrait.mean(), np.float32)

    def condition(self, portrait, landmarks):
        return (255 - portrait).astype(np.uint8), None

    def estimate_aus(self, portraits, landmarks):
        return AUVector(np.stack([np.linspace(0, 1, 12) * p.mean() / 51.0 for p in portraits]).astype(np.float32))


class StubTools:
    """evaluate's instruments, simple and deterministic."""

    @staticmethod
    def estimate_aus(images):
        return AUVector(np.stack([np.linspace(0, 5, 12) * (i.mean() / 255.0) for i in images]).astype(np.float32))

    @staticmethod
    def parse(image):
        return (image.mean(axis=2) > 100).astype(np.uint8)

    @staticmethod
    def landmarks(image):
        grid = np.stack(np.meshgrid(np.linspace(150, 360, 17), np.linspace(150, 360, 4)), -1).reshape(-1, 2)[:68]
        return (grid + image.mean() / 50.0).astype(np.float32)

    @staticmethod
    def embed(image):
        return image.reshape(-1, 3).mean(axis=0) / 255.0


def stub_edit(portrait, deltas):
    """One image per delta: the portrait brightened by the delta's sum."""
    return [np.clip(portrait.astype(np.int16) + int(row.sum() * 4), 0, 255).astype(np.uint8)
            for row in deltas.values.numpy()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("job", choices=["prepare", "evaluate"])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--shard", default="0/1")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--merge", action="store_true")
    args = parser.parse_args()
    shard = Shard.parse(args.shard)
    if args.job == "prepare":
        from magicface_core.training.prepare import Settings, merge, prepare

        videos, out = args.paths
        settings = Settings(frame_step=1, max_frames=10, min_gap=1, pairs_per_clip=4, seed=0)
        if args.merge:
            merge(videos, out, settings)
        else:
            prepare(videos, out, StubToolkit(), settings, shard, args.batch_size)
    else:
        from magicface_core.evaluation.evaluate import EvalTools, generate_and_evaluate

        identities, deltas, out = args.paths
        tools = EvalTools(StubTools.estimate_aus, StubTools.parse, StubTools.landmarks, StubTools.embed)
        generate_and_evaluate(sorted(identities.iterdir()),
                              [AUVector.parse(line) for line in deltas.read_text().splitlines()], stub_edit, tools,
                              out, shard)


if __name__ == "__main__":
    main()

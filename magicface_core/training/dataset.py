"""The prepared training set on disk, and the AU-condition rules applied to it.

``python -m magicface_core prepare`` writes ``index.json`` next to the images: every kept
frame (its crop, its condition image, its AU intensities) and the same-clip pairs to train on.
A pair trains the model to turn the *identity* frame into the *target* frame, given the
target's condition image and the AU delta target - identity.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..au import NUM_AUS
from ..errors import DataError, MagicFaceError
from ..files import atomic_path

INDEX_FILE = "index.json"
INDEX_VERSION = 1


@dataclass(frozen=True)
class Frame:
    clip: str
    frame: int
    image: str  # paths relative to the data folder
    condition: str
    aus: tuple[float, ...]


@dataclass(frozen=True)
class Pair:
    identity: int  # indices into the frame list
    target: int


def write_index(root: str | Path, frames: list[Frame], pairs: list[Pair], stats: dict) -> Path:
    path = Path(root) / INDEX_FILE
    payload = {"version": INDEX_VERSION, "frames": [asdict(f) for f in frames],
               "pairs": [[p.identity, p.target] for p in pairs], "stats": stats}
    text = json.dumps(payload)
    try:
        if path.read_text() == text:  # a re-run that changes nothing leaves the file as it was
            return path
    except (OSError, UnicodeDecodeError):
        pass
    with atomic_path(path) as temporary:  # a name of its own: two processes may write the same index at once
        temporary.write_text(text)
    return path


def read_index(root: str | Path) -> tuple[list[Frame], list[Pair]]:
    path = Path(root) / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: prepare the data first (python -m magicface_core prepare)")
    payload = json.loads(path.read_text())
    frames = [Frame(f["clip"], f["frame"], f["image"], f["condition"], tuple(f["aus"])) for f in payload["frames"]]
    return frames, [Pair(i, j) for i, j in payload["pairs"]]


def check_index(root: str | Path, frames: list[Frame], pairs: list[Pair], shown: int = 5) -> None:
    """Every pair points at two frames, every frame of a pair has its image and condition image on disk
    and 12 finite AU intensities; otherwise a DataError names the first ``shown`` bad entries (so a
    damaged index is reported before any model loads, not as a traceback mid-run)."""
    root = Path(root)
    problems: list[str] = []
    used: set[int] = set()
    for n, pair in enumerate(pairs):
        bad = [i for i in (pair.identity, pair.target) if not (isinstance(i, int) and 0 <= i < len(frames))]
        if bad:
            problems.append(f"pair {n} points at frame {bad[0]}, but the index has frames 0..{len(frames) - 1}")
        else:
            used.update((pair.identity, pair.target))
    for i in sorted(used):
        frame = frames[i]
        aus = frame.aus
        if len(aus) != NUM_AUS:
            problems.append(f"frame {i} ({frame.image}) has {len(aus)} AU values, not {NUM_AUS}")
        elif not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in aus):
            problems.append(f"frame {i} ({frame.image}) has AU values that are not finite numbers: {list(aus)}")
        for kind, name in (("image", frame.image), ("condition image", frame.condition)):
            if not (root / name).is_file():
                problems.append(f"frame {i}: its {kind} {root / name} is missing")
    if problems:
        more = f"\n  ... and {len(problems) - shown} more" if len(problems) > shown else ""
        raise DataError(f"{root / INDEX_FILE} is damaged ({len(problems)} problem(s)):\n  "
                        + "\n  ".join(problems[:shown]) + more
                        + "\nprepare the data again (python -m magicface_core prepare), or restore the missing files")


def load_rgb(path: Path, resolution: int) -> torch.Tensor:
    """``[3, H, W]`` float in 0..1 at ``resolution``."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.size != (resolution, resolution):
            image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
        return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0


class PairDataset(Dataset):
    def __init__(self, root: str | Path, resolution: int = 512):
        self.root = Path(root)
        self.resolution = resolution
        self.frames, self.pairs = read_index(self.root)
        if not self.pairs:
            raise MagicFaceError(f"{self.root} has no training pairs; prepare more clips or lower --min-gap")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[index]
        identity, target = self.frames[pair.identity], self.frames[pair.target]
        return {
            "identity": load_rgb(self.root / identity.image, self.resolution),
            "target": load_rgb(self.root / target.image, self.resolution),
            "condition": load_rgb(self.root / target.condition, self.resolution),
            "au_delta": torch.tensor(target.aus, dtype=torch.float32) - torch.tensor(identity.aus, dtype=torch.float32),
            "index": index,
        }


class EpochBatches(Sampler):
    """This process's batches of an epoch, in an order that depends only on (seed, epoch).

    Each epoch's shuffled order is cut into global batches of ``batch_size x processes``
    samples; process ``rank`` takes the ``rank``-th slice of each. So no sample is seen twice in
    an epoch, by one process or by two, every process gets the same number of batches, and a
    resumed run sees the same batches. The remainder of an epoch that fills no global batch is left out.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, processes: int = 1):
        if size < batch_size * processes:
            raise ValueError(f"{size} samples cannot fill one batch of {batch_size} on each of {processes} processes")
        self.size, self.batch_size, self.seed, self.rank, self.processes = size, batch_size, seed, rank, processes
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Start ``epoch`` after its first ``skip`` batches (resuming in the middle of an epoch)."""
        self.epoch, self.skip = epoch, skip

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        per_step = self.batch_size * self.processes
        for step in range(self.skip, len(self)):
            start = step * per_step + self.rank * self.batch_size
            yield order[start:start + self.batch_size]

    def __len__(self) -> int:
        return self.size // (self.batch_size * self.processes)


def apply_au_rules(delta: torch.Tensor, generator: torch.Generator, dropout: float, noise_std: float,
                   no_change_threshold: float) -> torch.Tensor:
    """The paper's AU condition: a ``dropout`` share of rows become all-zero (the unconditional case);
    rows that genuinely mean "no change" get N(0, noise_std^2) noise so that they differ from those."""
    dropped = torch.rand(delta.shape[0], generator=generator) < dropout
    no_change = (delta.abs().amax(dim=1) <= no_change_threshold) & ~dropped
    noise = torch.randn(delta.shape, generator=generator) * noise_std
    out = torch.where(no_change[:, None], delta + noise, delta)
    return torch.where(dropped[:, None], torch.zeros_like(out), out)

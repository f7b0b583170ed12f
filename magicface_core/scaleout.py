"""Splitting a job's items (clips to prepare, identities to edit) over processes and jobs.

Two ways to scale out, which combine:

- a launcher (``torchrun``, ``accelerate launch``) starts N processes of one job; each reads its
  rank and the world size from the environment they set (``RANK``, ``WORLD_SIZE``);
- a scheduler (a Slurm job array) starts N independent jobs, each told ``--shard I/N``.

Items are dealt by sorted key, round robin, so the split depends only on the keys and never
overlaps; a job ``I/N`` launched with P processes is split again, process r taking shard
``I*P + r`` of ``N*P``. Each process writes only its own items; whoever merges reads them all back
from disk, so a merged result does not depend on how the work was split.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Iterable

from .errors import SettingsError

# A barrier waits for the slowest process of the job, which may still have hours of clips ahead.
BARRIER_TIMEOUT = datetime.timedelta(days=7)
_made_group = False  # whether barrier() made the process group (a caller's own group is left alone)


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (from 0) of ``count`` equal parts of a job's items."""

    index: int = 0
    count: int = 1

    def __post_init__(self):
        if not (isinstance(self.count, int) and isinstance(self.index, int)) or self.count < 1 \
                or not 0 <= self.index < self.count:
            raise SettingsError(f"a shard is I/N with N at least 1 and 0 <= I < N (got {self.index}/{self.count})")

    @classmethod
    def parse(cls, text: str, option: str = "--shard") -> "Shard":
        """``"I/N"``, e.g. ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``."""
        try:
            index, count = (int(part) for part in str(text).split("/"))
        except ValueError:
            raise SettingsError(f"{option} takes I/N, e.g. 0/4 for the first of 4 jobs (got {text!r})") from None
        try:
            return cls(index, count)
        except SettingsError as exc:
            raise SettingsError(f"{option} {text}: {exc}") from None

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def whole(self) -> bool:
        return self.count == 1

    def split(self, processes: "Shard") -> "Shard":
        """This job's part taken by process ``processes.index`` of ``processes.count``."""
        return Shard(self.index * processes.count + processes.index, self.count * processes.count)

    def take(self, keys: Iterable[str]) -> list[str]:
        """This shard's keys: every ``count``-th of the sorted keys, from the ``index``-th."""
        return sorted(keys)[self.index::self.count]


def launched() -> Shard:
    """This process among the processes a launcher started for the job (``Shard(0, 1)`` when run alone).

    torchrun and accelerate launch both set ``RANK`` and ``WORLD_SIZE``, on one machine or many."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        raise SettingsError(f"RANK={os.environ.get('RANK')!r} and WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} "
                            "must be whole numbers, as torchrun sets them") from None
    return Shard(rank, world)


def barrier(processes: Shard) -> None:
    """Wait until every process of the job gets here (nothing to wait for when run alone).

    Uses the job's torch.distributed group, made on first use with gloo (CPU tensors only, so any
    launch works, GPUs or not) from the launcher's ``MASTER_ADDR``/``MASTER_PORT``."""
    if processes.whole:
        return
    import torch.distributed as dist

    global _made_group
    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=processes.index, world_size=processes.count, timeout=BARRIER_TIMEOUT)
        _made_group = True
    dist.barrier()


def finish() -> None:
    """Leave the job's process group, if :func:`barrier` made one (so the process exits without warnings)."""
    global _made_group
    if _made_group:
        import torch.distributed as dist

        dist.destroy_process_group()
        _made_group = False


def process_device(device):
    """``cuda`` (no index) becomes this process's GPU, ``cuda:LOCAL_RANK``, when a launcher started
    several processes on the machine; any other device, or one given with its index, stays as given."""
    import torch

    device = torch.device(device)
    local = os.environ.get("LOCAL_RANK")
    if device.type == "cuda" and device.index is None and local is not None and local.isdigit() \
            and int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1"))) > 1:
        return torch.device("cuda", int(local) % max(torch.cuda.device_count(), 1))
    return device

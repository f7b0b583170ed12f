"""Batches and chunks of edits, one rule for every caller (the core sampler, the video edits, the nodes).

* The batch rule: every input of an edit holds 1 row (shared by all) or B rows (one per edit).
* Chunking: a batch of B edits is sampled ``per_chunk`` rows at a time, so memory does not grow
  with B; the start noise is drawn for the whole batch first, so the chunking never changes a result.
* Progress: frame-steps done over the whole batch, each chunk's steps offset by the chunks before it.
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterable, Iterator

import torch

from .errors import ImageInputError, MagicFaceError
from .imaging import PORTRAIT_SIZE

# SD 1.5's VAE: 512 pixels -> 64 latents
LATENT_SIZE = PORTRAIT_SIZE // 8


def batch_size(sizes: dict[str, int], error: type[MagicFaceError] = ImageInputError) -> int:
    """The batch B of inputs whose row counts are ``sizes`` (name -> rows); each must be 1 or B."""
    batch = max(sizes.values())
    wrong = {k: v for k, v in sizes.items() if v not in (1, batch)}
    if wrong:
        listed = ", ".join(f"{k}: {v}" for k, v in sizes.items())
        raise error(f"batch sizes do not match ({listed}); each must be 1 or {batch}")
    return batch


def rows(batch, index: slice):
    """The rows ``index`` of an input that has 1 row (shared: returned whole) or one per edit."""
    return batch if len(batch) == 1 else batch[index]


def chunks(batch: int, per_chunk: int) -> Iterator[slice]:
    """Consecutive row ranges of at most ``per_chunk`` rows covering ``batch`` rows."""
    if per_chunk < 1:
        raise MagicFaceError(f"frames_per_chunk must be 1 or more, got {per_chunk}")
    for start in range(0, batch, per_chunk):
        yield slice(start, min(batch, start + per_chunk))


def chunk_items(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of at most ``size`` items, read lazily (a clip's frames stream through)."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def start_noise(seed: int, batch: int, per_edit: bool, latent_size: int = LATENT_SIZE) -> torch.Tensor | None:
    """The start noise of a whole batch, drawn once so that chunking does not change it: None (the
    sampler draws one noise from the seed, shared by every edit) unless ``per_edit``."""
    if not per_edit or batch == 1:
        return None
    generator = torch.Generator("cpu").manual_seed(int(seed) % (2**64))
    return torch.randn((batch, 4, latent_size, latent_size), generator=generator)


StepReport = Callable[[int, int, object], None]  # (frame-steps done, frame-steps in all, the step's estimate)


class ChunkProgress:
    """Per-step progress of a batch sampled in chunks: ``for_chunk(rows)`` gives that chunk's sampler
    callback ``(step, steps, denoised)``, reporting frame-steps over the whole batch."""

    def __init__(self, frames: int, steps: int, report: StepReport | None):
        self.total, self.steps, self.report = frames * steps, steps, report
        self.done = 0

    def for_chunk(self, count: int):
        done = self.done
        self.done += count * self.steps

        def step(i: int, n: int, denoised) -> None:
            if self.report is not None:
                self.report(done + i * count, self.total, denoised)

        return step


def pick_noise(noise: torch.Tensor | None, index: slice) -> torch.Tensor | None:
    return None if noise is None else rows(noise, index)

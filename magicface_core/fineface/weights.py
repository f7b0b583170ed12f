"""Strict loading of FineFace's three published files.

- ``attn_processors.ckpt``: ``<block>.attn2.processor.au_to_{k,v}.weight`` for every attn2 (pickle,
  read weights-only: a pickle with code is refused).
- ``au_encoder.ckpt``: ``au_encoder.{weight,bias}``.
- ``pytorch_lora_weights.safetensors``: PEFT keys ``unet.<path>.lora_{A,B}.weight``, rank 32, on
  ``to_q/to_k/to_v/to_out.0`` of both attentions, no alpha stored. It was trained with PEFT's
  default alpha 8, so the trained scale is ``8 / rank`` (0.25). ``lora_strength`` is relative to that.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch

from ..errors import CheckpointError, WeightsNotFoundError
from ..model.checkpoint import check_state, load_strict, read_weights_file

ATTN_PROCESSORS = "attn_processors.ckpt"
AU_ENCODER = "au_encoder.ckpt"
LORA = "pytorch_lora_weights.safetensors"
SD15_ATTN_PROCESSORS = "sd15_attn_processors.ckpt"
SD15_AU_ENCODER = "sd15_au_encoder.ckpt"
FILES = (ATTN_PROCESSORS, AU_ENCODER, LORA)
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TRAINED_ALPHA = 8.0  # PEFT's default lora_alpha, which the authors' training kept


class _Subset:
    """The part of a model's state dict whose keys contain ``marker``, for :func:`load_strict`."""

    def __init__(self, model: torch.nn.Module, marker: str):
        self.model, self.marker = model, marker

    def state_dict(self):
        return {k: v for k, v in self.model.state_dict().items() if self.marker in k}

    def load_state_dict(self, state, strict=True, assign=False):
        return self.model.load_state_dict(state, strict=False, assign=assign)


def file_path(folder: str | os.PathLike, name: str) -> Path:
    path = Path(folder) / name
    if not path.is_file():
        raise WeightsNotFoundError(
            f"{path} is missing: a FineFace folder holds {', '.join(FILES)} from https://huggingface.co/Tvaranka/fineface")
    return path


def read(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A file's tensors; pickles weights-only (one with code in it is a CheckpointError)."""
    return read_weights_file(path)


def load_attn_processors(unet: torch.nn.Module, path: str | os.PathLike) -> None:
    load_strict(_Subset(unet, "attn2.processor."), read(path), str(path), "FineFace's attention weights")


def load_au_encoder(encoder: torch.nn.Module, path: str | os.PathLike) -> None:
    load_strict(encoder, read(path), str(path), "FineFace's AU encoder")


def expected_lora_shapes(linears: Mapping[str, torch.nn.Linear], rank: int) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for name, linear in linears.items():
        shapes[f"{name}.lora_A.weight"] = (rank, linear.in_features)
        shapes[f"{name}.lora_B.weight"] = (linear.out_features, rank)
    return shapes


def lora_linears(unet: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """``{diffusers path: Linear}`` of the LoRA's targets: to_q/to_k/to_v/to_out.0 of attn1 and attn2."""
    modules = dict(unet.named_modules())
    return {f"{name}.{t}": modules[f"{name}.{t}"] for name in modules if name.endswith(("attn1", "attn2"))
            for t in LORA_TARGETS if f"{name}.{t}" in modules}


def read_lora(path: str | os.PathLike, linears: Mapping[str, torch.nn.Linear]) -> tuple[dict[str, torch.Tensor], int]:
    """The LoRA's tensors by diffusers path (``unet.`` prefix removed) and its rank, checked key by key."""
    state = read(path)
    prefixed = [k for k in state if not k.startswith("unet.")]
    if prefixed:
        raise CheckpointError(f"{path} is not FineFace's LoRA: unexpected key(s) {', '.join(sorted(prefixed)[:8])} "
                              "(every key starts with 'unet.')")
    state = {k[len("unet."):]: v for k, v in state.items()}
    ranks = {v.shape[0] for k, v in state.items() if k.endswith("lora_A.weight") and v.ndim == 2}
    if len(ranks) != 1:
        raise CheckpointError(f"{path} is not FineFace's LoRA: no single LoRA rank (found {sorted(ranks)})")
    rank = ranks.pop()
    check_state(state, expected_lora_shapes(linears, rank), str(path), "FineFace's LoRA for this UNet")
    return state, rank


def lora_scale(lora_strength: float, rank: int) -> float:
    """The multiplier of ``B @ A``: strength 1.0 is the trained ``alpha / rank`` (0.25 at rank 32)."""
    return float(lora_strength) * TRAINED_ALPHA / rank


def lora_deltas(state: Mapping[str, torch.Tensor], rank: int, lora_strength: float) -> dict[str, torch.Tensor]:
    """``{diffusers path of a Linear: scale * B @ A}`` in fp32."""
    scale = lora_scale(lora_strength, rank)
    return {path[: -len(".lora_A.weight")]: scale * (state[path.replace("lora_A", "lora_B")].float() @ state[path].float())
            for path in state if path.endswith(".lora_A.weight")}


@torch.no_grad()
def merge_lora(unet: torch.nn.Module, path: str | os.PathLike, lora_strength: float) -> None:
    """Add the LoRA into the UNet's weights (no extra work per step)."""
    linears = lora_linears(unet)
    state, rank = read_lora(path, linears)
    if lora_strength == 0:
        return
    for name, delta in lora_deltas(state, rank, lora_strength).items():
        weight = linears[name].weight
        weight.copy_((weight.float() + delta.to(weight.device)).to(weight.dtype))

"""Default device and precision: the GPU in half precision when there is one, else the CPU in fp32."""

from __future__ import annotations

import torch

from .errors import MagicFaceError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 where the GPU supports it (no fp16 overflow), fp16 on other GPUs, fp32 on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def resolve(device: torch.device | str | None, dtype: torch.dtype | str | None) -> tuple[torch.device, torch.dtype]:
    """The one reading of a device and a precision, as the CLI and the API take them."""
    try:
        device = torch.device(device) if device is not None else default_device()
    except (RuntimeError, TypeError) as exc:
        raise MagicFaceError(f"unknown device {device!r}: use cpu, cuda, cuda:1, mps... ({exc})") from None
    if isinstance(dtype, str):
        if dtype in ("auto", ""):
            dtype = None
        elif dtype in DTYPES:
            dtype = DTYPES[dtype]
        else:
            raise MagicFaceError(f"unknown dtype {dtype!r}: use one of auto, {', '.join(DTYPES)}")
    return device, dtype or default_dtype(device)

"""Default device and precision: the GPU in half precision when there is one, else the CPU in fp32."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import SettingsError
from .settings import option

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DTYPE_CHOICES = ("auto", *DTYPES)


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


def check_device(device: torch.device | str) -> torch.device:
    """A device this machine has: a valid name (cpu, cuda, cuda:1, mps, ...) whose backend is available."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise SettingsError(f"unknown device {device!r}: use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingsError(f"device {str(device)!r}: this PyTorch sees no CUDA GPU; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SettingsError(f"device {str(device)!r}: there are only {torch.cuda.device_count()} CUDA GPU(s)")
    elif device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise SettingsError(f"device {str(device)!r}: MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        backend = getattr(torch, device.type, None)  # torch.xpu and the like
        if backend is None or (hasattr(backend, "is_available") and not backend.is_available()):
            raise SettingsError(f"device {str(device)!r} is not available here: use cpu, cuda, cuda:N or mps")
    return device


def resolve(device: torch.device | str | None, dtype: torch.dtype | str | None) -> tuple[torch.device, torch.dtype]:
    device = check_device(device) if device is not None else default_device()
    if isinstance(dtype, str):
        if dtype in ("auto", ""):
            dtype = None
        elif dtype in DTYPES:
            dtype = DTYPES[dtype]
        else:
            raise SettingsError(f"unknown dtype {dtype!r}: use one of auto, {', '.join(DTYPES)}")
    elif dtype is not None and dtype not in DTYPES.values():
        raise SettingsError(f"unsupported dtype {dtype}: use one of {', '.join(DTYPES)}")
    return device, dtype or default_dtype(device)


@dataclass(frozen=True)
class DeviceSettings:
    """Where a job computes, and in which precision (resolved, and the device checked, by :meth:`resolve`)."""

    device: str | None = option(None, "cuda, cpu, mps... (default: the GPU if there is one)")
    dtype: str = option("auto", "precision; auto: half on GPU, fp32 on CPU", choices=DTYPE_CHOICES)

    def __post_init__(self):
        if self.dtype not in DTYPE_CHOICES:
            raise SettingsError(f"unknown dtype {self.dtype!r}: use one of {', '.join(DTYPE_CHOICES)}")

    def resolve(self) -> tuple[torch.device, torch.dtype]:
        """The device and dtype; under torchrun a plain ``cuda`` is this process's own GPU."""
        from .scaleout import process_device

        device, dtype = resolve(self.device, self.dtype)
        return process_device(device), dtype

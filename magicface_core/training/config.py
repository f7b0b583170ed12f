"""Training settings: defaults follow the paper; a YAML file and command-line flags override them.

The ``train`` command's flags are made from the dataclass below by the CLI's one builder
(``magicface_core.cli.flags``; ``cli/train.py``). Every value, whether from a flag, the YAML file
or Python, then goes through one typed check of the whole config (:meth:`TrainConfig.__post_init__`),
before anything is loaded: numbers in any YAML spelling (PyYAML reads ``1e-5`` as a string), strict
booleans, enums and AU deltas.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args, get_origin, get_type_hints

from ..errors import AUInputError, SettingsError

MixedPrecision = Literal["no", "fp16", "bf16"]
SaveDtype = Literal["fp32", "fp16", "bf16"]
LrScheduler = Literal["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"]
LogWith = Literal["csv", "tensorboard"]
MAX_LEARNING_RATE = 1.0  # past it one Adam step moves the weights further than their own size


@dataclass
class TrainConfig:
    # data and models
    data: str = field(default="", metadata={"help": "folder written by `python -m magicface_core prepare`"})
    sd15: str = field(default="stable-diffusion-v1-5/stable-diffusion-v1-5",
                      metadata={"help": "SD 1.5: diffusers folder, single-file checkpoint or hub id"})
    output_dir: str = "magicface-training"
    init_from: str = field(default="", metadata={"help": "start from MagicFace weights instead of SD 1.5"})
    resolution: int = 512
    # optimisation (paper: lr 1e-5, batch 2 per GPU on 4 GPUs, 100k steps)
    batch_size: int = field(default=2, metadata={"help": "per process; the effective batch is this x processes"})
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-5
    lr_scheduler: LrScheduler = "constant"
    lr_warmup_steps: int = 0
    max_steps: int = 100_000
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    use_8bit_adam: bool = False
    mixed_precision: MixedPrecision = "no"
    gradient_checkpointing: bool = False
    use_ema: bool = False
    ema_decay: float = 0.9999
    # the AU condition (paper: 10% dropped to all-zero; genuine no-change vectors get N(0, 0.2^2))
    au_dropout: float = 0.1
    no_change_noise: float = 0.2
    no_change_threshold: float = 0.0  # a vector is "no change" when every |delta| is at most this
    # bookkeeping
    seed: int = 0
    num_workers: int = 2
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3
    save_dtype: SaveDtype = "fp16"
    resume: str = field(default="", metadata={"help": "'latest' or a checkpoint folder"})
    overwrite: bool = field(default=False, metadata={"help": "start over in an output folder that holds a run"})
    validate_every: int = 2500
    validation_identities: int = 2
    validation_deltas: list[str] = field(default_factory=lambda: ["AU6=2,AU12=3", "AU1=2,AU4=2,AU15=2", "AU26=4"])
    validation_steps: int = 25
    validation_guidance: float = 3.0
    log_every: int = 10
    log_with: LogWith = field(default="csv", metadata={"help": "csv, or tensorboard (also writes the CSV)"})

    @property
    def output(self) -> Path:
        return Path(self.output_dir)

    def __post_init__(self) -> None:
        problems = []
        hints = get_type_hints(TrainConfig)
        for f in dataclasses.fields(self):
            try:
                setattr(self, f.name, _coerce(getattr(self, f.name), hints[f.name]))
            except ValueError as exc:
                problems.append(f"{f.name}: {exc}")
        if not problems:
            problems = self._check_ranges()
        if problems:
            raise SettingsError("invalid training settings:\n  " + "\n  ".join(problems))

    def _check_ranges(self) -> list[str]:
        problems = []

        def need(ok: bool, message: str) -> None:
            if not ok:
                problems.append(message)

        for name in ("batch_size", "gradient_accumulation_steps", "max_steps", "checkpoint_every", "log_every",
                     "validation_identities", "validation_steps"):
            need(getattr(self, name) >= 1, f"{name}: must be at least 1, got {getattr(self, name)}")
        for name in ("lr_warmup_steps", "keep_checkpoints", "validate_every", "num_workers", "seed",
                     "no_change_noise", "no_change_threshold", "max_grad_norm", "adam_weight_decay"):
            need(getattr(self, name) >= 0, f"{name}: must not be negative, got {getattr(self, name)}")
        need(0 < self.learning_rate <= MAX_LEARNING_RATE,
             f"learning_rate: must be positive and at most {MAX_LEARNING_RATE:g} (Adam moves every weight by about "
             f"the learning rate at each step; the paper uses 1e-5), got {self.learning_rate:g}")
        need(self.adam_epsilon > 0, f"adam_epsilon: must be positive, got {self.adam_epsilon}")
        for name in ("adam_beta1", "adam_beta2", "ema_decay"):
            need(0 <= getattr(self, name) < 1, f"{name}: must be in [0, 1), got {getattr(self, name)}")
        need(0 <= self.au_dropout <= 1, f"au_dropout: must be in [0, 1], got {self.au_dropout}")
        need(self.resolution >= 64 and self.resolution % 64 == 0,
             f"resolution: must be a multiple of 64 (the UNet halves the latents three times), got {self.resolution}")
        need(not (self.overwrite and self.resume), "resume and overwrite: choose one (resume continues a run, "
             "overwrite starts it over)")
        from ..au import AUVector

        for text in self.validation_deltas:
            try:
                AUVector.parse(text)
            except AUInputError as exc:
                problems.append(f"validation_deltas: {exc}")
        return problems


_TRUE, _FALSE = ("true", "yes", "on", "1", "y", "t"), ("false", "no", "off", "0", "n", "f")


def _coerce(value, kind):
    """``value`` as ``kind``; a ValueError names what was wrong. Strings are read as YAML or a shell
    would spell the value; nothing is truthy by accident (``"no"`` is False, ``"maybe"`` an error)."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise ValueError(f"expected a whole number, got {value!r}")
        if isinstance(value, int):
            return value
        number = _number(value)
        if not number.is_integer():
            raise ValueError(f"expected a whole number, got {value!r}")
        return int(number)
    if kind is float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        return _number(value)
    if kind is str:
        if value is None:
            return ""
        if isinstance(value, (str, Path)):
            return str(value)
        raise ValueError(f"expected text, got {value!r}")
    if get_origin(kind) is Literal:
        choices = get_args(kind)
        if value is False and "no" in choices:  # YAML 1.1 reads an unquoted `no` as false
            value = "no"
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        raise ValueError(f"expected one of {', '.join(choices)}; got {value!r}")
    if get_origin(kind) is list:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
            raise ValueError(f"expected a list of text, got {value!r}")
        return list(items)
    raise TypeError(f"no rule for {kind}")


def _number(value) -> float:
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def from_file(path: str | Path | None, overrides: dict | None = None) -> TrainConfig:
    """Defaults, then the YAML file at ``path`` (if any), then ``overrides``; the result checked as a whole."""
    values = {}
    if path is not None:
        import yaml

        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SettingsError(f"cannot read {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise SettingsError(f"{path}: expected settings as `name: value` lines")
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        stray = sorted(set(loaded) - known)
        if stray:
            raise SettingsError(f"{path}: unknown settings {', '.join(stray)}")
        values.update(loaded)
    values.update(overrides or {})
    return TrainConfig(**values)


def to_yaml(config: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)

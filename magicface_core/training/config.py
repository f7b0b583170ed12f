"""Training settings: defaults follow the paper; a YAML file and command-line flags override them."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_type_hints


@dataclass
class TrainConfig:
    # data and models
    data: str = ""  # folder written by `python -m magicface_core prepare`
    sd15: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # diffusers folder, single-file checkpoint or hub id
    output_dir: str = "magicface-training"
    init_from: str = ""  # start from MagicFace weights instead of SD 1.5 (fine-tuning)
    resolution: int = 512
    # optimisation (paper: lr 1e-5, batch 2 per GPU on 4 GPUs, 100k steps)
    batch_size: int = 2
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-5
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    max_steps: int = 100_000
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    use_8bit_adam: bool = False
    mixed_precision: str = "no"  # no, fp16, bf16
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
    save_dtype: str = "fp16"
    resume: str = ""  # "latest" or a checkpoint folder
    validate_every: int = 2500
    validation_identities: int = 2
    validation_deltas: list[str] = field(default_factory=lambda: ["AU6=2,AU12=3", "AU1=2,AU4=2,AU15=2", "AU26=4"])
    validation_steps: int = 25
    validation_guidance: float = 3.0
    log_every: int = 10
    log_with: str = "csv"  # csv, or tensorboard (also writes the CSV)

    @property
    def output(self) -> Path:
        return Path(self.output_dir)


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m magicface_core.train",
        description="Train MagicFace's ID encoder and denoising UNet jointly (runs under `accelerate launch` too).",
    )
    parser.add_argument("--config", type=Path, help="a YAML file with any of the settings below")
    hints = get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        kind = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, type=_parse_bool, default=None, metavar="BOOL")
        elif kind == list[str]:
            parser.add_argument(flag, nargs="+", default=None)
        else:
            parser.add_argument(flag, type=kind, default=None)
    return parser


def load_config(argv: list[str] | None = None) -> TrainConfig:
    """Defaults, then the YAML file, then the command line."""
    args = build_parser().parse_args(argv)
    values = {}
    if args.config is not None:
        import yaml

        loaded = yaml.safe_load(args.config.read_text()) or {}
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = set(loaded) - known
        if unknown:
            raise SystemExit(f"{args.config}: unknown settings {', '.join(sorted(unknown))}")
        values.update(loaded)
    values.update({k: v for k, v in vars(args).items() if k != "config" and v is not None})
    config = TrainConfig(**values)
    if not config.data:
        raise SystemExit("--data is required: the folder written by `python -m magicface_core prepare`")
    return config

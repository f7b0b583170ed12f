"""``python -m magicface_core train`` (alias: ``python -m magicface_core.cli.train``; also under ``torchrun`` or
``accelerate launch -m magicface_core train``).

Trains MagicFace's two UNets jointly from Stable Diffusion 1.5 as the paper describes and writes
checkpoints that MagicFace.from_pretrained and the ComfyUI loader read. ``--config file.yaml``
holds any setting; flags override it. See README, "Training". The flags are ``TrainConfig``'s
fields (``training/config.py``), made by the CLI's one builder.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ..errors import SettingsError
from ..training.config import TrainConfig, from_file
from .flags import add_flags

_UNSET = object()


def build_parser() -> argparse.ArgumentParser:
    class Parser(argparse.ArgumentParser):
        def error(self, message):  # a user error, not argparse's SystemExit
            raise SettingsError(f"{self.prog}: {message}")

    parser = Parser(prog="python -m magicface_core train",
                    description="Train MagicFace's ID encoder and denoising UNet jointly (also under torchrun or "
                                "`accelerate launch`; see README, Training).")
    parser.add_argument("--config", type=Path, help="a YAML file with any of the settings; flags override it")
    # Unset flags come back as _UNSET, so that only the flags given override the YAML file.
    add_flags(parser, TrainConfig, unset=_UNSET)
    return parser


def load_config(argv: list[str] | None = None) -> TrainConfig:
    """Defaults, then the YAML file, then the command line; the result checked as a whole."""
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        raise SettingsError(f"unknown arguments: {' '.join(unknown)} (see --help)")
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name) is not _UNSET}
    return from_file(args.config, given)


def main(argv: list[str] | None = None) -> int:
    from . import main as cli

    return cli(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

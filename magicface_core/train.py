"""Alias: ``python -m magicface_core.train`` is ``python -m magicface_core train`` (also under ``accelerate launch``).

Trains MagicFace's two UNets jointly from Stable Diffusion 1.5 as the paper describes and writes
checkpoints that MagicFace.from_pretrained and the ComfyUI loader read. ``--config file.yaml``
holds any setting; flags override it. See README, "Training".
"""

import sys

from .cli import main as _cli


def main(argv: list[str] | None = None) -> int:
    return _cli(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

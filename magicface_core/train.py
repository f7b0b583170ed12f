"""``python -m magicface_core.train --data DATA --sd15 SD15 [...]`` (or under ``accelerate launch``).

Trains MagicFace's two UNets jointly from Stable Diffusion 1.5 as the paper describes and writes
checkpoints that MagicFace.from_pretrained and the ComfyUI loader read. ``--config file.yaml``
holds any setting; flags override it. See README, "Training".
"""

import logging
import sys

from .training.config import load_config
from .training.loop import train


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    path = train(load_config(argv))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

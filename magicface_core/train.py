"""``python -m magicface_core.train --data DATA --sd15 SD15 [...]`` (also under torchrun or ``accelerate launch``).

Trains MagicFace's two UNets jointly from Stable Diffusion 1.5 as the paper describes and writes
checkpoints that MagicFace.from_pretrained and the ComfyUI loader read. ``--config file.yaml``
holds any setting; flags override it. See README, "Training".
"""

import logging
import sys

from .errors import MagicFaceError
from .training.config import load_config
from .training.loop import train


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        path = train(load_config(argv))
    except MagicFaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

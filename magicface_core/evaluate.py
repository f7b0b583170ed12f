"""Alias: ``python -m magicface_core.evaluate`` is ``python -m magicface_core evaluate``."""

import sys

from .evaluation.evaluate import main

if __name__ == "__main__":
    sys.exit(main())

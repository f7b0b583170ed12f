"""Alias: ``python -m magicface_core.prepare`` is ``python -m magicface_core prepare``."""

import sys

from .training.prepare import main

if __name__ == "__main__":
    sys.exit(main())

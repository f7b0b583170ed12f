"""Alias: ``python -m magicface_core.cli.prepare`` is ``python -m magicface_core prepare``."""

import sys

from . import main as _cli


def main(argv: list[str] | None = None) -> int:
    return _cli(["prepare", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

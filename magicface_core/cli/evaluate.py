"""Alias: ``python -m magicface_core.cli.evaluate`` is ``python -m magicface_core evaluate``."""

import sys

from . import main as _cli


def main(argv: list[str] | None = None) -> int:
    return _cli(["evaluate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

"""``python -m magicface_core``: edit a portrait's expression, and the tools around it.

    python -m magicface_core edit --image portrait.png --au AU12=3 --au AU6=2 --out edited.png
    python -m magicface_core edit --image photo.jpg --crop --au AU1=2,AU4=4 --out edited.jpg
    python -m magicface_core estimate --image portrait.png
    python -m magicface_core condition --image portrait.png --out condition.png
    python -m magicface_core convert WEIGHTS_DIR magicface_fp16.safetensors --dtype fp16
    python -m magicface_core download
    python -m magicface_core video --video in.mp4 --au AU12=3 [--keyframes "0:AU12=0;30:AU12=3"] --out out.mp4
    python -m magicface_core animate --image portrait.png --driving drive.mp4 [--relative|--absolute] --out out.mp4
    python -m magicface_core prepare|train|evaluate ...   (see each one's --help)

No flag is written here: each command's flags come from its settings dataclass, next to the job in
the library (``EditJob`` in ``edit.py``, ``VideoJob`` in ``video/edit.py``, ``PrepareJob`` in
``training/prepare.py``, ...), through the one builder in :mod:`.flags`; ``train`` reads
``training/config.py``'s ``TrainConfig``. This package is the one place that sets up logging and
turns the library's :class:`~magicface_core.errors.MagicFaceError` into a message and an exit code.
``python -m magicface_core.cli.train`` (``.prepare``, ``.evaluate``) are aliases of the subcommands.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from typing import Callable

from ..errors import MagicFaceError
from . import commands as _run
from .flags import add_flags, attach_keyframes_values, build

logger = logging.getLogger("magicface_core")

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 2, 130


@dataclass(frozen=True)
class Command:
    """A subcommand: its settings dataclass (the flags) and what runs it."""

    name: str
    help: str
    job: type
    run: Callable
    description: str | None = None

    def __call__(self, args: argparse.Namespace):
        return self.run(build(self.job, args))  # the job's checks run here, before anything loads


def _commands() -> dict[str, Command]:
    from ..evaluation import evaluate as evaluation
    from ..training import prepare as preparation

    return {c.name: c for c in (
        Command("edit", "edit the expression of a portrait", _run.EditJob, _run.run_edit),
        Command("estimate", "print the AU intensities of a face", _run.EstimateJob, _run.run_estimate),
        Command("condition", "write the condition image of a 512x512 portrait", _run.ConditionJob,
                _run.run_condition),
        Command("convert", "convert MagicFace weights to one .safetensors file (or back)", _run.ConvertJob,
                _run.run_convert),
        Command("generate", "FineFace: a new face from a prompt, with the expression in AUs", _run.GenerateJob,
                _run.run_generate),
        Command("video", "edit the expression all through a clip (audio kept)", _run.VideoJob, _run.run_video),
        Command("animate", "make a portrait follow the expressions of a driving clip", _run.AnimateJob,
                _run.run_animate),
        Command("download", "download all weights the CLI needs", _run.DownloadJob, _run.run_download),
        Command("prepare", "build a training set from videos", _run.PrepareJob, _run.run_prepare,
                preparation.__doc__),
        Command("evaluate", "the paper's metrics for a set of edits", _run.EvaluateJob, _run.run_evaluate,
                evaluation.__doc__),
    )}


COMMANDS = _commands()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m magicface_core", description="MagicFace expression editing by AUs")
    subcommands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        extra = {"description": command.description, "formatter_class": argparse.RawDescriptionHelpFormatter} \
            if command.description else {}
        add_flags(subcommands.add_parser(command.name, help=command.help, **extra), command.job)
    # The training flags and YAML have their own typed parser: everything after "train" goes to it.
    subcommands.add_parser("train", help="train MagicFace from SD 1.5 (see train --help)", add_help=False)
    return parser


def _setup_logging(timestamps: bool) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s" if timestamps else "%(message)s")


def _interrupt_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so temporary outputs are removed and locks released."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns the exit code (0, 2 for an error the user can act on, 130 on Ctrl-C)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    _interrupt_on_sigterm()
    training = bool(argv) and argv[0] == "train"
    args = None if training else build_parser().parse_args(attach_keyframes_values(argv))  # exits 2 on bad flags
    _setup_logging(timestamps=training)
    try:
        if training:
            _run.run_train(argv[1:])
        else:
            COMMANDS[args.command](args)
    except MagicFaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK

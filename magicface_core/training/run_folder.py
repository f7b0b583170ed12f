"""A training run's output folder, and what in it is the run's.

The folder may hold your own files, even under the names a run uses (your ``config.yaml`` passed as
``--config``, your ``logs/``). So every run records in ``magicface-run.json`` which of those names it
created and, for a folder of yours that it writes into, what was there before it. ``--overwrite``
deletes only what runs of this pack wrote, a run writes its config dump only over its own earlier dump,
and a lock inside the folder keeps a second run out while one is running.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

from ..errors import OutputPathError
from ..files import PARTIAL_SUFFIX as PARTIAL, atomic_path, exclusive_output

logger = logging.getLogger(__name__)

LEDGER = "magicface-run.json"
CONFIG_NAME = "config.yaml"
LOG_NAME = "train_log.csv"
EXPORT_NAME = "magicface.safetensors"
CHECKPOINTS = "checkpoints"
VALIDATION = "validation"
LOGS = "logs"
FILES = (CONFIG_NAME, LOG_NAME, EXPORT_NAME)
FOLDERS = (CHECKPOINTS, VALIDATION, LOGS)
YOURS = "yours"  # the ledger's mark of a file that was there before any run
# Settings that do not change what a run computes or writes: a re-run may differ in these.
_SAME_RUN_IGNORES = ("resume", "overwrite", "num_workers")
_STEP = re.compile(r"step-\d+")
# The names a run writes inside its folders (step-N checkpoints and grids, accelerate's TensorBoard project).
_WRITES_IN = {CHECKPOINTS: _STEP, VALIDATION: re.compile(r"step-\d+\.png"), LOGS: re.compile("magicface")}


def step_number(folder: Path) -> int:
    return int(folder.name.split("-")[1])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class RunFolder:
    """``--output-dir`` and its ledger. ``names`` maps each name a run uses that is present to ``None``
    (a run of ours created it: all of it is the run's), to :data:`YOURS` (your file) or to the list of
    entries your folder held before a run wrote into it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.ledger = self._read()

    @property
    def names(self) -> dict:
        return self.ledger["names"]

    def _read(self) -> dict:
        path = self.path / LEDGER
        if path.is_file():
            try:
                ledger = json.loads(path.read_text())
                if not isinstance(ledger, dict) or not isinstance(ledger.get("names"), dict):
                    raise ValueError("not a run record")
            except (OSError, ValueError) as exc:
                raise OutputPathError(
                    f"{path} cannot be read ({exc}): it records which files in {self.path} a training run wrote. "
                    "Choose another --output-dir (nothing in this one was changed)"
                ) from exc
            return ledger
        ledger = {"version": 1, "names": {}, "config_sha256": None, "settings": None}
        if self._written_before_ledgers():
            ledger["names"] = {n: None for n in FILES + FOLDERS if (self.path / n).exists()}
        return ledger

    def _written_before_ledgers(self) -> bool:
        """A run of this pack from before the ledger: its checkpoints hold accelerate's training state."""
        folder = self.path / CHECKPOINTS
        return folder.is_dir() and any(
            _STEP.fullmatch(p.name) and (p / "optimizer.bin").is_file() for p in folder.iterdir())

    # --- what is the run's --------------------------------------------------------------------
    def ours(self, name: str) -> bool:
        return name in self.names and self.names[name] is None

    def yours(self, name: str) -> bool:
        """A file or folder a run uses the name of, present, and not made by a run."""
        return (self.path / name).exists() and not self.ours(name)

    def entries(self, folder: str) -> list[Path]:
        """What runs wrote into ``folder`` (all of it when a run created the folder)."""
        path = self.path / folder
        state = self.names.get(folder, YOURS)  # not recorded: a folder of yours no run has written into
        if not path.is_dir() or state == YOURS:
            return []
        return sorted(p for p in path.iterdir() if state is None or p.name not in state)

    def _yours_in(self, folder: str) -> list[Path]:
        path = self.path / folder
        if not path.is_dir() or self.ours(folder):
            return []
        state = self.names.get(folder, YOURS)
        return sorted(p for p in path.iterdir() if state == YOURS or p.name in state)

    def checkpoints(self) -> list[Path]:
        """The complete checkpoints of the run, oldest first."""
        return sorted((p for p in self.entries(CHECKPOINTS) if p.is_dir() and _STEP.fullmatch(p.name)),
                      key=step_number)

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def has_progress(self) -> bool:
        """A checkpoint or the exported weights: what a restart would lose."""
        return bool(self.checkpoints()) or (self.ours(EXPORT_NAME) and (self.path / EXPORT_NAME).exists())

    def has_results(self) -> bool:
        """Anything a run computed: log rows, validation grids, TensorBoard logs."""
        return ((self.ours(LOG_NAME) and (self.path / LOG_NAME).exists())
                or bool(self.entries(VALIDATION)) or bool(self.entries(LOGS)) or self.has_progress())

    def partials(self) -> list[Path]:
        """Leftovers of an interrupted run: checkpoints and files written under a .partial name."""
        top = [p for p in self.path.glob("*" + PARTIAL) if any(p.name.startswith(f".{n}.") for n in FILES + (LEDGER,))]
        inside = [p for p in self.entries(CHECKPOINTS) + self.entries(VALIDATION) if p.name.endswith(PARTIAL)]
        return sorted(top) + inside

    # --- before a run ----------------------------------------------------------------------------
    def check(self, config) -> None:
        """Refuse a run that would replace or lose something; nothing is written."""
        if self.path.exists() and not self.path.is_dir():
            raise OutputPathError(f"--output-dir {self.path} is a file, not a folder: choose another --output-dir")
        for name in (LOG_NAME, EXPORT_NAME):
            if self.yours(name):
                raise OutputPathError(
                    f"{self.path / name} was not written by a training run, and a run writes that name: move it "
                    "elsewhere or choose another --output-dir"
                )
        for folder, pattern in _WRITES_IN.items():
            clash = [p for p in self._yours_in(folder) if pattern.fullmatch(p.name)]
            if clash:
                raise OutputPathError(
                    f"{clash[0]} was not written by a training run, and a run writes that name: move it "
                    "elsewhere or choose another --output-dir"
                )
        if config.resume or config.overwrite:
            return
        hint = ("pass --resume latest to continue it, or --overwrite to start over (which deletes its checkpoints, "
                "log, validation grids and exported weights, and nothing else)")
        if self.has_progress():
            raise OutputPathError(f"{self.path} already holds a training run; {hint}")
        changes = self.changed_settings(config)
        if self.has_results() and changes:
            listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())
            raise OutputPathError(
                f"{self.path} holds the log of a run that stopped before its first checkpoint, with other settings "
                f"({listed}); run it with the same settings to start it again, or {hint}"
            )
        # Otherwise the earlier run stopped before it wrote anything a restart loses (or is this very run:
        # started again it computes the same log and grids), so it starts over.

    def changed_settings(self, config) -> dict:
        saved = self.ledger.get("settings")
        if saved is None:
            return {}
        now = _settings(config)
        return {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}

    # --- a run starting (main process) -------------------------------------------------------------
    def start(self, config) -> None:
        """Clean up after an interrupted run (and, with --overwrite, remove the earlier run), then record
        what this run will write."""
        self.path.mkdir(parents=True, exist_ok=True)
        for leftover in self.partials():
            logger.warning("removing %s, left incomplete by an interrupted run", leftover)
            _remove(leftover)
        if config.overwrite:
            for name in FILES + FOLDERS:
                if self.ours(name):
                    _remove(self.path / name)
                elif isinstance(self.names.get(name), list):
                    for entry in self.entries(name):
                        _remove(entry)
            self.ledger.update(names={}, config_sha256=None)
        for name in FILES + FOLDERS:
            if name not in self.names and (self.path / name).exists():  # yours: recorded so it is never removed
                self.names[name] = YOURS if name in FILES else sorted(p.name for p in (self.path / name).iterdir())
            elif name not in self.names:
                self.names[name] = None
        self.ledger["settings"] = _settings(config)
        self.save()
        self.write_config(config)

    def write_config(self, config) -> None:
        """The run's settings as YAML, for reading and for --config; never over a file of yours (your
        --config, or a dump you have edited since)."""
        from .config import to_yaml

        path = self.path / CONFIG_NAME
        edited = path.exists() and self.ledger.get("config_sha256") != _sha256(path)
        if not self.ours(CONFIG_NAME) or edited:
            if self.ours(CONFIG_NAME):
                self.names[CONFIG_NAME] = YOURS
                self.save()
            logger.info("keeping your %s; this run's settings are recorded in %s", path, self.path / LEDGER)
            return
        with atomic_path(path) as temporary:
            temporary.write_text(to_yaml(config))
        self.ledger["config_sha256"] = _sha256(path)
        self.save()

    def save(self) -> None:
        with atomic_path(self.path / LEDGER) as temporary:
            temporary.write_text(json.dumps(self.ledger, indent=1))

    def lock(self):
        """Held for a whole run: a second run on this folder is refused while it lasts."""
        return exclusive_output(self.path, option="--output-dir", inside=True)


def _settings(config) -> dict:
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in _SAME_RUN_IGNORES}

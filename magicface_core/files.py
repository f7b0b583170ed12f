"""Writing outputs without losing anything a user owns.

An output never replaces one of the inputs, replaces an existing file only when asked
(``--overwrite``), and appears all at once: it is written under a temporary name in the same
folder and renamed into place, so a crash leaves the old file (or nothing), never half a file.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Iterable, Iterator

from .errors import OutputPathError

PARTIAL_SUFFIX = ".partial"


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_folder_writable(output: str | os.PathLike, option: str = "--out") -> None:
    """Refuse an output whose folder cannot be made or written in (read-only, or a file on the way)."""
    folder = Path(output).absolute().parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"cannot write {output}: {existing} is a file, not a folder; choose another {option}")
    # os.access also answers for read-only file systems, and as the user the run is (root writes anywhere).
    if not os.access(existing, os.W_OK | os.X_OK):
        where = (f"its folder {existing} is" if existing == folder
                 else f"its folder would be made in {existing}, which is")
        raise OutputPathError(f"cannot write {output}: {where} read-only for you; choose another {option}")


def check_outputs(outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike | None] = (),
                  overwrite: bool = False, option: str = "--out") -> list[Path]:
    """Refuse outputs that are one of ``inputs`` (always), exist already (unless ``overwrite``), or sit
    where nothing can be written."""
    inputs = [Path(p) for p in inputs if p is not None]
    checked = []
    for output in outputs:
        output = Path(output)
        for source in inputs:
            if _same(output, source):
                raise OutputPathError(
                    f"the output {output} is the input {source}: writing it would replace your file. "
                    f"Choose another {option}."
                )
        if output.is_dir() and output.suffix:  # e.g. a folder named edited.png
            raise OutputPathError(f"{output} is a folder; give a file name for {option}")
        if output.exists() and not overwrite:
            raise OutputPathError(f"{output} already exists; choose another {option}, or pass --overwrite to replace it")
        check_folder_writable(output, option)
        checked.append(output)
    return checked


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True, keep_suffix: bool = False) -> Iterator[Path]:
    """A temporary path next to ``path`` to write to; renamed to ``path`` when the block succeeds.

    On any error the temporary file is removed and ``path`` is left as it was. Without
    ``overwrite`` an existing ``path`` (e.g. made by another process meanwhile) is not replaced.
    The name is unique per call, so two processes never write the same temporary file;
    ``keep_suffix`` ends it in ``path``'s suffix for writers that pick a format from it (PyAV).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}"
                               + (path.suffix if keep_suffix else ""))
    try:
        yield temporary
        if not overwrite and path.exists():
            raise OutputPathError(f"{path} already exists; pass --overwrite to replace it")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive_output(path: str | os.PathLike, option: str = "--out", inside: bool = False) -> Iterator[None]:
    """Hold a lock beside ``path`` (in it, for a folder that is the output: ``inside``) for the whole
    write: a second run on the same output is refused."""
    from filelock import FileLock, Timeout  # huggingface_hub's own dependency

    path = Path(path)
    (path if inside else path.parent).mkdir(parents=True, exist_ok=True)
    lock_path = path / ".magicface.lock" if inside else path.with_name(f".{path.name}.lock")
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise OutputPathError(
            f"another run is writing {path} right now; wait for it to finish or choose another {option}"
        ) from None
    try:
        yield
    finally:
        lock.release()
        lock_path.unlink(missing_ok=True)

"""Atomic writes: a file (or a folder of frames) appears at its path whole, or not at all."""
from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vidreal.errors import OutputError
from vidreal.runtime import first_line


@contextmanager
def atomic_output(path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds.

    The temporary name is ``.<stem>.tmp-<random><suffix>`` in the same folder (same extension,
    so encoders choose the format from it; same filesystem, so ``os.replace`` is atomic).
    On any exception - KeyboardInterrupt included - the temporary file (or folder) is removed
    and an existing file at ``path`` is left untouched. A missing output folder is created.
    Raises OutputError when the folder cannot be created, ``path`` is a folder, or the block
    wrote nothing.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError("output path is a folder, expected a file name", path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder ({first_line(exc)})", path.parent) from exc
    tmp = path.with_name(f".{path.stem}.tmp-{secrets.token_hex(4)}{path.suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError("nothing was written", path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(path, check=None) -> Iterator[Path]:
    """Yield a new empty folder beside ``path``; it becomes ``path`` when the block succeeds.

    The temporary name is ``.<name>.tmp-<random>`` in the same folder. A folder already at ``path``
    is replaced: ``check(path)`` (when given) is called first and may raise to keep it; it is then
    moved aside (``.<name>.old-<random>``), the new folder renamed onto ``path`` and the old one
    removed. On any exception - KeyboardInterrupt included - the temporary folder is removed and
    ``path`` is left as it was. A missing parent folder is created. OutputError when the parent
    cannot be created or ``path`` is a file.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError("output path is a file, expected a folder", path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
        tmp.mkdir()
    except OSError as exc:
        raise OutputError(f"cannot create output folder ({first_line(exc)})", path.parent) from exc
    try:
        yield tmp
        if path.exists() and check is not None:
            check(path)
        try:
            _swap_folder(tmp, path)
        except OSError as exc:
            raise OutputError(f"cannot move the folder into place ({first_line(exc)})", path) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_folder(new: Path, path: Path) -> None:
    """Rename the folder ``new`` onto ``path``; a folder there is moved aside first, then removed."""
    if not path.exists():
        os.rename(new, path)
        return
    old = path.with_name(f".{path.name}.old-{secrets.token_hex(4)}")
    os.rename(path, old)
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)

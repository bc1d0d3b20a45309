"""Atomic writes: a file appears at its path whole, or not at all."""
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

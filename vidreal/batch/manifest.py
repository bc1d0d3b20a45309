"""The batch manifest: ``OUT_DIR/manifest.jsonl``, one JSON record per processed item.

Record fields: ``input`` and ``output`` (paths relative to the input root and to OUT_DIR),
``status`` ("done" | "failed" | "rejected"), ``error`` (one line, or null), ``frames``, ``seconds``,
``config`` (``TranslateConfig.fingerprint()``), ``prompt``, ``time`` (UTC, ISO 8601); with the gate
on, ``gate`` (its thresholds), ``scores`` ({"edge_f1", "pose_pck"}) and, for a rejected item,
``rejected`` (the reasons, e.g. "edge_f1 0.412 < 0.5"). The file is UTF-8; a file name that is not
(Linux names are bytes) is written with JSON escapes (``"bad\\udcff.mp4"``) that read back to the same path.

The file is append-only; each record is written with one ``write`` then ``flush`` + ``fsync``, so a
crash loses at most the record being written. Reading tolerates that torn last line (opening for
a new run cuts it off) and the latest record of an item wins. One batch at a time: the manifest is
locked while a run holds it. A manifest that is a symlink is refused, never followed. A write that
fails (a full disk) stops the batch with one line; outputs already written stay (each is whole)
and a rerun redoes the items without a record.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

from vidreal.errors import OutputError

try:
    import fcntl
except ImportError:  # Windows: no advisory lock
    fcntl = None

MANIFEST_NAME = "manifest.jsonl"
# vidreal.io.atomic_output's temporary names: ".<stem>.tmp-<8 hex><suffix>"
TEMP_NAME = re.compile(r"^\..*\.tmp-[0-9a-f]{8}(\.[A-Za-z0-9]+)?$")

log = logging.getLogger(__name__)


def parse_records(data: bytes) -> tuple[list[dict], int]:
    """Records of manifest bytes, and how many lines were unreadable (a torn last line included)."""
    records, bad = [], 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("input"), str):
            records.append(record)
        else:
            bad += 1
    return records, bad


def refuse_symlink(path: Path, what: str) -> None:
    """OutputError when ``path`` is a symlink: the batch's own files are never followed out of OUT_DIR."""
    if Path(path).is_symlink():
        raise OutputError(f"{what} is a symlink (to {os.readlink(path)}); vidreal does not follow it: remove it", path)


def read_manifest(path) -> dict[str, dict]:
    """``{input: latest record}`` of a manifest file ({} when it does not exist; OutputError when
    it is a symlink)."""
    path = Path(path)
    refuse_symlink(path, "the manifest")
    if not path.exists():
        return {}
    records, _ = parse_records(path.read_bytes())
    return {record["input"]: record for record in records}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Manifest:
    """The open manifest of one run: ``latest`` {input: record}, :meth:`append`, :meth:`close`.

    Opening locks the file (OutputError when another batch holds it) and cuts off a torn last line
    left by a killed run, so new records start on a line of their own.
    """

    def __init__(self, path):
        self.path = Path(path)
        refuse_symlink(self.path, "the manifest")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o644)
            self._file = os.fdopen(fd, "a+b")
        except OSError as exc:
            raise OutputError(f"cannot open the manifest ({exc.strerror or exc})", self.path) from None
        if fcntl is not None:
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self._file.close()
                raise OutputError("another vidreal batch is running on this output folder", self.path.parent) from None
        self._file.seek(0)
        data = self._file.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.warning("manifest: dropping a torn last line left by an interrupted run")
            self._file.truncate(keep)
            os.fsync(self._file.fileno())
            data = data[:keep]
        records, bad = parse_records(data)
        if bad:
            log.warning("manifest: %d unreadable line(s) ignored", bad)
        self.latest: dict[str, dict] = {record["input"]: record for record in records}

    def append(self, record: dict) -> None:
        """Write one record durably and make it the item's latest."""
        # A name that is not UTF-8 holds os.fsdecode's lone surrogates: each is written as its JSON
        # escape ("\udcff"), which json.loads reads back to the same name.
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        try:
            self._file.seek(0, os.SEEK_END)
            self._file.write(line.encode("utf-8", "backslashreplace"))
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:  # e.g. a full disk: the item's output stays, a rerun redoes it
            raise OutputError(f"cannot write the manifest ({exc.strerror or exc})", self.path) from None
        self.latest[record["input"]] = record

    def close(self) -> None:
        self._file.close()  # releases the lock

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def clean_temp_files(out_dir) -> list[Path]:
    """Remove the temporary files a killed run left under ``out_dir`` - only names made by
    ``vidreal.io.atomic_output`` (``.<stem>.tmp-<8 hex><suffix>``). Returns what was removed."""
    removed = []
    for folder, dirs, files in os.walk(out_dir, followlinks=False):
        for name in files + dirs:
            if not TEMP_NAME.match(name):
                continue
            path = Path(folder) / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                dirs.remove(name)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed

"""What a batch translates: walking a folder or reading a split list, output names, safety.

Every item is named by its path relative to the input root (POSIX, ``/``), which is also its key
in the manifest. Outputs mirror that relative path under OUT_DIR (see :func:`output_rel`).
"""
from __future__ import annotations

import fnmatch
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from vidreal.errors import ConfigError, InputError
from vidreal.io import IMAGE_EXTS, VIDEO_EXTS
from vidreal.runtime import read_text

# Output extension per input extension (lower case). Containers that take the default libx264
# codec keep their extension; the others (.avi, .webm) become .mp4. Lossless or common image
# formats keep theirs; .bmp and .tif(f) become .png.
OUTPUT_EXT = {
    ".mp4": ".mp4", ".mov": ".mov", ".mkv": ".mkv", ".m4v": ".m4v", ".avi": ".mp4", ".webm": ".mp4",
    ".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpeg", ".webp": ".webp",
    ".bmp": ".png", ".tif": ".png", ".tiff": ".png",
}


@dataclass
class Entry:
    """One input as named by the walk or the list: ``rel`` relative to the input root; ``rest`` is
    the remainder of its list line (label columns with their leading separator), '' for a walk."""

    rel: str
    rest: str = ""


def parse_extensions(extensions) -> frozenset[str]:
    """``".mp4,.png"`` / ``["mp4", ".PNG"]`` -> {".mp4", ".png"}; None -> every supported type."""
    if extensions is None:
        return IMAGE_EXTS | VIDEO_EXTS
    if isinstance(extensions, str):
        extensions = extensions.split(",")
    out = set()
    for ext in extensions:
        ext = ext.strip().lower()
        if not ext:
            continue
        ext = ext if ext.startswith(".") else "." + ext
        if ext not in IMAGE_EXTS | VIDEO_EXTS:
            supported = " ".join(sorted(IMAGE_EXTS | VIDEO_EXTS))
            raise ConfigError(f"unsupported extension {ext!r} in extensions; supported: {supported}")
        out.add(ext)
    if not out:
        raise ConfigError(f"extensions selects no file type, got {extensions!r}")
    return frozenset(out)


def matches(rel: str, pattern: str | None) -> bool:
    """fnmatch-style ``pattern`` against the relative path or any trailing part of it (``*``
    also crosses folders): ``*.mp4``, ``Halt/*``, ``ground/*``, ``*/Halt/c0*`` all select
    ``ground/Halt/c0.mp4``."""
    if pattern is None:
        return True
    parts = rel.split("/")
    return any(fnmatch.fnmatchcase("/".join(parts[i:]), pattern) for i in range(len(parts)))


def walk(root: Path, pattern: str | None = None, extensions=None) -> list[Entry]:
    """Media files under ``root``, recursively, sorted by relative path (deterministic).

    Hidden files and folders (name starting with ``.``) are skipped; symlinked folders are not
    entered; symlinked files are listed (the batch refuses those pointing outside ``root``).
    """
    exts = parse_extensions(extensions)
    rels = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(folder).relative_to(root)
        for name in files:
            if name.startswith(".") or Path(name).suffix.lower() not in exts:
                continue
            rel = (base / name).as_posix()
            if matches(rel, pattern):
                rels.append(rel)
    return [Entry(rel) for rel in sorted(rels)]


_LIST_LINE = re.compile(r"^(\S+)(.*)$")


def read_list(path: Path, pattern: str | None = None, extensions=None) -> list[Entry]:
    """Entries of a split list: one ``relative/path [label columns...]`` per line (RoCoG
    ``annotations/*.txt``, VisDA ``image_list.txt``). Blank lines and ``#`` comments are skipped;
    a path listed twice is kept once. ``pattern``/``extensions`` filter it as they filter a walk
    (``extensions`` only when given)."""
    text = read_text(path, "list file")
    exts = None if extensions is None else parse_extensions(extensions)
    entries, seen = [], set()
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        rel, rest = _LIST_LINE.match(line.strip()).groups()
        if rel in seen or not matches(rel, pattern):
            continue
        if exts is not None and PurePosixPath(rel).suffix.lower() not in exts:
            continue
        seen.add(rel)
        entries.append(Entry(rel, rest))
    return entries


def output_rel(rel: str) -> str:
    """The output path (relative to OUT_DIR) of the input ``rel``: same folders and name, the
    extension mapped by :data:`OUTPUT_EXT` (``a/b.avi`` -> ``a/b.mp4``, ``x.png`` -> ``x.png``)."""
    p = PurePosixPath(rel)
    ext = OUTPUT_EXT.get(p.suffix.lower())
    if ext is None:
        return rel
    return rel if ext == p.suffix.lower() else str(p.with_suffix(ext))


def check_dirs(in_root: Path, out_dir: Path) -> None:
    """Refuse an input root that does not exist and folders that overlap: outputs inside the input
    root would be re-read as inputs, inputs inside OUT_DIR could be overwritten by outputs."""
    if not in_root.is_dir():
        raise InputError("input folder not found" if not in_root.exists() else "input is not a folder", in_root)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"OUT_DIR is a file, expected a folder: {out_dir}")
    a, b = in_root.resolve(), out_dir.resolve()
    if a == b:
        raise ConfigError(f"IN_DIR and OUT_DIR are the same folder ({a}); choose another output folder")
    if b.is_relative_to(a):
        raise ConfigError(f"OUT_DIR {b} is inside IN_DIR {a}: outputs would be read as inputs; choose a folder outside it")
    if a.is_relative_to(b):
        raise ConfigError(f"IN_DIR {a} is inside OUT_DIR {b}: outputs could overwrite inputs; choose a folder outside it")


def safe_paths(in_root: Path, out_dir: Path, rel: str) -> tuple[Path, Path, str]:
    """(input path, output path, output rel) of the item ``rel``, after the safety checks.

    Raises InputError when the entry leaves the input root (absolute, ``..``), when the input is a
    symlink loop, a broken symlink or a symlink resolving outside it, or when the output would land outside OUT_DIR (a symlinked
    folder inside OUT_DIR). ``in_root``/``out_dir`` must be resolved.
    """
    norm = posixpath.normpath(rel.replace("\\", "/"))
    if posixpath.isabs(norm) or norm == ".." or norm.startswith("../") or norm == ".":
        raise InputError(f"path {rel!r} leaves the input folder")
    src = in_root / norm
    try:
        real = src.resolve()
    except (RuntimeError, OSError) as exc:  # RuntimeError: Python < 3.13's "Symlink loop"
        raise InputError(f"symlink loop: the link points back to itself ({exc})") from None
    if src.is_symlink() and not real.exists():
        raise InputError(f"broken symlink (points to {real}, which does not exist)")
    if not real.is_relative_to(in_root):
        raise InputError(f"symlink points outside the input folder (to {real})")
    out_rel = output_rel(norm)
    dst = out_dir / out_rel
    if not dst.parent.resolve().is_relative_to(out_dir) or dst.name in ("", ".", ".."):
        raise InputError(f"output {out_rel!r} would be written outside OUT_DIR (a symlinked folder?)")
    return src, dst, out_rel

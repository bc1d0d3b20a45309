"""Prompts of inputs: the config's template, or a prompts file (``vidreal caption`` output).

One owner for ``vidreal translate`` and ``vidreal batch``:

    prompts = Prompts(config, root)       # root: the batch's input folder / the input's folder
    prompts("car/x1.png")                 # an item by its path relative to root (batch)
    prompts.for_path("data/car/x1.png")   # one file (translate)

File format, UTF-8 (a leading BOM is dropped), blank lines and ``#`` comments skipped, one of two forms:
  * ``relative/path<TAB>caption`` lines (what ``vidreal caption`` writes): an exact mapping;
    paths relative to the input root or absolute. ``for_path`` takes the longest key that the
    file's absolute path ends with (``car/x1.png`` and ``x1.png`` both name ``data/car/x1.png``).
    An input missing from the mapping fails with a one-line reason.
  * plain lines, one caption each: every input draws one at random, from a generator seeded
    with ``(config.seed, relative path)`` - reproducible, independent of order and workers.
Without a prompts file: ``config.prompt_for(path)``. ``{class_name}`` (the input's parent folder)
and ``{stem}`` (its name without extension) are filled in, in captions as in the template.
"""
from __future__ import annotations

import hashlib
import posixpath
from pathlib import Path

from vidreal.errors import InputError
from vidreal.runtime import read_text


def read_prompts(path) -> list[tuple[str | None, str]]:
    """(key, prompt) per line of a prompts file: either every line ``key<TAB>prompt``, or every
    line a plain prompt (key None). Blank lines and ``#`` comments are skipped. InputError when
    the file is missing, holds no prompt, or mixes the two forms."""
    lines = [line.strip() for line in read_text(path, "prompts file").splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise InputError("prompts file holds no prompt", path)
    if not any("\t" in line for line in lines):
        return [(None, line) for line in lines]
    out: list[tuple[str | None, str]] = []
    for number, line in enumerate(lines, 1):
        key, tab, prompt = line.partition("\t")
        if not tab or not key.strip() or not prompt.strip():
            raise InputError(f"line {number} {line[:60]!r}: expected 'relative/path<TAB>caption'", path)
        out.append((key.strip(), prompt.strip()))
    return out


class Prompts:
    """The prompt of each input under ``root`` (see the module docstring). ``{class_name}`` of an
    item at the top of ``root`` is ``root``'s own name."""

    def __init__(self, config, root: Path):
        self.config = config
        self.root = Path(root).resolve()
        self.mapping: dict[str, str] | None = None
        self.captions: list[str] | None = None
        if config.prompts_file:
            self._load(Path(config.prompts_file))

    def _load(self, path: Path) -> None:
        pairs = read_prompts(path)
        if pairs[0][0] is None:
            self.captions = [caption for _, caption in pairs]
            return
        self.mapping = {}
        for key, caption in pairs:
            key = key.replace("\\", "/")
            if posixpath.isabs(key) and Path(key).resolve().is_relative_to(self.root):
                key = Path(key).resolve().relative_to(self.root).as_posix()
            self.mapping[posixpath.normpath(key)] = caption

    def __call__(self, rel: str) -> str:
        """The prompt of the item ``rel`` (relative to the input root). InputError when a mapping
        has no caption for it."""
        if self.mapping is not None:
            caption = self.mapping.get(posixpath.normpath(rel))
            if caption is None:
                raise InputError(f"no caption for this item in the prompts file {self.config.prompts_file}")
            return _fill(caption, self.root / rel)
        if self.captions is not None:
            digest = hashlib.sha256(f"{self.config.seed}\0{rel}".encode()).digest()
            return _fill(self.captions[int.from_bytes(digest[:8], "big") % len(self.captions)], self.root / rel)
        return self.config.prompt_for(self.root / rel)

    def for_path(self, path) -> str:
        """The prompt of one file (``vidreal translate``): with a mapping, the longest key that
        the file's absolute path ends with (an absolute key, a path relative to ``root``, or
        any trailing part such as ``car/x1.png`` or ``x1.png``)."""
        path = Path(path)
        rel = path.name
        if self.mapping is None:
            return self(rel) if self.captions is not None else self.config.prompt_for(path)
        parts = path.absolute().as_posix().split("/")
        for i in range(len(parts)):
            caption = self.mapping.get(posixpath.normpath("/".join(parts[i:]) or "/"))
            if caption is not None:
                return _fill(caption, path)
        raise InputError(f"no caption for this file in the prompts file {self.config.prompts_file}", path)


def _fill(caption: str, path: Path) -> str:
    return caption.replace("{class_name}", path.parent.name).replace("{stem}", path.stem)

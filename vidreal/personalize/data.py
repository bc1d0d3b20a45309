"""Training data for DreamBooth and Textual Inversion: image folders and a resumable data order.

* :func:`find_images` (recursive, sorted), :func:`check_images` (unreadable files dropped with a
  warning, none left -> InputError), :func:`load_image` (float32 (3, R, R) in [-1, 1], short side
  resized to R then centre-cropped);
* :func:`sample_indices` ``(seed, stream, position)``: an endless epoch-wise shuffled order, so a
  resumed run sees exactly the data an uninterrupted run sees.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vidreal.errors import InputError
from vidreal.io import probe, read_video
from vidreal.runtime import IMAGE_EXTS

log = logging.getLogger(__name__)


def find_images(sources: str | Path | Sequence[str | Path], what: str = "images") -> list[Path]:
    """Image files of a folder (recursive) or of a list of files/folders, in sorted path order.

    Raises InputError when a source does not exist or nothing with an image extension is found.
    """
    if isinstance(sources, (str, Path)):
        sources = [sources]
    found: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found += [p for p in source.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file()]
        elif source.is_file():
            found.append(source)
        else:
            raise InputError(f"{what} folder not found", source)
    if not found:
        where = sources[0] if len(sources) == 1 else None
        raise InputError(f"no {what} found (extensions: {' '.join(sorted(IMAGE_EXTS))})", where)
    return sorted(dict.fromkeys(found))


def check_images(paths: Sequence[Path], what: str = "images") -> list[Path]:
    """Keep the images whose header reads; warn about the others; InputError when none is left."""
    good, bad = [], []
    for path in paths:
        try:
            info = probe(path)
            (good if info.is_image else bad).append(path)
        except InputError:
            bad.append(path)
    if bad:
        log.warning("skipping %d unreadable %s (first: %s)", len(bad), what, bad[0])
    if not good:
        raise InputError(f"none of the {len(paths)} {what} is a readable image", paths[0].parent)
    return good


def load_image(path: Path, resolution: int, flip: bool = False) -> torch.Tensor:
    """float32 (3, R, R) in [-1, 1]: short side resized to ``resolution`` (bicubic), centre crop."""
    from PIL import Image

    rgb = read_video(path).frames[0]
    image = Image.fromarray(rgb)
    w, h = image.size
    scale = resolution / min(w, h)
    size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
    image = image.resize(size, Image.BICUBIC)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    if flip:
        array = array[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


@functools.lru_cache(maxsize=8)
def _permutation(seed: int, stream: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, stream, epoch]).permutation(n)


def sample_indices(seed: int, stream: int, n: int, start: int, count: int) -> list[int]:
    """Items ``start .. start+count-1`` of an endless epoch-wise shuffled order of ``range(n)``."""
    return [int(_permutation(seed, stream, k // n, n)[k % n]) for k in range(start, start + count)]

"""Still images and frame pixels: Pillow reads and writes stills (and folders of PNG frames) as uint8 RGB,
OpenCV resizes frames."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from vidreal.errors import InputError, OutputError
from vidreal.runtime import first_line

_EXIF_ORIENTATION = 0x0112
FRAME_NAME = "frame_{:06d}.png"  # the files of a frame-folder output, from frame_000000.png
_FRAME_FILE = re.compile(r"^frame_\d{6,}\.png$")


def image_to_rgb(image: Image.Image) -> np.ndarray:
    """Convert a Pillow image of any mode to uint8 (H, W, 3) RGB.

    * grayscale ``1``/``L`` -> the value replicated to 3 channels;
    * 16/32-bit integer grayscale (``I;16*``, ``I``) -> clipped to [0, 65535], then ``v >> 8``
      (floor(v / 256): the high byte, as Pillow itself reduces 16-bit colour PNGs), replicated;
    * float ``F`` -> treated as 0..255 (Pillow's convention): rounded, clipped, replicated;
    * palette ``P`` -> RGB through its palette;
    * alpha (``RGBA``/``LA``/``PA``, or a ``transparency`` key) -> composited over a WHITE
      background: ``round(c * a / 255 + 255 * (1 - a / 255))``, so alpha 0 gives (255, 255, 255);
    * ``CMYK``/``YCbCr``/others -> Pillow's ``convert("RGB")``.
    EXIF orientation is not applied here (see :func:`read_video`, which applies it first).
    """
    mode = image.mode
    if mode.startswith("I"):
        values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        return _gray_to_rgb((values >> 8).astype(np.uint8))
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float32))
        return _gray_to_rgb(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    if mode in ("1", "L") and "transparency" not in image.info:
        return _gray_to_rgb(np.asarray(image.convert("L")))
    if "A" in mode or "a" in mode or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA")).astype(np.uint16)
        color, alpha = rgba[..., :3], rgba[..., 3:]
        return ((color * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    return np.asarray(image.convert("RGB"))


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of a still as shown, EXIF orientation applied; InputError when unreadable."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8):
                width, height = height, width
    except Exception as exc:
        raise InputError(f"not a readable image ({first_line(exc)})", path) from exc
    return width, height


def _read_image(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB, EXIF orientation applied, converted as :func:`image_to_rgb` says."""
    try:
        with Image.open(path) as image:
            image.load()
            return image_to_rgb(ImageOps.exif_transpose(image))
    except Exception as exc:
        raise InputError(f"not a readable image ({first_line(exc)})", path) from exc


def _save_image(tmp: Path, frames: list[np.ndarray], path: Path) -> None:
    if len(frames) != 1:
        raise OutputError(f"an image output takes exactly 1 frame, got {len(frames)}; "
                          "use a video extension", path)
    options = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg", ".webp") else {}
    try:
        Image.fromarray(np.ascontiguousarray(frames[0])).save(tmp, **options)
    except OSError as exc:
        raise OutputError(f"cannot write image ({first_line(exc)})", path) from exc


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (T, h, w, C) -> (T, height, width, C): area filter to shrink, bicubic to enlarge; no-op when equal."""
    import cv2

    if frames.shape[1:3] == (height, width):
        return frames
    interpolation = cv2.INTER_AREA if height * width < frames.shape[1] * frames.shape[2] else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (width, height), interpolation=interpolation) for f in frames])


def is_frame_folder(path) -> bool:
    """The output rule: a path without an extension (``out/frames``, ``out/frames/``) is a folder of
    PNG frames (:data:`FRAME_NAME`); any other path is one file."""
    return Path(path).suffix == ""


def check_frame_folder(path) -> None:
    """OutputError (one line) unless the frame-folder output ``path`` is new, an empty folder or an
    earlier frame output (``frame_NNNNNN.png`` files only): such a folder is replaced whole, so no
    other file may be lost with it."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise OutputError("a path without extension is a folder of PNG frames, and a file or link is there", path)
    if path.is_dir():
        others = sorted(p.name for p in path.iterdir() if not _FRAME_FILE.match(p.name))
        if others:
            raise OutputError(f"the folder holds {others[0]!r}, not only frames; frames replace their folder "
                              "whole: name a new or empty folder, or an earlier frame output", path)


def natural_key(name: str) -> list:
    """Sort key in natural order of names: ``frame_2.png`` before ``frame_10.png`` (case-insensitive)."""
    parts = re.split(r"(\d+)", name.lower())
    parts[1::2] = [int(digits) for digits in parts[1::2]]
    return parts


def _save_frame(folder: Path, index: int, frame: np.ndarray, path: Path) -> None:
    """Frame ``index`` (uint8 (H, W, 3) RGB) as ``folder/frame_<index>.png``; OutputError naming ``path``."""
    try:
        Image.fromarray(np.ascontiguousarray(frame)).save(folder / FRAME_NAME.format(index))
    except OSError as exc:
        raise OutputError(f"cannot write frame {index} ({first_line(exc)})", path) from exc

"""Reading media: probe a video, an image or a folder of images, decode its frames whole, in chunks
or by index.

Videos are probed with PyAV first (safe on junk, exact frame rate), then decoded with decord;
PyAV takes over where decord 0.6 fails (a few tiny widths). Stills are read by
:mod:`vidreal.io.images`. A folder of images (:class:`FrameFolder`) is a clip whose frames are its
files in natural order of names, at a rate given (default :data:`FOLDER_FPS`). Every failure on a
bad input raises a one-line InputError.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import decord
import numpy as np

from vidreal.checks import positive_int, rate
from vidreal.errors import InputError
from vidreal.io.images import _image_size, _read_image, natural_key
from vidreal.runtime import IMAGE_EXTS, VIDEO_EXTS, first_line

decord.logging.set_level(decord.logging.QUIET)  # its FFmpeg prints "[h264 @ 0x...]" lines on bad data
FOLDER_FPS = Fraction(24)  # the rate of a folder of images when none is given


@dataclass
class Clip:
    """Decoded media. ``frames``: uint8 (T, H, W, 3) RGB; ``fps``: exact rate, ``None`` for images."""

    frames: np.ndarray
    fps: Fraction | None
    path: Path
    has_audio: bool


@dataclass
class VideoInfo:
    """What :func:`probe` learns without decoding frames."""

    path: Path
    n_frames: int
    fps: Fraction | None
    width: int
    height: int
    has_audio: bool
    is_image: bool
    # Variable frame rate only: float64 (T,) seconds of each frame from the first (else None;
    # ``fps`` is then the average rate).
    timestamps: np.ndarray | None = None


def is_image_path(path) -> bool:
    """True when ``path`` has one of :data:`IMAGE_EXTS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTS


def probe(path, fps=None) -> VideoInfo:
    """Frame count, exact fps, size and audio presence of a video, image or folder of images
    (``fps``: its rate, default :data:`FOLDER_FPS`; files ignore it), without decoding it.

    Raises InputError on a missing, empty, corrupt or unsupported file, or a video without frames.
    """
    path = _check_input(path)
    if path.is_dir():
        return FrameFolder(path, fps).info
    if is_image_path(path):
        return _probe_image(path)
    info, _ = _open_video(path)
    return info


class Media:
    """A video, image or folder of images opened once: ``info`` (:class:`VideoInfo`) at once, frames
    by :meth:`chunks`. Made by :func:`open_media`; the input is validated there."""

    def __init__(self, path, fps=None):
        path = _check_input(path)
        self.path = path
        self._image = self._reader = self._folder = None
        if path.is_dir():
            self._folder = FrameFolder(path, fps)
            self.info = self._folder.info
        elif is_image_path(path):
            self._image = _read_image(path)
            height, width = self._image.shape[:2]
            self.info = VideoInfo(path, 1, None, width, height, False, True)
        else:
            self.info, self._reader = _open_video(path)

    def chunks(self, chunk_size: int = 16, indices=None) -> Iterator[np.ndarray]:
        """Yield uint8 (n, H, W, 3) RGB chunks of ``chunk_size`` frames (the last may be shorter);
        an image yields one (1, H, W, 3) chunk. Decodes one chunk at a time.

        indices: only these frames (increasing frame numbers in ``[0, n_frames)``, e.g. a
        ``vidreal.selection.Plan``'s), ``chunk_size`` of them per decord ``get_batch``; the
        others are never decoded into frames. None: every frame."""
        positive_int("chunk_size", chunk_size)
        if indices is not None:
            indices = np.asarray(indices, dtype=np.int64)
            if indices.ndim != 1 or indices.size == 0 or np.any(np.diff(indices) <= 0) \
                    or indices[0] < 0 or indices[-1] >= self.info.n_frames:
                raise ValueError(f"indices must be increasing frame numbers in [0, {self.info.n_frames}), "
                                 f"got {indices!r}")
        if self._image is not None:
            return iter([self._image[None]])
        if self._folder is not None:
            return self._folder.chunks(int(chunk_size), indices)
        return _iter_chunks(self.path, self._reader, self.info.n_frames, int(chunk_size), indices)


def open_media(path, fps=None) -> Media:
    """Open a video, image or folder of images once: ``media.info`` is what :func:`probe` says,
    ``media.chunks(n)`` yields what :func:`iter_video` yields (``fps``: a folder's rate, default
    :data:`FOLDER_FPS`). Raises InputError as :func:`probe` does."""
    return Media(path, fps)


def read_video(path) -> Clip:
    """Decode a whole video (or image) into a :class:`Clip`.

    Returns frames uint8 (T, H, W, 3) RGB; an image gives T == 1 and ``fps=None``.
    For long videos prefer :func:`iter_video`, which holds one chunk at a time.
    """
    media = open_media(path)
    chunks = list(media.chunks(64))
    frames = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    return Clip(frames, media.info.fps, media.path, media.info.has_audio)


def iter_video(path, chunk_size: int = 16, indices=None) -> Iterator[np.ndarray]:
    """Yield uint8 (n, H, W, 3) RGB chunks of ``chunk_size`` frames (the last may be shorter).

    Decodes one chunk at a time; the chunks concatenated equal ``read_video(path).frames``
    (``read_video(path).frames[indices]`` with ``indices``: increasing frame numbers, only those
    decoded; see ``vidreal.selection``). The file is validated when this is called, not at the
    first ``next()``. An image yields one (1, H, W, 3) chunk.
    """
    positive_int("chunk_size", chunk_size)
    return open_media(path).chunks(chunk_size, indices)


def quick_probe(path) -> VideoInfo:
    """Frame count and rate from the container alone (PyAV; no decoder opened, no frame times):
    about 4x faster than :func:`probe`, for counting the frames of a whole dataset
    (``vidreal batch --estimate``). The count is the container's, which decord's may rarely differ
    from. Raises InputError as :func:`probe` does for a file that cannot be opened."""
    path = _check_input(path)
    if path.is_dir():
        return FrameFolder(path).info
    if is_image_path(path):
        return _probe_image(path)
    return _container_info(path)


def read_frames(path, indices) -> np.ndarray:
    """Decode only the frames ``indices`` of a video: uint8 (N, H, W, 3) RGB, in the given order.

    indices: frame numbers in ``[0, n_frames)``, any order, repeats allowed (a looped clip); each
    distinct frame is decoded once (decord ``get_batch``). An image is a one-frame clip.
    Raises InputError for a bad file or frames that cannot be decoded, ValueError for indices out
    of range.
    """
    indices = np.asarray(indices)
    if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices must be a non-empty 1-D sequence of integers, got {indices!r}")
    path = _check_input(path)
    folder = FrameFolder(path) if path.is_dir() else None
    if folder is not None:
        n_frames, reader = folder.info.n_frames, None
    elif is_image_path(path):
        n_frames, reader = 1, None
    else:
        info, reader = _open_video(path)
        n_frames = info.n_frames
    if indices.min() < 0 or indices.max() >= n_frames:
        raise ValueError(f"indices must lie in [0, {n_frames}), got {indices.min()}..{indices.max()} ({path})")
    unique, inverse = np.unique(indices, return_inverse=True)
    if folder is not None:
        return np.concatenate(list(folder.chunks(64, unique)))[inverse]
    if reader is None:
        return _read_image(path)[None][inverse]
    try:
        frames = reader.get_batch(unique.tolist()).asnumpy()
    except decord.DECORDError as exc:
        if "must exactly match" not in str(exc):
            raise InputError(f"cannot decode frames {unique[0]}..{unique[-1]} ({first_line(exc)})", path) from exc
        frames = np.concatenate(list(_pyav_chunks(path, 64)))[unique]  # decord's tiny-width bug
    return frames[inverse]


def _check_input(path) -> Path:
    """Path checks shared by every reader; one-line InputError for each problem."""
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            try:
                os.stat(path)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise InputError("symlink loop: the link points back to itself", path) from None
            raise InputError(f"broken symlink: it points to {os.readlink(path)}, which does not exist", path)
        raise InputError("file not found", path)
    if path.is_dir():  # a folder of images: FrameFolder checks it
        return path
    if not path.is_file():  # opening a FIFO would block forever
        raise InputError("not a regular file (a pipe, socket or device), expected a video or image file", path)
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTS and ext not in VIDEO_EXTS:
        supported = " ".join(sorted(VIDEO_EXTS | IMAGE_EXTS))
        raise InputError(f"unsupported file type {ext or '(none)'!r}; supported: {supported}", path)
    if path.stat().st_size == 0:
        raise InputError("file is empty (0 bytes)", path)
    try:  # the decoders' own messages for this are obscure
        with open(path, "rb"):
            pass
    except PermissionError:
        raise InputError("permission denied: cannot read the file", path) from None
    return path


class FrameFolder:
    """A folder of images read as a clip: every visible entry (hidden names are skipped) must be an
    image (:data:`IMAGE_EXTS`) of one size; the frames are the files in natural order of names
    (``frame_2.png`` before ``frame_10.png``) at ``fps`` (default :data:`FOLDER_FPS`), without audio.
    ``info`` reads only the files' headers; :meth:`chunks` decodes a chunk at a time.
    InputError (one line) for an empty folder, a folder without images, another file among the
    images, or images of different sizes; ConfigError for a bad ``fps``."""

    def __init__(self, path, fps=None):
        self.path = Path(path)
        fps = FOLDER_FPS if fps is None else rate("fps", fps)  # ConfigError for a bad one
        self.files = _list_frames(self.path)
        width, height = _image_size(self.files[0])
        for file in self.files[1:]:
            self._check_size(file, _image_size(file), (width, height))
        self.info = VideoInfo(self.path, len(self.files), fps, width, height, False, False)

    def chunks(self, chunk_size: int, indices=None) -> Iterator[np.ndarray]:
        """uint8 (n, H, W, 3) RGB chunks of ``chunk_size`` frames (of ``indices``, increasing frame
        numbers, when given)."""
        keep = np.arange(self.info.n_frames) if indices is None else np.asarray(indices)
        size = (self.info.width, self.info.height)
        for start in range(0, len(keep), chunk_size):
            frames = []
            for index in keep[start:start + chunk_size]:
                frame = _read_image(self.files[index])
                self._check_size(self.files[index], (frame.shape[1], frame.shape[0]), size)
                frames.append(frame)
            yield np.stack(frames)

    def _check_size(self, file: Path, size: tuple[int, int], first: tuple[int, int]) -> None:
        if size != first:
            raise InputError(f"{file.name} is {size[0]}x{size[1]}, {self.files[0].name} is {first[0]}x{first[1]}: "
                             "the images of a frame folder must all have one size", self.path)


def _list_frames(folder: Path) -> list[Path]:
    """The images of a frame folder in natural order of names (see :class:`FrameFolder`)."""
    try:
        entries = [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
    except PermissionError:
        raise InputError("permission denied: cannot list the folder", folder) from None
    if not entries:
        raise InputError("the folder is empty, expected a video or image file or a folder of images", folder)
    images = [entry for entry in entries if entry.suffix.lower() in IMAGE_EXTS and entry.is_file()]
    if not images:
        raise InputError("is a folder, expected a video or image file", folder)
    others = sorted({entry.name for entry in entries} - {image.name for image in images}, key=natural_key)
    if others:
        raise InputError(f"{others[0]!r} is not an image ({' '.join(sorted(IMAGE_EXTS))}): a frame folder holds "
                         "images only", folder)
    return sorted(images, key=lambda entry: (natural_key(entry.name), entry.name))


def _probe_image(path: Path) -> VideoInfo:
    width, height = _image_size(path)
    return VideoInfo(path, 1, None, width, height, False, True)


def _container_info(path: Path) -> VideoInfo:
    """The container's view of a video (PyAV, safe on junk; no decoder opened): its frame count
    (packets counted where the container keeps none, e.g. mkv/webm), rate, size and audio.
    Raises InputError for a file that is not a video, has no frames or no frame rate."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError("no video stream with frames in the file", path)
            stream = container.streams.video[0]
            fps = stream.average_rate or stream.guessed_rate or stream.base_rate
            n_frames = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
            info = VideoInfo(path, n_frames, Fraction(fps) if fps else None, stream.codec_context.width,
                             stream.codec_context.height, len(container.streams.audio) > 0, False)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"corrupt, truncated or not a video ({first_line(exc)})", path) from exc
    if info.n_frames == 0 or info.fps is None:
        raise InputError("video has no frames" if info.n_frames == 0 else "video has no frame rate", path)
    return info


def _open_video(path: Path) -> tuple[VideoInfo, decord.VideoReader]:
    """Probe with PyAV (safe on junk), then open decord. Raises InputError on any failure."""
    probed = _container_info(path)
    fps = probed.fps
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
    except Exception as exc:
        raise InputError(f"video is truncated or corrupt ({first_line(exc)})", path) from exc
    if len(reader) == 0:
        raise InputError("video has no frames", path)
    info = VideoInfo(path, len(reader), fps, probed.width, probed.height, probed.has_audio, False,
                     _variable_timestamps(reader, fps))
    return info, reader


def _variable_timestamps(reader, fps: Fraction) -> np.ndarray | None:
    """Each frame's time from the first (float64 seconds) when they stray from ``i / fps`` by more
    than half a frame (a variable-frame-rate file), else None."""
    try:
        starts = np.asarray(reader.get_frame_timestamp(list(range(len(reader)))), dtype=np.float64)[:, 0]
    except decord.DECORDError:
        return None
    starts = starts - starts[0]
    nominal = np.arange(len(starts)) / float(fps)
    if np.abs(starts - nominal).max() <= 0.5 / float(fps):
        return None
    return starts


def _iter_chunks(path: Path, reader, n_frames: int, chunk_size: int, keep=None) -> Iterator[np.ndarray]:
    """decord batches of ``chunk_size`` frames (of ``keep``, increasing frame numbers, when given);
    PyAV takes over if decord fails (its tiny-width bug)."""
    keep = np.arange(n_frames) if keep is None else keep
    for start in range(0, len(keep), chunk_size):
        indices = keep[start:start + chunk_size].tolist()
        try:
            chunk = reader.get_batch(indices).asnumpy()
        except decord.DECORDError as exc:
            if start == 0 and "must exactly match" in str(exc):
                yield from _pyav_chunks(path, chunk_size, keep)
                return
            bad = _first_bad_frame(path, indices)
            last = f"the last frame read is {bad - 1}" if bad > 0 else "no frame could be read"
            raise InputError(f"cannot decode frame {bad} of {n_frames}; {last} ({first_line(exc)})", path) from exc
        yield chunk


def _first_bad_frame(path: Path, indices: list[int]) -> int:
    """The first of ``indices`` (a batch that failed) that decord cannot decode on its own.

    A fresh single-threaded reader: the failed one's threads may have read ahead past the corrupt
    packet, and its error then surfaces on a batch of good frames."""
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except decord.DECORDError:
        return indices[0]
    for index in indices:
        try:
            reader.get_batch([index])
        except decord.DECORDError:
            return index
    return indices[0]


def _pyav_chunks(path: Path, chunk_size: int, keep=None) -> Iterator[np.ndarray]:
    """Frames decoded in order by PyAV, in chunks; only the frame numbers in ``keep`` (increasing)
    when given (PyAV decodes the others too, but they are not converted)."""
    buffer, read = [], 0
    wanted = None if keep is None else iter(np.asarray(keep).tolist())
    target = None if wanted is None else next(wanted, None)
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                read += 1
                if wanted is not None:
                    if target is None:
                        break
                    if read - 1 != target:
                        continue
                    target = next(wanted, None)
                buffer.append(frame.to_ndarray(format="rgb24"))
                if len(buffer) == chunk_size:
                    yield np.stack(buffer)
                    buffer = []
    except av.FFmpegError as exc:
        last = f"the last frame read is {read - 1}" if read else "no frame could be read"
        raise InputError(f"cannot decode frame {read}; {last} ({first_line(exc)})", path) from exc
    if buffer:
        yield np.stack(buffer)

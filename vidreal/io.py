"""Video and image IO: decord decodes, PyAV encodes, Pillow handles stills, writes are atomic.

Every frame array crossing this module is ``uint8 (T, H, W, 3)`` RGB; a still image is a
one-frame clip whose ``fps`` is ``None``.

Reading
    * Videos (:data:`VIDEO_EXTS`) are probed with PyAV first (stream, exact frame rate as a
      :class:`~fractions.Fraction` so NTSC ``30000/1001`` stays exact, audio presence), because
      decord can crash on junk; then decoded with ``decord.VideoReader`` (frame count = ``len``).
      decord 0.6 fails on a few tiny frame widths (e.g. 16, 24, 48, 72 px); only then the frames
      are decoded with PyAV instead.
    * Images (:data:`IMAGE_EXTS`) are read with Pillow and converted to 8-bit RGB, see
      :func:`image_to_rgb`.
    * :func:`open_media` opens a file once: its :class:`VideoInfo` at once, its frames by
      ``chunks()``; :func:`probe`, :func:`read_video` and :func:`iter_video` are built on it.
    * Every failure on a bad input (missing, a folder, empty, truncated, not a media file,
      unsupported extension, no frames, a symlink loop) raises :class:`~vidreal.errors.InputError`
      with a one-line message; a frame that cannot be decoded is named with the last one read.
      The decoders' own log lines are silenced.

Writing
    * :func:`write_video` encodes with PyAV at the given frame rate (stream rate and time base
      ``1/fps``, pts = frame index, so timestamps are exact) and keeps the frame count; with
      ``timestamps=`` (a variable-frame-rate input's, see :attr:`VideoInfo.timestamps`) each
      frame keeps its own time instead. :class:`VideoWriter` takes frames chunk by chunk.
      Sizes are kept: an odd width/height, which ``yuv420p`` cannot hold, is encoded by libx264
      (the default) in ``yuv444p`` (same pixels; some browsers and QuickTime do not play 4:4:4);
      other ``yuv420p`` codecs pad it by one edge-replicated pixel right/bottom (logged as a
      warning), so their file has the even size. Lossless choices: ``codec="libx264rgb", crf=0``
      (mp4/mkv), ``"ffv1"`` (mkv), ``"png"`` (mov).
    * ``audio_from=`` copies the audio stream of another file (packets remuxed when the container
      accepts the codec, otherwise transcoded to AAC - Opus for .webm - in mono or stereo). It is
      not trimmed to the video's length, unless ``audio_span=`` names the stretch to keep (a
      frame selection's, see :mod:`vidreal.selection`).
    * A path with an image extension writes a still with Pillow (exactly one frame).
    * All writes go through :func:`atomic_output`: nothing partial ever lies at the output path.
"""
from __future__ import annotations

import errno
import logging
import math
import numbers
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import decord
import numpy as np
from PIL import Image, ImageOps

from vidreal.errors import InputError, OutputError
from vidreal.runtime import IMAGE_EXTS, VIDEO_EXTS, check_frames, first_line

log = logging.getLogger(__name__)
decord.logging.set_level(decord.logging.QUIET)  # its FFmpeg prints "[h264 @ 0x...]" lines on bad data


# Encoder pixel format per codec; codecs not listed here encode yuv420p.
_CODEC_PIX_FMT = {"libx264": "yuv420p", "mpeg4": "yuv420p", "libx264rgb": "rgb24",
                  "ffv1": "bgr0", "png": "rgb24", "libvpx-vp9": "yuv420p"}
_CRF_CODECS = {"libx264", "libx264rgb", "libx265", "libvpx-vp9"}
# Pixel format for odd sizes where the codec's usual yuv420p cannot hold them (same pixels out).
_ODD_PIX_FMT = {"libx264": "yuv444p"}
_VFR_TIME_BASE = Fraction(1, 90000)  # pts unit when frames keep their own timestamps
# Audio codecs remuxed into mp4/m4v as they are (FFmpeg accepts more, e.g. PCM, that players
# and browsers reject in mp4); anything else is transcoded to AAC there.
_MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac", "opus"}
_EXIF_ORIENTATION = 0x0112


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


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def probe(path) -> VideoInfo:
    """Frame count, exact fps, size and audio presence of a video or image, without decoding it.

    Raises InputError on a missing, empty, corrupt or unsupported file, or a video without frames.
    """
    path = _check_input(path)
    if is_image_path(path):
        return _probe_image(path)
    info, _ = _open_video(path)
    return info


class Media:
    """A video or image file opened once: ``info`` (:class:`VideoInfo`) at once, frames by
    :meth:`chunks`. Made by :func:`open_media`; the file is validated there."""

    def __init__(self, path):
        path = _check_input(path)
        self.path = path
        self._image = self._reader = None
        if is_image_path(path):
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
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        if indices is not None:
            indices = np.asarray(indices, dtype=np.int64)
            if indices.ndim != 1 or indices.size == 0 or np.any(np.diff(indices) <= 0) \
                    or indices[0] < 0 or indices[-1] >= self.info.n_frames:
                raise ValueError(f"indices must be increasing frame numbers in [0, {self.info.n_frames}), "
                                 f"got {indices!r}")
        if self._image is not None:
            return iter([self._image[None]])
        return _iter_chunks(self.path, self._reader, self.info.n_frames, int(chunk_size), indices)


def open_media(path) -> Media:
    """Open a video or image once: ``media.info`` is what :func:`probe` says, ``media.chunks(n)``
    yields what :func:`iter_video` yields. Raises InputError as :func:`probe` does."""
    return Media(path)


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
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return open_media(path).chunks(chunk_size, indices)


def quick_probe(path) -> VideoInfo:
    """Frame count and rate from the container alone (PyAV; no decoder opened, no frame times):
    about 4x faster than :func:`probe`, for counting the frames of a whole dataset
    (``vidreal batch --estimate``). The count is the container's, which decord's may rarely differ
    from. Raises InputError as :func:`probe` does for a file that cannot be opened."""
    path = _check_input(path)
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
    if is_image_path(path):
        n_frames, reader = 1, None
    else:
        info, reader = _open_video(path)
        n_frames = info.n_frames
    if indices.min() < 0 or indices.max() >= n_frames:
        raise ValueError(f"indices must lie in [0, {n_frames}), got {indices.min()}..{indices.max()} ({path})")
    unique, inverse = np.unique(indices, return_inverse=True)
    if reader is None:
        return _read_image(path)[None][inverse]
    try:
        frames = reader.get_batch(unique.tolist()).asnumpy()
    except decord.DECORDError as exc:
        if "must exactly match" not in str(exc):
            raise InputError(f"cannot decode frames {unique[0]}..{unique[-1]} ({first_line(exc)})", path) from exc
        frames = np.concatenate(list(_pyav_chunks(path, 64)))[unique]  # decord's tiny-width bug
    return frames[inverse]


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
    if path.is_dir():
        raise InputError("is a folder, expected a video or image file", path)
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


def _probe_image(path: Path) -> VideoInfo:
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8):
                width, height = height, width
    except Exception as exc:
        raise InputError(f"not a readable image ({first_line(exc)})", path) from exc
    return VideoInfo(path, 1, None, width, height, False, True)


def _read_image(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB, EXIF orientation applied, converted as :func:`image_to_rgb` says."""
    try:
        with Image.open(path) as image:
            image.load()
            return image_to_rgb(ImageOps.exif_transpose(image))
    except Exception as exc:
        raise InputError(f"not a readable image ({first_line(exc)})", path) from exc


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


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


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


def write_video(path, frames, fps=None, audio_from=None, codec: str = "libx264", crf: int = 18,
                timestamps=None, audio_span=None) -> Path:
    """Encode frames to ``path`` atomically and return ``path``.

    frames: uint8 (T, H, W, 3) RGB array, or an iterable of uint8 (H, W, 3) frames / (n, H, W, 3)
        chunks (streamed, for long outputs; every frame must match the first one's shape).
    fps: exact rate (Fraction, int, "30000/1001"; a float is read with denominator <= 1001, so
        29.97002997 becomes 30000/1001). Required for videos, ignored for images.
    audio_from: a media file whose first audio stream is copied into the output (nothing is added
        when it has none).
    codec, crf: PyAV encoder name (libx264 yuv420p by default; libx264rgb, mpeg4, ffv1, png, ...)
        and x264's constant rate factor 0..51 (0 = lossless for libx264rgb; ignored by codecs
        without crf).
    timestamps: optional float seconds of each frame (a variable-frame-rate source's
        ``VideoInfo.timestamps``): frames keep these times; ``fps`` is then only the nominal rate.
    audio_span: optional ``(t0, t1)`` seconds of ``audio_from``'s audio to keep, counted from
        its first video frame (a frame selection's ``vidreal.selection.Plan.audio_span``); the
        kept audio starts at 0 in the output. Cut at packet boundaries (a few tens of ms) when
        the audio is copied as it is, at decoded-frame boundaries when it is transcoded.
    Odd sizes are kept (libx264 switches to yuv444p); other yuv420p codecs pad them by one
    edge-replicated pixel (right/bottom) and log a warning.
    An image extension writes a still with Pillow; it needs exactly one frame (fps and
    audio_from are ignored there).
    Raises ValueError on bad arguments, InputError on a bad ``audio_from``, OutputError when the
    file cannot be written.
    """
    if isinstance(frames, np.ndarray):
        check_frames(frames)
    elif not isinstance(frames, Iterable):
        raise InputError("frames must be a uint8 (T, H, W, 3) array or an iterable of frames, "
                         f"got {type(frames).__name__}")
    with VideoWriter(path, fps, audio_from=audio_from, codec=codec, crf=crf, timestamps=timestamps,
                     audio_span=audio_span) as writer:
        for item in [frames] if isinstance(frames, np.ndarray) else frames:
            writer.write(item)
    return writer.path


class VideoWriter:
    """Writes a video (or one image) chunk by chunk, atomically; what :func:`write_video` uses.

        with VideoWriter("out.mp4", fps=24, audio_from="in.mp4") as writer:
            for chunk in chunks:
                writer.write(chunk)            # uint8 (n, H, W, 3) or (H, W, 3) RGB
        # "out.mp4" appears, whole, when the block ends without an exception

    The temporary file is created at the first frame; :meth:`close` finishes it and renames it
    onto ``path`` (returns ``path``); :meth:`abort` (or an exception in the ``with`` block)
    removes it and leaves an existing file at ``path`` untouched. Arguments are those of
    :func:`write_video` and are checked here (ValueError, InputError, OutputError).
    """

    def __init__(self, path, fps=None, audio_from=None, codec: str = "libx264", crf: int = 18, timestamps=None,
                 audio_span=None):
        self.path = Path(path)
        ext = self.path.suffix.lower()
        if ext not in IMAGE_EXTS and ext not in VIDEO_EXTS:
            supported = " ".join(sorted(VIDEO_EXTS | IMAGE_EXTS))
            raise OutputError(f"unsupported output type {ext or '(none)'!r}; supported: {supported}", self.path)
        if isinstance(crf, bool) or not isinstance(crf, numbers.Integral) or not 0 <= crf <= 51:
            raise ValueError(f"crf must be an integer in 0..51, got {crf!r}")
        self.is_image = ext in IMAGE_EXTS
        self.codec, self.crf = codec, int(crf)
        self.rate = None if self.is_image else _as_fraction(fps)
        self.audio_from = None if audio_from is None or self.is_image else Path(audio_from)
        if self.audio_from is not None and not self.audio_from.is_file():
            raise InputError("audio source not found", self.audio_from)
        self.audio_span = None
        if audio_span is not None:
            t0, t1 = (float(t) for t in audio_span)
            if not (math.isfinite(t0) and math.isfinite(t1) and 0 <= t0 < t1):
                raise ValueError(f"audio_span must be (t0, t1) seconds with 0 <= t0 < t1, got {audio_span!r}")
            self.audio_span = (t0, t1)
        self.timestamps = None
        if timestamps is not None and not self.is_image:
            self.timestamps = np.asarray(timestamps, dtype=np.float64)
            if self.timestamps.ndim != 1 or not np.all(np.isfinite(self.timestamps)):
                raise ValueError(f"timestamps must be finite seconds, one per frame, got {self.timestamps.shape}")
        self.n_frames = 0
        self.shape: tuple | None = None
        self._stack = ExitStack()
        self._container = self._stream = self._audio = None
        self._frames: list[np.ndarray] = []  # the image's frame
        self._last_pts = -1
        self._closed = self._finished = False

    def write(self, frames) -> None:
        """Append uint8 (n, H, W, 3) or (H, W, 3) RGB frames (ValueError on a bad array or a
        shape that differs from the first frame's)."""
        batch = np.asarray(frames)
        batch = batch[None] if batch.ndim == 3 else batch
        check_frames(batch)
        if self.shape is None:
            self.shape = batch.shape[1:]
        elif batch.shape[1:] != self.shape:
            raise InputError(f"frame shape {batch.shape[1:]} differs from the first frame's {self.shape}")
        if self.is_image:
            self._frames.extend(batch)
            self.n_frames += len(batch)
            return
        if self._container is None:
            self._open(*self.shape[:2])
        try:
            for frame in batch:
                self._encode_frame(frame)
        except (av.FFmpegError, OSError) as exc:
            raise OutputError(f"encoding failed ({first_line(exc)})", self.path) from exc

    def _open(self, height: int, width: int) -> None:
        tmp = self._stack.enter_context(atomic_output(self.path))
        pix_fmt = _CODEC_PIX_FMT.get(self.codec, "yuv420p")
        self._pad = (0, 0)
        if pix_fmt == "yuv420p" and (height % 2 or width % 2):
            if self.codec in _ODD_PIX_FMT:
                pix_fmt = _ODD_PIX_FMT[self.codec]
                log.info("%s: odd size %dx%d kept, encoded as %s", self.path, width, height, pix_fmt)
            else:
                self._pad = (height % 2, width % 2)
                log.warning("%s: odd size %dx%d padded to %dx%d (%s needs even sizes)", self.path, width, height,
                               width + self._pad[1], height + self._pad[0], self.codec)
        self._time_base = _VFR_TIME_BASE if self.timestamps is not None else 1 / self.rate
        try:
            self._container = av.open(str(tmp), "w")
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise OutputError(f"cannot create video file ({first_line(exc)})", self.path) from exc
        try:
            stream = self._stream = self._container.add_stream(self.codec, rate=self.rate)
        except (av.FFmpegError, ValueError) as exc:
            raise OutputError(f"cannot encode with codec {self.codec!r} ({first_line(exc)})", self.path) from exc
        stream.width, stream.height = width + self._pad[1], height + self._pad[0]
        stream.pix_fmt = pix_fmt
        stream.time_base = self._time_base
        stream.codec_context.time_base = self._time_base
        if self.codec in _CRF_CODECS:
            stream.options = {"crf": str(self.crf)}
        elif self.codec == "mpeg4":
            stream.bit_rate = int(width * height * self.rate)  # ~1 bit per pixel
        if self.audio_from is not None:  # streams precede the first packet
            self._audio = _AudioCopy.open(self.audio_from, self._container, self.path)

    def _encode_frame(self, frame: np.ndarray) -> None:
        if self._pad != (0, 0):
            frame = np.pad(frame, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
        if self.timestamps is None:
            pts = self.n_frames
        else:
            if self.n_frames >= len(self.timestamps):
                raise ValueError(f"more frames than timestamps ({len(self.timestamps)})")
            pts = max(self._last_pts + 1, round(self.timestamps[self.n_frames] / self._time_base))
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = self._last_pts = pts
        video_frame.time_base = self._time_base
        self._container.mux(self._stream.encode(video_frame))
        self.n_frames += 1

    def finish(self) -> None:
        """Complete the temporary file (flush the encoder, add the audio) without moving it onto
        ``path`` yet (:meth:`close` does). ValueError when no frame was written; on any failure
        the temporary file is removed."""
        if self._closed or self._finished:
            return
        try:
            if self.n_frames == 0:
                raise ValueError("frames is empty: nothing to write")
            if self.is_image:
                tmp = self._stack.enter_context(atomic_output(self.path))
                _save_image(tmp, self._frames, self.path)
            else:
                try:
                    self._container.mux(self._stream.encode())
                    if self._audio is not None:
                        self._audio.copy(self._container, self.audio_span)
                    self._container.close()
                except (av.FFmpegError, OSError) as exc:
                    raise OutputError(f"encoding failed ({first_line(exc)})", self.path) from exc
                finally:
                    if self._audio is not None:
                        _close_quietly(self._audio.source)
        except BaseException:
            self.abort()
            raise
        self._finished = True

    def close(self) -> Path:
        """Finish the file and move it onto ``path``; returns ``path``."""
        if self._closed:
            return self.path
        self.finish()
        try:
            self._stack.close()  # the rename
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Drop what was written: the temporary file is removed, ``path`` is left as it was."""
        if self._closed:
            return
        self._closed = True
        if self._container is not None:
            _close_quietly(self._container)
        if self._audio is not None:
            _close_quietly(self._audio.source)
        error = OutputError("aborted", self.path)
        self._stack.__exit__(OutputError, error, None)  # atomic_output removes its temporary file

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False




def _as_fraction(fps) -> Fraction:
    if fps is None:
        raise ValueError("fps is required to write a video")
    try:
        if isinstance(fps, bool):
            raise TypeError
        if isinstance(fps, numbers.Rational) or isinstance(fps, str):
            rate = Fraction(fps)
        elif isinstance(fps, numbers.Real):
            rate = Fraction(float(fps)).limit_denominator(1001)
        else:
            raise TypeError
    except (TypeError, ValueError, ZeroDivisionError):
        raise ValueError(f"fps must be a number such as 24 or '30000/1001', got {fps!r}") from None
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    return rate


def _save_image(tmp: Path, frames: list[np.ndarray], path: Path) -> None:
    if len(frames) != 1:
        raise OutputError(f"an image output takes exactly 1 frame, got {len(frames)}; "
                          "use a video extension", path)
    options = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg", ".webp") else {}
    try:
        Image.fromarray(np.ascontiguousarray(frames[0])).save(tmp, **options)
    except OSError as exc:
        raise OutputError(f"cannot write image ({first_line(exc)})", path) from exc


class OutputFiles:
    """The files of one run, moved into place together (``translate_file``, ``extract_file``):

        with OutputFiles() as files:
            video = files.video("out.mp4", fps=24)       # a VideoWriter
            video.write(frames)
            files.text("out.mp4.vidreal.yaml", text)

    Each file is written to a temporary file beside its path. When the block ends without an
    exception, every video is finished first, then all are renamed onto their paths; when
    anything fails (an exception in the block, an encoder, a full disk), every temporary file is
    removed and every path is left as it was (an older file there stays).
    """

    def __init__(self):
        self._stack = ExitStack()
        self._writers: list[VideoWriter] = []

    def video(self, path, fps=None, **options) -> VideoWriter:
        """A :class:`VideoWriter` for ``path`` (``options`` as for :func:`write_video`)."""
        writer = self._stack.enter_context(VideoWriter(path, fps, **options))
        self._writers.append(writer)
        return writer

    def text(self, path, text: str) -> Path:
        """Write ``text`` (UTF-8) to ``path``'s temporary file; OutputError (one line) when it
        cannot be written, e.g. on a full disk."""
        tmp = self._stack.enter_context(atomic_output(path))
        try:
            tmp.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot write the file ({first_line(exc)})", path) from None
        return Path(path)

    def __enter__(self):
        self._stack.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                for writer in self._writers:
                    writer.finish()
            except BaseException as error:
                self._stack.__exit__(type(error), error, error.__traceback__)
                raise
        return self._stack.__exit__(exc_type, exc, tb)


def check_output(path, info: VideoInfo) -> Path:
    """Refuse an output path that cannot take the media ``info`` describes (OutputError, one line):
    an unsupported extension, an image path for a clip of several frames, a video path for an
    image input, a folder, or the input file itself. Returns ``path`` as a Path."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTS | VIDEO_EXTS:
        raise OutputError(f"unsupported output type {ext or '(none)'!r}; use a video ({', '.join(sorted(VIDEO_EXTS))}) "
                          f"or image ({', '.join(sorted(IMAGE_EXTS))}) extension", path)
    if ext in IMAGE_EXTS and info.n_frames != 1:
        raise OutputError(f"an image output needs a one-frame input, the input has {info.n_frames} frames; "
                          "use a video extension such as .mp4", path)
    if ext in VIDEO_EXTS and info.fps is None:
        raise OutputError("an image input gives an image output; use an image extension such as .png", path)
    if path.is_dir():
        raise OutputError("output path is a folder, expected a file name", path)
    if path.exists() and os.path.samefile(path, info.path):
        raise OutputError("the output would overwrite the input", path)
    return path


@dataclass
class _AudioCopy:
    """The first audio stream of ``source`` and the output stream it goes to."""

    source: av.container.InputContainer
    stream: av.audio.AudioStream | None  # None: the source has no audio
    out: av.audio.AudioStream | None
    remux: bool  # copy packets as they are; otherwise decode and re-encode
    video_start: float = 0.0  # seconds of the source's first video frame (audio spans count from it)

    @classmethod
    def open(cls, audio_from: Path, container, path: Path) -> _AudioCopy:
        """Open ``audio_from`` and add the matching output stream to ``container``."""
        try:
            source = av.open(str(audio_from))
        except Exception as exc:
            raise InputError(f"audio source is not a readable media file ({first_line(exc)})",
                             audio_from) from exc
        if not source.streams.audio:
            return cls(source, None, None, False)
        audio = source.streams.audio[0]
        video = source.streams.video[0] if source.streams.video else None
        start = 0.0 if video is None or video.start_time is None else float(video.start_time * video.time_base)
        if path.suffix.lower() not in (".mp4", ".m4v") or audio.codec_context.name in _MP4_AUDIO:
            try:
                return cls(source, audio, container.add_stream_from_template(audio), True, start)
            except ValueError:  # the container does not take this codec: transcode
                pass
        target = "libopus" if container.format.name == "webm" else "aac"
        try:
            sample_rate = audio.codec_context.sample_rate
            out = container.add_stream(target, rate=sample_rate)
            out.codec_context.layout = "mono" if audio.codec_context.layout.nb_channels == 1 else "stereo"
            out.codec_context.time_base = Fraction(1, sample_rate)
        except (av.FFmpegError, ValueError) as exc:
            source.close()
            raise OutputError(f"cannot add audio to this container ({first_line(exc)})", path) from exc
        return cls(source, audio, out, False, start)

    def copy(self, container, span: tuple[float, float] | None = None) -> None:
        """Copy the audio; with ``span`` (t0, t1) only the packets (frames, when transcoding) that
        start in [t0, t1) seconds from the first video frame, shifted to start at 0. A span from
        0 keeps what lies before the first frame too (the encoder's priming)."""
        if self.stream is None:
            return
        lo = hi = None
        if span is not None:
            lo = -math.inf if span[0] <= 0 else self.video_start + span[0] - 1e-6
            hi = self.video_start + span[1] - 1e-6
        shift = None
        items = self.source.demux(self.stream) if self.remux else self.source.decode(self.stream)
        for item in items:
            if self.remux and item.dts is None:  # the demuxer's final flush packet
                continue
            if span is not None and item.pts is not None:
                t = float(item.pts * item.time_base)
                if t < lo:
                    continue
                if t >= hi:
                    break
                if shift is None:
                    shift = item.pts if span[0] > 0 else 0
                item.pts -= shift
                if self.remux and item.dts is not None:
                    item.dts -= shift
            if self.remux:
                item.stream = self.out
                container.mux(item)
            else:
                container.mux(self.out.encode(item))
        if not self.remux:
            container.mux(self.out.encode())


def _close_quietly(container) -> None:
    try:
        container.close()
    except Exception:
        pass


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (T, h, w, C) -> (T, height, width, C): area filter to shrink, bicubic to enlarge; no-op when equal."""
    import cv2

    if frames.shape[1:3] == (height, width):
        return frames
    interpolation = cv2.INTER_AREA if height * width < frames.shape[1] * frames.shape[2] else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (width, height), interpolation=interpolation) for f in frames])

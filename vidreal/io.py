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
    * Every failure on a bad input (missing, a folder, empty, truncated, not a media file,
      unsupported extension, no frames) raises :class:`~vidreal.errors.InputError` with a
      one-line message.

Writing
    * :func:`write_video` encodes with PyAV at the given frame rate (stream rate and time base
      ``1/fps``, pts = frame index, so timestamps are exact) and keeps the frame count.
      ``yuv420p`` codecs (the default libx264) need even sizes: an odd width/height is padded by
      one pixel on the right/bottom edge (edge replicated), so the file - and reading it back -
      has the even size. Lossless choices: ``codec="libx264rgb", crf=0`` (mp4/mkv),
      ``"ffv1"`` (mkv), ``"png"`` (mov).
    * ``audio_from=`` copies the audio stream of another file (packets remuxed when the container
      accepts the codec, otherwise transcoded to AAC - Opus for .webm - in mono or stereo). It is
      not trimmed to the video's length.
    * A path with an image extension writes a still with Pillow (exactly one frame).
    * All writes go through :func:`atomic_output`: nothing partial ever lies at the output path.
"""
from __future__ import annotations

import numbers
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import decord
import numpy as np
from PIL import Image, ImageOps

from vidreal.errors import InputError, OutputError

IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
VIDEO_EXTS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"})

# Encoder pixel format per codec; codecs not listed here encode yuv420p.
_CODEC_PIX_FMT = {"libx264": "yuv420p", "mpeg4": "yuv420p", "libx264rgb": "rgb24",
                  "ffv1": "bgr0", "png": "rgb24", "libvpx-vp9": "yuv420p"}
_CRF_CODECS = {"libx264", "libx264rgb", "libx265", "libvpx-vp9"}
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


def read_video(path) -> Clip:
    """Decode a whole video (or image) into a :class:`Clip`.

    Returns frames uint8 (T, H, W, 3) RGB; an image gives T == 1 and ``fps=None``.
    For long videos prefer :func:`iter_video`, which holds one chunk at a time.
    """
    path = _check_input(path)
    if is_image_path(path):
        return Clip(_read_image(path)[None], None, path, False)
    info, reader = _open_video(path)
    chunks = list(_iter_chunks(path, reader, info.n_frames, 64))
    frames = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    return Clip(frames, info.fps, path, info.has_audio)


def iter_video(path, chunk_size: int = 16) -> Iterator[np.ndarray]:
    """Yield uint8 (n, H, W, 3) RGB chunks of ``chunk_size`` frames (the last may be shorter).

    Decodes one chunk at a time; the chunks concatenated equal ``read_video(path).frames``.
    The file is validated when this is called, not at the first ``next()``.
    An image yields one (1, H, W, 3) chunk.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    path = _check_input(path)
    if is_image_path(path):
        return iter([_read_image(path)[None]])
    info, reader = _open_video(path)
    return _iter_chunks(path, reader, info.n_frames, int(chunk_size))


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
            raise InputError(f"cannot decode frames {unique[0]}..{unique[-1]} ({_one_line(exc)})", path) from exc
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
        raise InputError(f"not a readable image ({_one_line(exc)})", path) from exc
    return VideoInfo(path, 1, None, width, height, False, True)


def _read_image(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB, EXIF orientation applied, converted as :func:`image_to_rgb` says."""
    try:
        with Image.open(path) as image:
            image.load()
            return image_to_rgb(ImageOps.exif_transpose(image))
    except Exception as exc:
        raise InputError(f"not a readable image ({_one_line(exc)})", path) from exc


def _open_video(path: Path) -> tuple[VideoInfo, decord.VideoReader]:
    """Probe with PyAV (safe on junk), then open decord. Raises InputError on any failure."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError("no video stream with frames in the file", path)
            stream = container.streams.video[0]
            fps = stream.average_rate or stream.guessed_rate or stream.base_rate
            width, height = stream.codec_context.width, stream.codec_context.height
            has_audio = len(container.streams.audio) > 0
            n_indexed = stream.frames
            if n_indexed == 0:  # containers without a frame count (mkv, webm): count packets
                n_indexed = sum(1 for packet in container.demux(stream) if packet.size)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"corrupt, truncated or not a video ({_one_line(exc)})", path) from exc
    if n_indexed == 0:
        raise InputError("video has no frames", path)
    if not fps:
        raise InputError("video has no frame rate", path)
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
    except Exception as exc:
        raise InputError(f"video is truncated or corrupt ({_one_line(exc)})", path) from exc
    if len(reader) == 0:
        raise InputError("video has no frames", path)
    info = VideoInfo(path, len(reader), Fraction(fps), width, height, has_audio, False)
    return info, reader


def _iter_chunks(path: Path, reader, n_frames: int, chunk_size: int) -> Iterator[np.ndarray]:
    """Sequential decord batches; PyAV takes over if decord fails (its tiny-width bug)."""
    for start in range(0, n_frames, chunk_size):
        indices = list(range(start, min(start + chunk_size, n_frames)))
        try:
            chunk = reader.get_batch(indices).asnumpy()
        except decord.DECORDError as exc:
            if start == 0 and "must exactly match" in str(exc):
                yield from _pyav_chunks(path, chunk_size)
                return
            raise InputError(f"cannot decode frame {start} ({_one_line(exc)})", path) from exc
        yield chunk


def _pyav_chunks(path: Path, chunk_size: int) -> Iterator[np.ndarray]:
    buffer = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                buffer.append(frame.to_ndarray(format="rgb24"))
                if len(buffer) == chunk_size:
                    yield np.stack(buffer)
                    buffer = []
    except av.FFmpegError as exc:
        raise InputError(f"cannot decode video ({_one_line(exc)})", path) from exc
    if buffer:
        yield np.stack(buffer)


def _one_line(exc: BaseException) -> str:
    """A short one-line description of a library exception (decord's carry stack traces)."""
    text = str(exc)
    if getattr(exc, "strerror", None) and getattr(exc, "filename", None):  # path is shown anyway
        text = exc.strerror
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[0] if lines else type(exc).__name__
    line = re.sub(r"^\[[\d:]+\]\s+\S+:\d+:\s*", "", line)  # decord's "[time] file.cc:123: "
    return line[:200]


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
        raise OutputError(f"cannot create output folder ({_one_line(exc)})", path.parent) from exc
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


def write_video(path, frames, fps=None, audio_from=None, codec: str = "libx264", crf: int = 18) -> Path:
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
    Odd sizes with yuv420p codecs are padded by one edge-replicated pixel (right/bottom).
    An image extension writes a still with Pillow; it needs exactly one frame (fps and
    audio_from are ignored there).
    Raises ValueError on bad arguments, InputError on a bad ``audio_from``, OutputError when the
    file cannot be written.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTS and ext not in VIDEO_EXTS:
        supported = " ".join(sorted(VIDEO_EXTS | IMAGE_EXTS))
        raise OutputError(f"unsupported output type {ext or '(none)'!r}; supported: {supported}", path)
    if isinstance(frames, np.ndarray):
        _check_frames(frames)
    elif not isinstance(frames, Iterable):
        raise ValueError("frames must be a uint8 (T, H, W, 3) array or an iterable of frames, "
                         f"got {type(frames).__name__}")
    if isinstance(crf, bool) or not isinstance(crf, numbers.Integral) or not 0 <= crf <= 51:
        raise ValueError(f"crf must be an integer in 0..51, got {crf!r}")
    if ext in IMAGE_EXTS:
        return _write_image(path, frames)
    rate = _as_fraction(fps)
    if audio_from is not None:
        audio_from = Path(audio_from)
        if not audio_from.is_file():
            raise InputError("audio source not found", audio_from)
    with atomic_output(path) as tmp:
        _encode(tmp, _frame_stream(frames), rate, codec, int(crf), audio_from, path)
    return path


def _check_frames(frames: np.ndarray) -> None:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise ValueError(f"frames must be uint8 (T, H, W, 3) with T, H, W > 0, "
                         f"got {frames.dtype} {frames.shape}")


def _frame_stream(frames) -> Iterator[np.ndarray]:
    """Yield uint8 (H, W, 3) frames, checking each against the first frame's shape."""
    if isinstance(frames, np.ndarray):
        yield from frames
        return
    shape = None
    for item in frames:
        item = np.asarray(item)
        batch = item[None] if item.ndim == 3 else item
        _check_frames(batch)
        if shape is None:
            shape = batch.shape[1:]
        elif batch.shape[1:] != shape:
            raise ValueError(f"frame shape {batch.shape[1:]} differs from the first frame's {shape}")
        yield from batch
    if shape is None:
        raise ValueError("frames is empty: nothing to write")


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


def _write_image(path: Path, frames) -> Path:
    frames = list(_frame_stream(frames))
    if len(frames) != 1:
        raise OutputError(f"an image output takes exactly 1 frame, got {len(frames)}; "
                          "use a video extension", path)
    options = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg", ".webp") else {}
    with atomic_output(path) as tmp:
        try:
            Image.fromarray(np.ascontiguousarray(frames[0])).save(tmp, **options)
        except OSError as exc:
            raise OutputError(f"cannot write image ({_one_line(exc)})", path) from exc
    return path


def _encode(tmp: Path, frames: Iterator[np.ndarray], rate: Fraction, codec: str, crf: int,
            audio_from: Path | None, path: Path) -> None:
    """Encode ``frames`` into the file ``tmp`` (pts = index, time base 1/rate), then add audio."""
    first = next(frames)
    height, width = first.shape[:2]
    pix_fmt = _CODEC_PIX_FMT.get(codec, "yuv420p")
    pad_h, pad_w = (height % 2, width % 2) if pix_fmt == "yuv420p" else (0, 0)
    time_base = 1 / rate
    try:
        container = av.open(str(tmp), "w")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise OutputError(f"cannot create video file ({_one_line(exc)})", path) from exc
    audio = None
    try:
        try:
            stream = container.add_stream(codec, rate=rate)
        except (av.FFmpegError, ValueError) as exc:
            raise OutputError(f"cannot encode with codec {codec!r} ({_one_line(exc)})", path) from exc
        stream.width, stream.height = width + pad_w, height + pad_h
        stream.pix_fmt = pix_fmt
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        if codec in _CRF_CODECS:
            stream.options = {"crf": str(crf)}
        elif codec == "mpeg4":
            stream.bit_rate = int(width * height * rate)  # ~1 bit per pixel
        if audio_from is not None:
            audio = _AudioCopy.open(audio_from, container, path)  # streams precede the first packet
        try:
            for index, frame in enumerate(_chain(first, frames)):
                if pad_h or pad_w:
                    frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
                video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                video_frame.pts = index
                video_frame.time_base = time_base
                container.mux(stream.encode(video_frame))
            container.mux(stream.encode())
            if audio is not None:
                audio.copy(container)
            container.close()
        except av.FFmpegError as exc:
            raise OutputError(f"encoding failed ({_one_line(exc)})", path) from exc
    except BaseException:
        _close_quietly(container)
        raise
    finally:
        if audio is not None:
            _close_quietly(audio.source)


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


@dataclass
class _AudioCopy:
    """The first audio stream of ``source`` and the output stream it goes to."""

    source: av.container.InputContainer
    stream: av.audio.AudioStream | None  # None: the source has no audio
    out: av.audio.AudioStream | None
    remux: bool  # copy packets as they are; otherwise decode and re-encode

    @classmethod
    def open(cls, audio_from: Path, container, path: Path) -> _AudioCopy:
        """Open ``audio_from`` and add the matching output stream to ``container``."""
        try:
            source = av.open(str(audio_from))
        except Exception as exc:
            raise InputError(f"audio source is not a readable media file ({_one_line(exc)})",
                             audio_from) from exc
        if not source.streams.audio:
            return cls(source, None, None, False)
        audio = source.streams.audio[0]
        if path.suffix.lower() not in (".mp4", ".m4v") or audio.codec_context.name in _MP4_AUDIO:
            try:
                return cls(source, audio, container.add_stream_from_template(audio), True)
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
            raise OutputError(f"cannot add audio to this container ({_one_line(exc)})", path) from exc
        return cls(source, audio, out, False)

    def copy(self, container) -> None:
        if self.stream is None:
            return
        if self.remux:
            for packet in self.source.demux(self.stream):
                if packet.dts is None:  # the demuxer's final flush packet
                    continue
                packet.stream = self.out
                container.mux(packet)
            return
        for frame in self.source.decode(self.stream):
            container.mux(self.out.encode(frame))
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

"""Encoding videos with PyAV (and one-frame images with Pillow), chunk by chunk, atomically."""
from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterable
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vidreal import checks
from vidreal.checks import CRF_CODECS, DEFAULT_PRESET, PRESET_CODECS, PRESETS
from vidreal.errors import ConfigError, InputError, OutputError
from vidreal.io.atomic import atomic_folder, atomic_output
from vidreal.io.audio import _AudioCopy, _close_quietly
from vidreal.io.images import _save_frame, _save_image, check_frame_folder, is_frame_folder
from vidreal.runtime import IMAGE_EXTS, VIDEO_EXTS, check_frames, first_line

log = logging.getLogger(__name__)

# Encoder pixel format per codec; codecs not listed here encode yuv420p.
_CODEC_PIX_FMT = {"libx264": "yuv420p", "mpeg4": "yuv420p", "libx264rgb": "rgb24",
                  "ffv1": "bgr0", "png": "rgb24", "libvpx-vp9": "yuv420p"}
# Pixel format for odd sizes where the codec's usual yuv420p cannot hold them (same pixels out).
_ODD_PIX_FMT = {"libx264": "yuv444p"}
_VFR_TIME_BASE = Fraction(1, 90000)  # pts unit when frames keep their own timestamps


def write_video(path, frames, fps=None, audio_from=None, codec: str = "libx264", crf: int = 18,
                timestamps=None, audio_span=None, pix_fmt: str | None = None,
                preset: str | None = DEFAULT_PRESET) -> Path:
    """Encode frames to ``path`` atomically and return ``path``.

    frames: uint8 (T, H, W, 3) RGB array, or an iterable of uint8 (H, W, 3) frames / (n, H, W, 3)
        chunks (streamed, for long outputs; every frame must match the first one's shape).
    fps: exact rate (Fraction, int, "30000/1001"), read as the command line reads ``--fps``
        (``vidreal.checks.rate``: 29.97 and "29.97" are 30000/1001); a float computed from a fraction is
        that fraction (24000 / 1001 is 24000/1001). Required for videos, ignored for images.
    audio_from: a media file whose first audio stream is copied into the output (nothing is added
        when it has none).
    codec, crf: PyAV encoder name (libx264 yuv420p by default; libx264rgb, mpeg4, ffv1, png, ...)
        and x264's constant rate factor 0..51 (0 = lossless for libx264rgb; ignored by codecs
        without crf).
    preset: x264/x265's speed preset (``vidreal.checks.PRESETS``; None: the codec's own, medium): faster
        presets take less CPU for a somewhat larger file at the same crf; other codecs ignore it.
    pix_fmt: the encoder's pixel format, one ``codec`` takes (``av.codec.Codec(codec, "w").video_formats``);
        None: the codec's usual (yuv420p for libx264, rgb24 for libx264rgb, ...).
    timestamps: optional float seconds of each frame (a variable-frame-rate source's
        ``VideoInfo.timestamps``): frames keep these times; ``fps`` is then only the nominal rate.
    audio_span: optional ``(t0, t1)`` seconds of ``audio_from``'s audio to keep, counted from
        its first video frame (a frame selection's ``vidreal.selection.Plan.audio_span``); the
        kept audio starts at 0 in the output. Cut at packet boundaries (a few tens of ms) when
        the audio is copied as it is, at decoded-frame boundaries when it is transcoded.
    Odd sizes are kept (libx264 switches from its usual yuv420p to yuv444p); where the pixel format
    halves the colour in that direction otherwise (other codecs' yuv420p, a ``pix_fmt`` asked for
    such as yuv420p or yuv422p), frames are padded by one edge-replicated pixel (right/bottom) and a
    warning is logged.
    An image extension writes a still with Pillow; it needs exactly one frame. A path without an
    extension is a folder of PNG frames ``frame_000000.png``, ... (written into a temporary folder
    beside it, renamed onto it at the end; an existing folder there is replaced only when it is
    empty or holds nothing but such frames). Stills and frame folders ignore fps, audio, codec, crf
    and pix_fmt.
    Raises ValueError on bad arguments, InputError on a bad ``audio_from``, OutputError when the
    file cannot be written.
    """
    if isinstance(frames, np.ndarray):
        check_frames(frames)
    elif not isinstance(frames, Iterable):
        raise InputError("frames must be a uint8 (T, H, W, 3) array or an iterable of frames, "
                         f"got {type(frames).__name__}")
    with VideoWriter(path, fps, audio_from=audio_from, codec=codec, crf=crf, timestamps=timestamps,
                     audio_span=audio_span, pix_fmt=pix_fmt, preset=preset) as writer:
        for item in [frames] if isinstance(frames, np.ndarray) else frames:
            writer.write(item)
    return writer.path


class VideoWriter:
    """Writes a video (or one image, or a folder of PNG frames) chunk by chunk, atomically; what
    :func:`write_video` uses.

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
                 audio_span=None, pix_fmt: str | None = None, preset: str | None = DEFAULT_PRESET):
        self.path = Path(path)
        ext = self.path.suffix.lower()
        self.is_frames = is_frame_folder(self.path)
        if ext not in IMAGE_EXTS and ext not in VIDEO_EXTS and not self.is_frames:
            supported = " ".join(sorted(VIDEO_EXTS | IMAGE_EXTS))
            raise OutputError(f"unsupported output type {ext!r}; supported: {supported}, or no extension "
                              "for a folder of PNG frames", self.path)
        if isinstance(crf, bool) or not isinstance(crf, numbers.Integral) or not 0 <= crf <= 51:
            raise ValueError(f"crf must be an integer in 0..51, got {crf!r}")
        self.is_image = ext in IMAGE_EXTS
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)} or None, got {preset!r}")
        self.codec, self.crf, self.pix_fmt, self.preset = codec, int(crf), pix_fmt, preset
        stills = self.is_image or self.is_frames  # no rate, no audio
        self.rate = None if stills else _as_fraction(fps)
        self.audio_from = None if audio_from is None or stills else Path(audio_from)
        if self.audio_from is not None and not self.audio_from.is_file():
            raise InputError("audio source not found", self.audio_from)
        self.audio_span = None
        if audio_span is not None:
            t0, t1 = (float(t) for t in audio_span)
            if not (math.isfinite(t0) and math.isfinite(t1) and 0 <= t0 < t1):
                raise ValueError(f"audio_span must be (t0, t1) seconds with 0 <= t0 < t1, got {audio_span!r}")
            self.audio_span = (t0, t1)
        self.timestamps = None
        if timestamps is not None and not stills:
            self.timestamps = np.asarray(timestamps, dtype=np.float64)
            if self.timestamps.ndim != 1 or not np.all(np.isfinite(self.timestamps)):
                raise ValueError(f"timestamps must be finite seconds, one per frame, got {self.timestamps.shape}")
        self.n_frames = 0
        self.shape: tuple | None = None
        self._stack = ExitStack()
        self._container = self._stream = self._audio = None
        self._frames: list[np.ndarray] = []  # the image's frame
        self._folder: Path | None = None  # the frame folder's temporary folder
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
        if self.is_frames:
            if self._folder is None:
                self._folder = self._stack.enter_context(atomic_folder(self.path, check=check_frame_folder))
            for frame in batch:
                _save_frame(self._folder, self.n_frames, frame, self.path)
                self.n_frames += 1
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
        pix_fmt = self.pix_fmt or _CODEC_PIX_FMT.get(self.codec, "yuv420p")
        self._pad = _odd_pad(pix_fmt, height, width)
        if self._pad != (0, 0):
            if self.pix_fmt is None and self.codec in _ODD_PIX_FMT:  # the codec's usual format: switch
                pix_fmt, self._pad = _ODD_PIX_FMT[self.codec], (0, 0)
                log.info("%s: odd size %dx%d kept, encoded as %s", self.path, width, height, pix_fmt)
            else:
                log.warning("%s: odd size %dx%d padded to %dx%d (%s %s needs even sizes)", self.path, width, height,
                            width + self._pad[1], height + self._pad[0], self.codec, pix_fmt)
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
        if self.codec in CRF_CODECS:
            stream.options = {"crf": str(self.crf)}
        elif self.codec == "mpeg4":
            stream.bit_rate = int(width * height * self.rate)  # ~1 bit per pixel
        if self.codec in PRESET_CODECS and self.preset is not None:
            stream.options = {**stream.options, "preset": self.preset}
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
            elif not self.is_frames:  # a frame folder's frames are written already
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


def _odd_pad(pix_fmt: str, height: int, width: int) -> tuple[int, int]:
    """(rows, columns) to add so that ``pix_fmt`` holds a frame: 1 for an odd size in a direction
    where the format halves the colour planes (yuv420p: both, yuv422p: the width), else 0."""
    fmt = av.VideoFormat(pix_fmt)
    return (height % 2 if fmt.chroma_height(2) == 1 else 0, width % 2 if fmt.chroma_width(2) == 1 else 0)


def _as_fraction(fps) -> Fraction:
    """``fps`` as the exact rate written: the CLI's and the config's rule (``vidreal.checks.rate``: 29.97
    and "29.97" are 30000/1001, 12.5 is 25/2), and a float computed from a fraction (24000 / 1001 =
    23.976023976023978) is that fraction (the nearest with a denominator up to 1001)."""
    if fps is None:
        raise ValueError("fps is required to write a video")
    try:
        rate = checks.rate("fps", fps)
    except ConfigError:
        raise ValueError(f"fps must be a positive number such as 24 or '30000/1001', got {fps!r}") from None
    return rate.limit_denominator(1001) if isinstance(fps, float) else rate

"""Frame selection: which frames of a clip are read, translated and written.

    plan = select(media.info, start="2.5s", end=120, every=5, max_frames=16)
    plan.indices     # int64 (N,) source frame numbers, increasing
    plan.info        # the VideoInfo of the output: N frames at fps / every

Rules
    * ``start``: the first frame kept, a frame index (``0`` = the first frame) or seconds
      (``"2.5s"``: the first frame whose time is >= 2.5 s). Default 0.
    * ``end``: EXCLUSIVE, as a Python slice: ``start=0, end=24`` keeps frames 0-23; seconds keep
      the frames whose time is < ``end``. An end past the clip is the clip's end. Default: the end.
    * ``every``: keep every N-th frame from ``start`` (``start, start+N, ...``); the output's frame
      rate is the input's / N, so it lasts as long as the stretch of source it covers.
    * ``max_frames``: keep at most the first N of those frames.
    * Seconds are counted from the first frame; a variable-frame-rate clip uses each frame's own time.
    * The audio keeps the stretch of time the kept frames cover: from the first kept frame's time to
      ``min(last kept + every, end)`` frames (:attr:`Plan.audio_span`).
    * A still image is a one-frame clip without time: frame indices apply as to a one-frame video
      (``start`` other than 0 is past its end), seconds are refused, ``every`` and ``max_frames``
      keep its one frame.

Errors: a value that can never be right (``every 0``, ``max_frames 0``, ``start -1``, ``"2.5 sec"``,
``end`` not after ``start`` in the same unit) is a ConfigError from :func:`check`; what depends on
the clip (``start`` past its end, ``end`` before ``start`` once both are frames, seconds on an image)
is an InputError from :func:`select`.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from vidreal.checks import positive_int
from vidreal.errors import ConfigError, InputError

KEYS = ("start", "end", "every", "max_frames")  # TranslateConfig fields, in this order
_SECONDS = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)s$")


def parse_position(value, name: str):
    """A ``start``/``end`` value as given (int, "12", "2.5s", None) -> int frames, a Fraction of
    seconds, or None. ConfigError (one line, naming ``name``) on anything else."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(_bad_position(name, value))
    if isinstance(value, (int, np.integer)):
        if value < 0:
            raise ConfigError(_bad_position(name, value))
        return int(value)
    if isinstance(value, float):
        raise ConfigError(f"{name} {value!r}: a plain number is a frame index (an integer); "
                          f"write {value:g}s for seconds")
    if isinstance(value, str):
        text = value.strip().lower()
        if text.isdigit():
            return int(text)
        match = _SECONDS.match(text)
        if match:
            return Fraction(match.group(1))
    raise ConfigError(_bad_position(name, value))


def _bad_position(name, value) -> str:
    return f"{name} must be a frame index (0, 1, ...) or seconds such as 2.5s, got {value!r}"


def normalize(start=None, end=None, every=1, max_frames=None) -> dict:
    """The four settings checked (:func:`check`) and written one way: frame indices as ints,
    seconds as ``"2.5s"`` strings, a start at 0 as None (so "12" and 12, "2.50s" and "2.5s",
    0 and None hash alike)."""
    check(start, end, every, max_frames)
    out = {}
    for name, value in (("start", start), ("end", end)):
        parsed = parse_position(value, name)
        out[name] = _seconds_text(parsed) if isinstance(parsed, Fraction) else parsed
    if out["start"] in (0, "0s"):
        out["start"] = None  # the first frame either way
    out["every"], out["max_frames"] = int(every), None if max_frames is None else int(max_frames)
    return out


def _seconds_text(seconds: Fraction) -> str:
    text = f"{float(seconds):.6f}".rstrip("0").rstrip(".")
    return f"{text}s"


def check(start=None, end=None, every=1, max_frames=None) -> None:
    """ConfigError for a setting that is wrong whatever the clip (see the module docstring)."""
    first, stop = parse_position(start, "start"), parse_position(end, "end")
    positive_int("every", every, hint=" (1 keeps every frame)")
    positive_int("max_frames", max_frames, none=True)
    base = first if first is not None else (0 if isinstance(stop, int) else Fraction(0))
    if stop is not None and type(stop) is type(base) and stop <= base:
        raise ConfigError(f"end ({end}) must be after start ({start if start is not None else 0}); "
                          "end is exclusive: start 0, end 24 keeps frames 0-23")


def recorded(record) -> dict:
    """The selection a run's record (``OUTPUT.vidreal.yaml``, as ``translate`` writes it) holds:
    ``{start, end, every, max_frames}``, the keys it sets; {} when there is no record. InputError
    (one line) for a record that is not a YAML mapping."""
    import yaml

    record = Path(record)
    if not record.is_file():
        return {}
    try:
        data = yaml.safe_load(record.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read the record ({type(exc).__name__})", record) from None
    if not isinstance(data, dict):
        raise InputError("the record is not a YAML mapping", record)
    return {key: data[key] for key in KEYS if data.get(key) is not None}


def is_active(start=None, end=None, every=1, max_frames=None) -> bool:
    """True when the settings keep anything other than every frame."""
    return not (parse_position(start, "start") in (None, 0) and end is None and every == 1 and max_frames is None)


def of(config) -> dict:
    """``{start, end, every, max_frames}`` of a TranslateConfig (or any object with those fields)."""
    return {key: getattr(config, key) for key in KEYS}


@dataclass
class Plan:
    """A clip's selection: ``indices`` int64 (N,) source frames; ``info`` the output's VideoInfo
    (N frames, fps / every, kept frame times for a variable frame rate); ``source`` the input's;
    ``audio_span`` (t0, t1) seconds of source audio to keep, None for all of it."""

    indices: np.ndarray
    info: object
    source: object
    every: int
    audio_span: tuple[float, float] | None

    @property
    def active(self) -> bool:
        return len(self.indices) != self.source.n_frames

    def summary(self) -> dict:
        """What the selection kept, for OUTPUT.vidreal.yaml."""
        idx = self.indices
        step = f" step {self.every}" if self.every > 1 and len(idx) > 1 else ""
        return {"source_frames": self.source.n_frames,
                "kept": f"{idx[0]}..{idx[-1]}{step}" if len(idx) > 1 else str(idx[0]),
                "frames": len(idx), "fps": None if self.info.fps is None else str(self.info.fps),
                "audio_seconds": None if self.audio_span is None else [round(t, 4) for t in self.audio_span]}


def select(info, start=None, end=None, every=1, max_frames=None) -> Plan:
    """The frames of the clip ``info`` (a ``vidreal.io.VideoInfo``) to keep; see the module docstring.

    Raises ConfigError for settings that are always wrong, InputError (naming the clip) for
    settings that do not fit this clip.
    """
    check(start, end, every, max_frames)
    n, every = info.n_frames, int(every)
    first = _frame(info, parse_position(start, "start"), "start", 0)
    stop = _frame(info, parse_position(end, "end"), "end", n)
    if first >= n:
        raise InputError(f"start {_said(start, first)} is past the end of the clip ({_length(info)})", info.path)
    stop = min(stop, n)
    if stop <= first:
        raise InputError(f"end {_said(end, stop)} is not after start {_said(start, first)} "
                         "(end is exclusive)", info.path)
    indices = np.arange(first, stop, every, dtype=np.int64)
    if max_frames is not None:
        indices = indices[:int(max_frames)]
    covered = min(int(indices[-1]) + every, stop)
    out = info
    span = None
    if len(indices) != n:
        timestamps = None
        if info.timestamps is not None:
            timestamps = info.timestamps[indices] - info.timestamps[indices[0]]
        fps = None if info.fps is None else Fraction(info.fps) / every
        out = dataclasses.replace(info, n_frames=len(indices), fps=fps, timestamps=timestamps)
        if info.has_audio:
            span = (_time(info, int(indices[0])), _time(info, covered))
    return Plan(indices, out, info, every, span)


def _frame(info, position, name: str, default: int) -> int:
    """A parsed position -> a frame index of the clip (seconds -> the first frame at or after that time)."""
    if position is None:
        return default
    if isinstance(position, int):
        return position
    if info.fps is None:
        raise InputError(f"{name} {_seconds_text(position)}: a still image has no time; give {name} as a frame "
                         "index (0 is its only frame)", info.path)
    if info.timestamps is not None:
        return int(np.searchsorted(info.timestamps, float(position) - 1e-9, side="left"))
    return math.ceil(position * Fraction(info.fps))


def _time(info, index: int) -> float:
    """Seconds of frame ``index`` from the first (``index == n_frames``: the clip's end)."""
    if info.timestamps is not None and index < len(info.timestamps):
        return float(info.timestamps[index])
    if info.timestamps is not None:
        return float(info.timestamps[-1] + (info.timestamps[-1] - info.timestamps[0]) / max(len(info.timestamps) - 1, 1))
    return float(Fraction(index) / Fraction(info.fps))


def _said(value, frame: int) -> str:
    """How a position reads in a message: ``12`` or ``2.5s (frame 60)``."""
    if value is None:
        return f"(frame {frame})"
    parsed = parse_position(value, "position")
    return f"{_seconds_text(parsed)} (frame {frame})" if isinstance(parsed, Fraction) else str(parsed)


def _length(info) -> str:
    if info.fps is None:
        return "a still image: frame 0 only"
    return f"{info.n_frames} frames, {info.n_frames / float(info.fps):.2f} s"

"""One check function per rule, for config keys and API arguments alike; each returns the value
(as the type it checks) or raises ConfigError naming the value, in one line.

    steps = positive_int("steps", steps, maximum=1000)
    eta = number("eta", eta, 0, 1, none=True)
    kv_cache = one_of("kv_cache", kv_cache, ("device", "cpu", "off"))

Booleans are never numbers here (YAML's ``true`` is an int in Python), numpy scalars are, and
``nan``/``inf`` are refused wherever a number is asked for. Torch-free, imports nothing of vidreal
but its errors.
"""
from __future__ import annotations

import difflib
import math
import numbers
from fractions import Fraction

from vidreal.errors import ConfigError


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(name: str, value, *, minimum: int = 1, maximum: int | None = None, none: bool = False,
                 hint: str = ""):
    """``value`` as an int >= ``minimum`` (and <= ``maximum``); None passes when ``none``."""
    if value is None and none:
        return None
    if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
        if minimum == 1 and maximum is None:
            what = "a positive integer"
        elif maximum is None:
            what = f"an integer >= {minimum}"
        else:
            what = f"an integer in {minimum}..{maximum}"
        raise ConfigError(f"{name} must be {what}{' or null' if none else ''}{hint}, got {value!r}")
    return int(value)


def finite(name: str, value) -> float:
    """``value`` as a float if it is a real, finite number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def number(name: str, value, low: float, high: float, *, none: bool = False, hint: str = ""):
    """``value`` as a float in [low, high] (finite, not a bool); None passes when ``none``."""
    if value is None and none:
        return None
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
            or not low <= value <= high):
        raise ConfigError(f"{name} must be a number in [{low:g}, {high:g}]{' or null' if none else ''}{hint}, "
                          f"got {value!r}")
    return float(value)


def string(name: str, value, *, none: bool = False) -> str | None:
    """``value`` if it is a string (None passes when ``none``)."""
    if value is None and none:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string{' or null' if none else ''}, got {value!r}")
    return value


def flag(name: str, value) -> bool:
    """``value`` if it is a bool (YAML true/false)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def did_you_mean(value, choices) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` to ``value`` (by spelling), or ``""``."""
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
    close = close or difflib.get_close_matches(str(value).lower(), [c.lower() for c in choices], n=1, cutoff=0.6)
    if close and close[0] not in choices:
        close = [c for c in choices if c.lower() == close[0]]
    return f"; did you mean {close[0]!r}?" if close else ""


def one_of(name: str, value, choices, *, none: bool = False):
    """``value`` if it is one of ``choices`` (None passes when ``none``); else ConfigError listing
    them, with the closest one ("did you mean")."""
    if value is None and none:
        return None
    if isinstance(value, str) and value in choices:
        return value
    listed = ", ".join(str(c) for c in choices) + (" (or null)" if none else "")
    raise ConfigError(f"{name} must be one of {listed}, got {value!r}{did_you_mean(value, choices)}")


CRF_CODECS = ("libx264", "libx264rgb", "libx265", "libvpx-vp9")  # encoders that take a constant rate factor
CRF_MAX = 51  # x264's and x265's scale; vidreal.io writes every crf codec with it


PRESET_CODECS = ("libx264", "libx264rgb", "libx265")  # encoders with x264's speed presets
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
# vidreal's default: at 512x512 and crf 18, x264 takes 7 ms of CPU per frame here against medium's 18, for a
# file of about the same size; the CPU that decodes, detects and estimates flows ahead of the GPU needs the rest
DEFAULT_PRESET = "veryfast"


def encoder_preset(codec: str, value) -> str | None:
    """``value`` as an encoder speed preset: one of PRESETS, or None (the codec's own default, medium);
    codecs without presets ignore it."""
    return one_of("encoder_preset", value, PRESETS, none=True)


def crf(codec: str, value) -> int:
    """``value`` as a crf for ``codec``: an integer 0..51 (codecs that take none ignore it, in range)."""
    return positive_int("crf", value, minimum=0, maximum=CRF_MAX,
                        hint="" if codec in CRF_CODECS else f" ({codec} ignores it)")


def rate(name: str, value, *, none: bool = False) -> Fraction | None:
    """A frame rate as written by a user (``30``, ``"29.97"``, ``"30000/1001"``, YAML's 12.5) -> an exact
    positive Fraction; None passes when ``none``. A decimal that is an NTSC rate rounded to the digits
    written (N x 1000/1001: 23.976, 29.97, 59.94) is that rate exactly; other decimals are read as
    written (12.5 = 25/2)."""
    if value is None and none:
        return None
    text = str(value).strip() if isinstance(value, (str, numbers.Real)) and not isinstance(value, bool) else ""
    try:
        fps = Fraction(text)
    except (ValueError, ZeroDivisionError):
        fps = None
    if fps is None or fps <= 0:
        raise ConfigError(f"{name} must be a positive frame rate such as 24, 29.97 or 30000/1001, got {value!r}")
    if "/" not in text and fps.denominator != 1:  # a decimal: NTSC when it reads as one
        ntsc = Fraction(round(fps * Fraction(1001, 1000)) * 1000, 1001)
        digits = len(text.partition(".")[2]) if "e" not in text.lower() else 0
        if digits and round(ntsc, digits) == fps:
            fps = ntsc
    return fps


def pix_fmt(codec: str, value, formats) -> str | None:
    """``value`` if it is one of ``formats``, the pixel formats ``codec`` encodes (None passes: the
    codec's usual one); else ConfigError naming the valid ones."""
    if value is None:
        return None
    formats = list(formats)
    if isinstance(value, str) and value in formats:
        return value
    raise ConfigError(f"pix_fmt {value!r} is not one {codec} encodes; valid: {', '.join(formats)}"
                      f"{did_you_mean(value, formats)}")

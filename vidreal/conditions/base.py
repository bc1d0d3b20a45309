"""The detector interface shared by every condition kind, and option validation."""
from __future__ import annotations

import numpy as np

from vidreal.errors import ConfigError
from vidreal.runtime import check_frames


def check_range(name: str, value, low: float, high: float) -> float:
    """Return ``value`` as a float if ``low <= value <= high``, else raise ConfigError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not low <= number <= high:
        raise ConfigError(f"{name} must be in [{low:g}, {high:g}], got {value!r}")
    return number


class Detector:
    """A per-frame condition extractor; stateful, so a long clip can be fed chunk by chunk.

    Subclasses set ``name`` and implement ``process``. ``__call__(frames)`` takes uint8
    ``(T, H, W, 3)`` RGB frames and returns the condition maps as uint8 ``(T, H, W, 3)``,
    same H and W. ``report()`` gives a one-line note on what went wrong so far (or None);
    ``close()`` releases native resources. Detectors are context managers.
    """

    name = "detector"

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = check_frames(frames)
        return self.process(frames)

    def process(self, frames: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def skip(self, n: int) -> None:
        """``n`` frames of the clip pass without being detected (stateful detectors track across the gap)."""

    def load(self):
        """Load weights now rather than on the first frames (no-op for detectors without any)."""
        return self

    def report(self) -> str | None:
        return None

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False


def import_controlnet_aux():
    """Import controlnet_aux (slow: it imports torch and every annotator) without its warnings."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import controlnet_aux
    return controlnet_aux

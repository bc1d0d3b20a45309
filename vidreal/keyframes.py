"""Which frames are keyframes (denoised) and which are propagated: chosen from the source alone, in
frame order, so a stage can choose them ahead of the denoiser (and of the condition detectors).

    choose = KeyframeChooser("auto", max_gap=16, threshold=0.1)
    keys = [choose(frame) for frame in frames]     # frame 0 is always a keyframe

``every`` K (an int): frames 0, K, 2K, ... ``"auto"`` (adaptive, as FRESCO chooses keyframes): a frame
is a keyframe when the last keyframe no longer explains enough of it, or ``max_gap`` frames after
the last keyframe. At a small size (short side ``SMALL``), the change of frame t since keyframe a is
the share of t's pixels the keyframe does not explain: occluded or out of frame (the forward-backward
test on the flows t <-> a, ``vidreal.flow.valid_mask``), or still more than ``TOLERANCE`` grey levels
off after warping a onto t (a change of light, a cut). A static stretch scores 0, a hard cut about 1,
a pan only the strip that entered the frame. Whoever runs the clip makes its last frame a keyframe too.
"""
from __future__ import annotations

import cv2
import numpy as np

from vidreal.flow import DisFlow, valid_mask, warp

SMALL = 64  # short side (px) the change is measured at
TOLERANCE = 24  # grey levels a warped pixel may differ and still count as explained
DEFAULT_MAX_GAP = 16
DEFAULT_THRESHOLD = 0.1  # (as TranslateOptions)


def changed_share(frame: np.ndarray, key: np.ndarray, estimator) -> float:
    """Share of uint8 (h, w) grey ``frame``'s pixels that ``key`` (same size) does not explain."""
    forward, backward = estimator(np.stack([frame, key])[..., None].repeat(3, -1),
                                  np.stack([key, frame])[..., None].repeat(3, -1))
    explained = valid_mask(forward, backward)
    residual = np.abs(warp(key, forward).astype(np.int16) - frame)
    return 1.0 - float(np.count_nonzero(explained & (residual <= TOLERANCE))) / explained.size


class KeyframeChooser:
    """Fed a clip's source frames in order (uint8 (H, W, 3), any one size), says which are keyframes."""

    def __init__(self, every=None, max_gap: int = DEFAULT_MAX_GAP, threshold: float = DEFAULT_THRESHOLD):
        self.every, self.max_gap, self.threshold = every, max_gap, threshold  # checked by TranslateOptions
        self.index = 0  # the next frame's index
        self.last = 0  # index of the latest keyframe
        self._key = None  # the latest keyframe, grey at the small size (auto)
        self._estimator = DisFlow(cv2.DISOPTICAL_FLOW_PRESET_FAST) if every == "auto" else None

    @property
    def active(self) -> bool:
        """Whether any frame is propagated."""
        return self.every not in (None, 1)

    def __call__(self, frame: np.ndarray) -> bool:
        index, self.index = self.index, self.index + 1
        if self.every != "auto":
            return index % (self.every or 1) == 0
        height, width = frame.shape[:2]
        scale = SMALL / min(height, width)
        size = (max(8, round(width * scale)), max(8, round(height * scale)))
        grey = cv2.cvtColor(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
        key = index == 0 or index - self.last >= self.max_gap or \
            changed_share(grey, self._key, self._estimator) > self.threshold
        if key:
            self.last, self._key = index, grey
        return key

    def choose(self, frames: np.ndarray) -> np.ndarray:
        """bool (n,): which of the next uint8 (n, H, W, 3) frames are keyframes."""
        return np.array([self(frame) for frame in frames], dtype=bool)

"""Canny edge maps, as controlnet-aux's CannyDetector draws them for ``control_v11p_sd15_canny``."""
from __future__ import annotations

import cv2
import numpy as np

from vidreal.conditions.base import Detector, check_range, import_controlnet_aux
from vidreal.errors import ConfigError


class CannyDetector(Detector):
    """White edges on black, one map per frame: uint8 ``(T, H, W, 3)``, the 3 channels equal.

    Each map is ``cv2.Canny(frame, low_threshold, high_threshold)`` at the frame's own size.
    Frames whose sides are multiples of 64 go through controlnet-aux's ``CannyDetector``
    with its resolutions set to the frame's, so it does not resize; other sizes (which that
    detector would resize to multiples of 64) get the same ``cv2.Canny`` call directly.
    """

    name = "canny"

    def __init__(self, low_threshold: float = 100, high_threshold: float = 200):
        self.low_threshold = check_range("canny low_threshold", low_threshold, 0, 10_000)
        self.high_threshold = check_range("canny high_threshold", high_threshold, 0, 10_000)
        if self.low_threshold > self.high_threshold:
            raise ConfigError(
                f"canny low_threshold ({low_threshold}) must not exceed high_threshold ({high_threshold})"
            )
        self._aux = import_controlnet_aux().CannyDetector()

    def process(self, frames: np.ndarray) -> np.ndarray:
        _, height, width, _ = frames.shape
        out = np.empty_like(frames)
        use_aux = height % 64 == 0 and width % 64 == 0
        for i, frame in enumerate(frames):
            if use_aux:
                out[i] = self._aux(
                    frame,
                    low_threshold=self.low_threshold,
                    high_threshold=self.high_threshold,
                    detect_resolution=min(height, width),
                    image_resolution=min(height, width),
                    output_type="np",
                )
            else:
                out[i] = cv2.Canny(frame, self.low_threshold, self.high_threshold)[..., None]
        return out

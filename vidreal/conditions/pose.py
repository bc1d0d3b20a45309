"""Body pose maps from mediapipe's bundled pose model, drawn as an OpenPose COCO-18 skeleton.

mediapipe finds 33 landmarks on the most prominent person; 17 of them map onto OpenPose's
COCO-18 body points and the neck is the shoulders' midpoint. The skeleton is drawn with
controlnet-aux's own OpenPose drawing (its limb list and colours), so
``control_v11p_sd15_openpose`` reads it as it reads the OpenPose annotator's output.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys

import cv2
import numpy as np

from vidreal.conditions.base import Detector, check_range, import_controlnet_aux
from vidreal.runtime import check_frames

# OpenPose COCO-18 order; "left"/"right" are the person's own, as in mediapipe.
COCO18_NAMES = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)
# mediapipe landmark index for each COCO-18 point; the neck (None) is computed from the shoulders.
MEDIAPIPE_INDEX = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
NECK = 1
_FROM = np.array([-1 if i is None else i for i in MEDIAPIPE_INDEX])
_DIRECT = _FROM >= 0
_R_SHOULDER, _L_SHOULDER = 2, 5

# controlnet-aux's draw_bodypose uses a fixed 4 px stick width, right for the 512 px maps the
# OpenPose annotator makes; we draw at that scale (shorter side 512) and resize to the frame.
DRAW_SIZE = 512


class PoseDetector(Detector):
    """OpenPose-style skeleton on black per frame: uint8 ``(T, H, W, 3)``.

    Tracks the person across frames (mediapipe video mode with landmark smoothing), so feed
    one clip's chunks in order to one detector. Keypoints whose visibility is below
    ``visibility_threshold`` or that fall outside the frame are missing (not drawn). A frame
    with no person gets a black map and is counted for ``report()``.
    """

    name = "pose"

    def __init__(
        self,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        visibility_threshold: float = 0.3,
    ):
        self.min_detection_confidence = check_range(
            "pose min_detection_confidence", min_detection_confidence, 0, 1)
        self.min_tracking_confidence = check_range(
            "pose min_tracking_confidence", min_tracking_confidence, 0, 1)
        self.visibility_threshold = check_range("pose visibility_threshold", visibility_threshold, 0, 1)
        from mediapipe.python.solutions import pose as mp_pose

        # model_complexity=1 is the only model mediapipe bundles (0 and 2 are downloaded).
        # TFLite and absl log start-up chatter to fd 2 when the graph starts and when the
        # landmark model first sees a person: keep it from users until then.
        self._quiet = True
        with _native_stderr_silenced():
            self._pose = mp_pose.Pose(
                static_image_mode=False,
                model_complexity=1,
                smooth_landmarks=True,
                enable_segmentation=False,
                min_detection_confidence=self.min_detection_confidence,
                min_tracking_confidence=self.min_tracking_confidence,
            )
            self._pose.process(np.zeros((64, 64, 3), np.uint8))  # starts the inference engines
        _drawing()  # import controlnet-aux now rather than on the first frame
        self.n_frames = 0
        self.n_missing = 0

    def detect(self, frames: np.ndarray) -> np.ndarray:
        """Keypoints of uint8 ``(T, H, W, 3)`` RGB frames: float32 ``(T, 18, 3)`` in COCO-18 order.

        Columns are x, y in pixels and the confidence (mediapipe's visibility, 0 with no
        person); x and y are NaN where the keypoint is missing.
        """
        frames = check_frames(frames)
        if self._pose is None:
            raise RuntimeError("PoseDetector is closed")
        _, height, width, _ = frames.shape
        out = np.full((len(frames), 18, 3), np.nan, dtype=np.float32)
        out[:, :, 2] = 0.0
        for t, frame in enumerate(frames):
            landmarks = self._process(frame)
            self.n_frames += 1
            if landmarks is None:
                self.n_missing += 1
                continue
            points = np.array([(p.x, p.y, p.visibility) for p in landmarks.landmark], dtype=np.float32)
            kp = out[t]
            kp[_DIRECT] = points[_FROM[_DIRECT]]
            kp[:, 0] *= width
            kp[:, 1] *= height
            visible = (
                (kp[:, 2] >= self.visibility_threshold)
                & (kp[:, 0] >= 0) & (kp[:, 0] < width)
                & (kp[:, 1] >= 0) & (kp[:, 1] < height)
            )
            visible[NECK] = visible[_R_SHOULDER] and visible[_L_SHOULDER]
            kp[NECK, :2] = (kp[_R_SHOULDER, :2] + kp[_L_SHOULDER, :2]) / 2
            kp[NECK, 2] = min(kp[_R_SHOULDER, 2], kp[_L_SHOULDER, 2])
            kp[~visible, :2] = np.nan
        return out

    def _process(self, frame: np.ndarray):
        """mediapipe's 33 landmarks for one RGB frame (None when no person is found)."""
        frame = np.ascontiguousarray(frame)
        if not self._quiet:
            return self._pose.process(frame).pose_landmarks
        with _native_stderr_silenced():
            landmarks = self._pose.process(frame).pose_landmarks
        self._quiet = landmarks is None
        return landmarks

    def draw(self, keypoints: np.ndarray, height: int, width: int) -> np.ndarray:
        """Draw float32 ``(T, 18, 3)`` keypoints (pixels) as uint8 ``(T, height, width, 3)`` maps."""
        out = np.zeros((len(keypoints), height, width, 3), dtype=np.uint8)
        for kp, canvas in zip(keypoints, out):
            draw_pose(kp, height, width, out=canvas)
        return out

    def process(self, frames: np.ndarray) -> np.ndarray:
        _, height, width, _ = frames.shape
        return self.draw(self.detect(frames), height, width)

    def report(self) -> str | None:
        if self.n_missing == 0:
            return None
        return f"pose: no person found in {self.n_missing}/{self.n_frames} frames"

    def close(self) -> None:
        if self._pose is not None:
            self._pose.close()
            self._pose = None


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send file descriptor 2 to /dev/null for the block (native libraries log there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@functools.lru_cache(maxsize=None)
def _drawing():
    """controlnet-aux's ``draw_bodypose`` and the ``Keypoint`` tuple it takes."""
    open_pose = import_controlnet_aux().open_pose
    return open_pose.util.draw_bodypose, open_pose.body.Keypoint


def draw_pose(keypoints: np.ndarray, height: int, width: int, out: np.ndarray | None = None) -> np.ndarray:
    """Draw one person's float32 ``(18, 3)`` COCO-18 keypoints (x, y pixels; NaN = missing).

    Returns uint8 ``(height, width, 3)``: controlnet-aux's OpenPose skeleton on black, drawn on
    a canvas whose shorter side is 512 px (the annotator's own scale) and resized to the frame.
    ``out``: a black uint8 ``(height, width, 3)`` array to draw into (returned).
    """
    if out is None:
        out = np.zeros((height, width, 3), dtype=np.uint8)
    present = ~np.isnan(keypoints[:, :2]).any(axis=1)
    if not present.any():
        return out
    draw_bodypose, keypoint = _drawing()
    scale = DRAW_SIZE / min(height, width)
    canvas_h, canvas_w = round(height * scale), round(width * scale)
    same_size = (canvas_h, canvas_w) == (height, width)
    canvas = out if same_size else np.zeros((canvas_h, canvas_w, 3), dtype=np.uint8)
    # draw_bodypose draws in place; it takes x, y normalised to [0, 1] and None for a missing point
    draw_bodypose(canvas, [
        keypoint(float(x) / width, float(y) / height) if ok else None
        for (x, y, _), ok in zip(keypoints, present)
    ])
    if not same_size:
        interpolation = cv2.INTER_AREA if scale > 1 else cv2.INTER_LINEAR
        cv2.resize(canvas, (width, height), dst=out, interpolation=interpolation)
    return out


def detect_keypoints(frames: np.ndarray, **options) -> np.ndarray:
    """COCO-18 keypoints of one clip, tracked across its frames.

    frames: uint8 ``(T, H, W, 3)`` RGB. options: PoseDetector's keyword arguments.
    Returns float32 ``(T, 18, 3)``: x, y in pixels and confidence; NaN x, y where missing.
    """
    with PoseDetector(**options) as detector:
        return detector.detect(frames)

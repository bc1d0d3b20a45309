"""Structure fidelity: does the output keep the source's edges and the person's pose?

- Edge F1: Canny edges of source and output frames (``cv2.Canny(frame, 100, 200)``, the same
  call and defaults as the ``canny`` condition). Precision = fraction of output edge pixels
  within ``radius`` px (Euclidean) of a source edge; recall = fraction of source edge pixels
  within ``radius`` of an output edge; F1 their harmonic mean. Two empty edge maps agree
  (F1 = 1); one empty map against a non-empty one scores 0. The clip value is the mean of the
  per-frame values.
- Pose PCK: COCO-18 keypoints of the most prominent person (mediapipe's full-frame pose,
  ``PoseDetector(mode="single")``, tracked across the clip) on source and output. Only keypoints visible in the source count (the detector already drops
  low-visibility and off-frame points: NaN). A keypoint is correct when the output has it within
  ``alpha * d`` px of the source's, ``d`` = the diagonal of the bounding box of the source's
  visible keypoints in that frame (alpha 0.1 by default). Frames whose source has fewer than two
  visible keypoints (no person) are excluded and counted. The clip value is the mean of the
  per-frame values over the frames used.
"""
from __future__ import annotations

import cv2
import numpy as np
from vidreal.progress import bar as tqdm  # tqdm on a terminal, plain lines in a log, off under -q

from vidreal.errors import ConfigError, InputError
from vidreal.metrics.temporal import check_same_shape

CANNY_LOW, CANNY_HIGH = 100, 200


def edge_map(frame: np.ndarray, low: float = CANNY_LOW, high: float = CANNY_HIGH) -> np.ndarray:
    """Canny edges of one uint8 ``(H, W, 3)`` RGB frame: bool ``(H, W)``."""
    return cv2.Canny(np.ascontiguousarray(frame), low, high) > 0


def _near(edges: np.ndarray, radius: float) -> np.ndarray:
    """bool ``(H, W)``: pixels within Euclidean distance ``radius`` of a True pixel of ``edges``
    (a dilation by the disk of integer offsets with dx^2 + dy^2 <= radius^2)."""
    r = int(np.floor(radius))
    if r == 0:
        return edges
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = (dx * dx + dy * dy <= radius * radius).astype(np.uint8)
    return cv2.dilate(edges.astype(np.uint8), disk) > 0


def edge_scores(source_edges: np.ndarray, output_edges: np.ndarray, radius: float = 2.0) -> tuple[float, float, float]:
    """(precision, recall, F1) of bool ``(H, W)`` output edges against source edges."""
    n_src, n_out = int(np.count_nonzero(source_edges)), int(np.count_nonzero(output_edges))
    if n_src == 0 and n_out == 0:
        return 1.0, 1.0, 1.0
    if n_src == 0 or n_out == 0:
        return (0.0 if n_out else 1.0), (0.0 if n_src else 1.0), 0.0
    precision = np.count_nonzero(_near(source_edges, radius) & output_edges) / n_out
    recall = np.count_nonzero(_near(output_edges, radius) & source_edges) / n_src
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return float(precision), float(recall), float(f1)


class EdgeStream:
    """:func:`edge_metrics` of a clip that arrives in chunks: :meth:`add`, then :meth:`result`."""

    def __init__(self, radius: float = 2.0):
        if radius < 0:
            raise ConfigError(f"edge radius must be >= 0, got {radius!r}")
        self.radius = radius
        self.per: dict[str, list] = {"edge_precision": [], "edge_recall": [], "edge_f1": []}

    def add(self, source: np.ndarray, output: np.ndarray) -> None:
        """Score uint8 ``(n, H, W, 3)`` output frames against the source's, frame by frame."""
        check_same_shape(source, output)
        for src, out in zip(source, output):
            p, r, f = edge_scores(edge_map(src), edge_map(out), self.radius)
            self.per["edge_precision"].append(p)
            self.per["edge_recall"].append(r)
            self.per["edge_f1"].append(f)

    def result(self) -> dict:
        result = {key: float(np.mean(values)) for key, values in self.per.items()}
        result["per_frame"] = {key: list(values) for key, values in self.per.items()}
        return result


def edge_metrics(source: np.ndarray, output: np.ndarray, radius: float = 2.0, progress: bool = False) -> dict:
    """Edge precision/recall/F1 of uint8 ``(T, H, W, 3)`` output frames against the source's.

    Returns ``{"edge_f1", "edge_precision", "edge_recall": float, "per_frame": {same keys: list of T}}``.
    """
    stream = EdgeStream(radius)
    check_same_shape(source, output)
    for t in tqdm(range(len(source)), desc="edges", unit="frame", disable=not progress):
        stream.add(source[t:t + 1], output[t:t + 1])
    return stream.result()


def pose_pck(source_keypoints: np.ndarray, output_keypoints: np.ndarray, alpha: float = 0.1) -> dict:
    """PCK of output keypoints against source keypoints.

    source_keypoints, output_keypoints: float32 ``(T, K, 3)`` (x, y pixels, confidence; NaN x/y
    where missing), as ``detect_keypoints`` returns them.
    Returns ``{"pose_pck": float | None, "pose_frames": frames used, "pose_frames_excluded":
    frames without a person in the source, "per_frame": {"pose_pck": list of T, None where
    excluded}}``.
    """
    if not alpha > 0:
        raise ConfigError(f"PCK alpha must be > 0, got {alpha!r}")
    if source_keypoints.shape != output_keypoints.shape or source_keypoints.ndim != 3:
        raise InputError(
            f"keypoint arrays must both be (T, K, 3), got {source_keypoints.shape} and {output_keypoints.shape}"
        )
    per = []
    for src, out in zip(source_keypoints, output_keypoints):
        visible = np.isfinite(src[:, :2]).all(axis=1)
        if visible.sum() < 2:
            per.append(None)
            continue
        pts = src[visible, :2]
        size = float(np.linalg.norm(pts.max(axis=0) - pts.min(axis=0)))
        if size == 0:
            per.append(None)
            continue
        dist = np.linalg.norm(out[visible, :2] - pts, axis=1)  # NaN where the output lacks the point
        correct = np.isfinite(dist) & (np.nan_to_num(dist, nan=np.inf) <= alpha * size)
        per.append(float(correct.mean()))
    used = [v for v in per if v is not None]
    return {
        "pose_pck": float(np.mean(used)) if used else None,
        "pose_frames": len(used),
        "pose_frames_excluded": len(per) - len(used),
        "per_frame": {"pose_pck": per},
    }


class PoseStream:
    """:func:`pose_metrics` of a clip that arrives in chunks (in order): one tracking detector
    per clip; :meth:`add`, then :meth:`result`; :meth:`close` frees the detectors."""

    def __init__(self, alpha: float = 0.1):
        if not alpha > 0:
            raise ConfigError(f"PCK alpha must be > 0, got {alpha!r}")
        from vidreal.conditions.pose import PoseDetector

        self.alpha = alpha
        self.detectors = (PoseDetector(mode="single"), PoseDetector(mode="single"))  # source, output
        self.keypoints: tuple[list, list] = ([], [])

    def add(self, source: np.ndarray, output: np.ndarray) -> None:
        """Detect keypoints on uint8 ``(n, H, W, 3)`` source and output frames."""
        check_same_shape(source, output)
        for detector, kept, clip in zip(self.detectors, self.keypoints, (source, output)):
            kept.append(detector.detect(clip))

    def result(self) -> dict:
        """What :func:`pose_pck` returns for the frames added so far."""
        return pose_pck(np.concatenate(self.keypoints[0]), np.concatenate(self.keypoints[1]), alpha=self.alpha)

    def close(self) -> None:
        for detector in self.detectors:
            detector.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False


def pose_metrics(source: np.ndarray, output: np.ndarray, alpha: float = 0.1, progress: bool = False) -> dict:
    """Detect keypoints on uint8 ``(T, H, W, 3)`` source and output frames and score ``pose_pck``.

    Each clip gets its own tracking detector (as ``detect_keypoints``). Returns what ``pose_pck`` returns.
    """
    if not alpha > 0:
        raise ConfigError(f"PCK alpha must be > 0, got {alpha!r}")
    check_same_shape(source, output)
    with PoseStream(alpha) as stream, tqdm(total=len(source), desc="pose", unit="frame", disable=not progress) as bar:
        for start in range(0, len(source), 8):
            stream.add(source[start:start + 8], output[start:start + 8])
            bar.update(len(source[start:start + 8]))
        return stream.result()

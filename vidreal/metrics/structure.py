"""Structure fidelity: does the output keep the source's edges and the person's pose?

- Edge F1: Canny edges of source and output frames (``cv2.Canny(frame, 100, 200)``, the same
  call and defaults as the ``canny`` condition). Precision = fraction of output edge pixels
  within ``radius`` px (Euclidean) of a source edge; recall = fraction of source edge pixels
  within ``radius`` of an output edge; F1 their harmonic mean. Two empty edge maps agree
  (F1 = 1); one empty map against a non-empty one scores 0. The clip value is the mean of the
  per-frame values.
- Pose PCK: COCO-18 keypoints (``vidreal.conditions.pose.detect_keypoints``, mediapipe) on
  source and output. Only keypoints visible in the source count (the detector already drops
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


def edge_metrics(source: np.ndarray, output: np.ndarray, radius: float = 2.0, progress: bool = False) -> dict:
    """Edge precision/recall/F1 of uint8 ``(T, H, W, 3)`` output frames against the source's.

    Returns ``{"edge_f1", "edge_precision", "edge_recall": float, "per_frame": {same keys: list of T}}``.
    """
    if radius < 0:
        raise ConfigError(f"edge radius must be >= 0, got {radius!r}")
    check_same_shape(source, output)
    per = {"edge_precision": [], "edge_recall": [], "edge_f1": []}
    for src, out in tqdm(zip(source, output), total=len(source), desc="edges", unit="frame", disable=not progress):
        p, r, f = edge_scores(edge_map(src), edge_map(out), radius)
        per["edge_precision"].append(p)
        per["edge_recall"].append(r)
        per["edge_f1"].append(f)
    result = {key: float(np.mean(values)) for key, values in per.items()}
    result["per_frame"] = per
    return result


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


def pose_metrics(source: np.ndarray, output: np.ndarray, alpha: float = 0.1, progress: bool = False) -> dict:
    """Detect keypoints on uint8 ``(T, H, W, 3)`` source and output frames and score ``pose_pck``.

    Each clip gets its own tracking detector (as ``detect_keypoints``). Returns what ``pose_pck`` returns.
    """
    if not alpha > 0:
        raise ConfigError(f"PCK alpha must be > 0, got {alpha!r}")
    check_same_shape(source, output)
    from vidreal.conditions.pose import PoseDetector

    keypoints = []
    with tqdm(total=2 * len(source), desc="pose", unit="frame", disable=not progress) as bar:
        for clip in (source, output):
            with PoseDetector() as detector:  # what detect_keypoints does, chunked for the bar
                chunks = []
                for start in range(0, len(clip), 8):
                    chunks.append(detector.detect(clip[start:start + 8]))
                    bar.update(len(chunks[-1]))
            keypoints.append(np.concatenate(chunks))
    return pose_pck(keypoints[0], keypoints[1], alpha=alpha)

"""The label-preserving gate: did the translation keep the source's structure?

``StructureScores`` scores an output against its source from frames already in memory, chunk
by chunk as a translation streams (no file is decoded again): edge F1 and pose PCK with the
definitions and defaults of ``vidreal.metrics.structure`` (Canny edges, radius 2 px; the most
prominent person's mediapipe keypoints tracked across the clip, alpha 0.1), so the numbers equal
``vidreal metrics``'s.

``Gate`` holds the thresholds (``min_edge_f1``, ``min_pose_pck``, each in [0, 1] or None) and
judges scores: an item is rejected when a score is below its threshold. A clip whose source has
no person has no pose PCK (None) and is not judged on it.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from vidreal.errors import ConfigError


@dataclass(frozen=True)
class Gate:
    """Thresholds of the gate; None = that score is not checked."""

    min_edge_f1: float | None = None
    min_pose_pck: float | None = None

    def __post_init__(self):
        for name in ("min_edge_f1", "min_pose_pck"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")

    @property
    def active(self) -> bool:
        return self.min_edge_f1 is not None or self.min_pose_pck is not None

    @property
    def needs_pose(self) -> bool:
        return self.min_pose_pck is not None

    def to_dict(self) -> dict | None:
        """The thresholds as recorded in the manifest (None when the gate is off)."""
        if not self.active:
            return None
        return {"min_edge_f1": self.min_edge_f1, "min_pose_pck": self.min_pose_pck}

    def failures(self, scores: dict) -> list[str]:
        """Why ``scores`` ({"edge_f1", "pose_pck"}) fail the gate, e.g. ["edge_f1 0.41 < 0.5"]; [] = passes."""
        out = []
        for key, threshold in (("edge_f1", self.min_edge_f1), ("pose_pck", self.min_pose_pck)):
            value = scores.get(key)
            if threshold is not None and value is not None and value < threshold:
                out.append(f"{key} {value:.3f} < {threshold:g}")
        return out


class StructureScores:
    """Edge F1 (and pose PCK when ``pose``) of output frames against source frames, streamed.

        scores = StructureScores(pose=True)
        scores.add_source(chunk)      # uint8 (n, H, W, 3), in clip order
        scores.add_output(frames)     # uint8 (m, H', W', 3), in clip order (resized to the source's size)
        scores.result()               # {"edge_f1": float, "pose_pck": float | None}

    Source and output may arrive in pieces of different lengths; they are paired frame by frame.
    Memory holds only the source frames still waiting for their output.
    """

    def __init__(self, pose: bool = True, edge_radius: float = 2.0, pck_alpha: float = 0.1):
        self.edge_radius, self.pck_alpha = edge_radius, pck_alpha
        self._waiting: deque = deque()
        self._edge_f1: list[float] = []
        self._keypoints: tuple[list, list] = ([], [])
        self._detectors = None
        if pose:
            from vidreal.conditions.pose import PoseDetector

            self._detectors = (PoseDetector(mode="single"), PoseDetector(mode="single"))

    def add_source(self, frames: np.ndarray) -> None:
        self._waiting.extend(frames)

    def add_output(self, frames: np.ndarray) -> None:
        from vidreal.io import resize_frames
        from vidreal.metrics.structure import edge_map, edge_scores

        if len(frames) > len(self._waiting):
            raise ValueError("more output frames than source frames")
        source = np.stack([self._waiting.popleft() for _ in range(len(frames))])
        if frames.shape[1:3] != source.shape[1:3]:
            frames = resize_frames(frames, *source.shape[1:3])
        for src, out in zip(source, frames):
            self._edge_f1.append(edge_scores(edge_map(src), edge_map(out), self.edge_radius)[2])
        if self._detectors is not None:
            for keep, detector, clip in zip(self._keypoints, self._detectors, (source, frames)):
                keep.append(detector.detect(clip))

    def result(self) -> dict:
        """{"edge_f1": mean over frames, "pose_pck": as ``pose_pck`` (None without pose or person)}."""
        from vidreal.metrics.structure import pose_pck

        scores = {"edge_f1": float(np.mean(self._edge_f1)) if self._edge_f1 else None, "pose_pck": None}
        if self._keypoints[0]:
            source, output = (np.concatenate(k) for k in self._keypoints)
            scores["pose_pck"] = pose_pck(source, output, alpha=self.pck_alpha)["pose_pck"]
        return scores

    def close(self) -> None:
        if self._detectors is not None:
            for detector in self._detectors:
                detector.close()
            self._detectors = None

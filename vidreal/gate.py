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
    """Edge F1 (and pose PCK when ``pose``) of output frames against their source frames, streamed
    as pairs: ``vidreal.metrics``' own ``EdgeStream``/``PoseStream``, so the numbers equal
    ``vidreal metrics``'s.

        scores = StructureScores(pose=True)
        scores.add(source, output)    # uint8 (n, H, W, 3) each, in clip order (output resized to the source's size)
        scores.result()               # {"edge_f1": float, "pose_pck": float | None}
    """

    def __init__(self, pose: bool = True, edge_radius: float = 2.0, pck_alpha: float = 0.1):
        from vidreal.metrics.structure import EdgeStream, PoseStream

        self._edges = EdgeStream(edge_radius)
        self._pose = PoseStream(pck_alpha) if pose else None

    def add(self, source: np.ndarray, output: np.ndarray) -> None:
        from vidreal.io import resize_frames

        if output.shape[1:3] != source.shape[1:3]:
            output = resize_frames(output, *source.shape[1:3])
        self._edges.add(source, output)
        if self._pose is not None:
            self._pose.add(source, output)

    def result(self) -> dict:
        """{"edge_f1": mean over frames, "pose_pck": as ``pose_pck`` (None without pose or person)}."""
        return {"edge_f1": self._edges.result()["edge_f1"],
                "pose_pck": None if self._pose is None else self._pose.result()["pose_pck"]}

    def close(self) -> None:
        if self._pose is not None:
            self._pose.close()
            self._pose = None

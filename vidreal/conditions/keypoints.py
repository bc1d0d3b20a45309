"""Pose keypoints as a JSON file: the labels a pose-based recognizer or a PCK check reads.

    {"format": "coco18", "names": ["nose", "neck", ...], "width": W, "height": H,
     "frames": [{"index": 0, "people": [{"track": 0, "keypoints": [[x, y, c], ... 18]}]}, ...]}

One entry per frame (``index`` counts from 0 in the clip), one per person found in it (``track``:
the person's id, stable across frames), 18 ``[x, y, c]`` in OpenPose COCO-18 order
(``COCO18_NAMES``): x, y in pixels of the source frame, c the detector's confidence; a missing
keypoint is ``[0, 0, 0]``, as in OpenPose's own JSON.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vidreal.conditions.pose import COCO18_NAMES
from vidreal.errors import ConfigError


def check_keypoints_path(path) -> Path:
    """``path`` as a Path if it names a ``.json`` file, else ConfigError."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise ConfigError(f"the keypoints file must be a .json file, got {str(path)!r}")
    if path.is_dir():
        raise ConfigError(f"the keypoints file is a folder: {str(path)!r}")
    return path


class KeypointsLog:
    """Collects the people of a clip, chunk by chunk, for one keypoints file.

    ``scale`` (sx, sy) maps the detector's pixels to the source frame's (conditions may be
    extracted at a working size); ``width``/``height`` are the source frame's size.
    """

    def __init__(self, width: int, height: int, scale: tuple[float, float] = (1.0, 1.0)):
        self.width, self.height = int(width), int(height)
        self.scale = scale
        self.frames: list[dict] = []

    def add(self, people_per_frame: list) -> None:
        """Append frames as ``PoseDetector.detect_people`` returns them: per frame a list of
        (track id, float32 ``(18, 3)`` keypoints, NaN x, y where missing)."""
        sx, sy = self.scale
        for people in people_per_frame:
            entry = {"index": len(self.frames), "people": []}
            for track, kp in people:
                rows = []
                for x, y, c in kp:
                    if np.isnan(x) or np.isnan(y):
                        rows.append([0, 0, 0])
                    else:
                        rows.append([round(float(x) * sx, 2), round(float(y) * sy, 2), round(float(c), 4)])
                entry["people"].append({"track": int(track), "keypoints": rows})
            self.frames.append(entry)

    def to_dict(self) -> dict:
        return {"format": "coco18", "names": list(COCO18_NAMES), "width": self.width, "height": self.height,
                "frames": self.frames}

    def write(self, path) -> Path:
        """Write the file atomically; returns its path."""
        from vidreal.io import atomic_output

        path = check_keypoints_path(path)
        with atomic_output(path) as tmp:
            Path(tmp).write_text(json.dumps(self.to_dict(), separators=(",", ":")), encoding="utf-8")
        return path


def read_keypoints(path) -> dict:
    """The dict a keypoints file holds (see the module docstring)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))

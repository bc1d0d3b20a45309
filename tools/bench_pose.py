"""Pose: detection rate and people per frame, single vs multi mode, and extraction speed.

    python tools/bench_pose.py [--frames 48] [--size 512]

1. On every humanoid sample clip (samples/*.mp4): frames with at least one person, frames with
   two or more, and mean people per frame, for ``mode=single`` (mediapipe's full-frame model)
   and ``mode=multi`` (person detector + per-track crops), at the clip's own size.
2. Speed at ``--size`` (short side) in multi mode: frames/s of the pose condition alone and of
   canny + pose together (``DetectorSet``, as translation runs them), on the two-person sample
   and on a three-person clip made by placing the pair beside the single walker. One run each;
   the machine's other load shows in the numbers.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidreal.conditions import DetectorSet  # noqa: E402
from vidreal.conditions.pose import PoseDetector  # noqa: E402
from vidreal.io import read_video, resize_frames  # noqa: E402


def people_stats(frames: np.ndarray, mode: str) -> tuple[int, int, float]:
    with PoseDetector(mode=mode) as detector:
        people = detector.detect_people(frames)
    counts = np.array([len(p) for p in people])
    return int((counts >= 1).sum()), int((counts >= 2).sum()), float(counts.mean())


def to_size(frames: np.ndarray, size: int) -> np.ndarray:
    h, w = frames.shape[1:3]
    scale = size / min(h, w)
    return resize_frames(frames, round(h * scale / 2) * 2, round(w * scale / 2) * 2)


def speed(frames: np.ndarray, kinds, options) -> tuple[float, float]:
    """(frames/s, mean people per frame of the pose detector)."""
    with DetectorSet(kinds, options) as detectors:
        detectors(frames[:1])  # warm-up (graph start, first detection) not timed
        start = time.perf_counter()
        counts = []
        for i in range(1, len(frames), 8):
            detectors(frames[i:i + 8])
            counts += [len(p) for p in detectors.detectors["pose"].last_people]
        seconds = time.perf_counter() - start
    return (len(frames) - 1) / seconds, float(np.mean(counts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()

    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    print(f"{'clip':<26} {'mode':<7} {'frames':>6} {'>=1 person':>10} {'>=2 people':>10} {'people/frame':>12}")
    clips = {}
    for path in sorted((ROOT / "samples").glob("humanoid_*.mp4")):
        frames = read_video(path).frames[:args.frames]
        clips[path.stem] = frames
        for mode in ("single", "multi"):
            one, two, mean = people_stats(frames, mode)
            print(f"{path.stem:<26} {mode:<7} {len(frames):>6} {one:>10} {two:>10} {mean:>12.2f}")

    pair, walk = clips["humanoid_pair_ground"], clips["humanoid_walk_ground"]
    n = min(len(pair), len(walk))
    three = np.concatenate([pair[:n], walk[:n]], axis=2)  # 256 x 640: three people
    print(f"\nspeed at {args.size} px (short side), mode multi, one run each:")
    print(f"{'clip':<26} {'kinds':<12} {'size':>10} {'frames/s':>9} {'people/frame':>12}")
    for name, frames in (("pair (2 people)", pair), ("pair + walker (3 people)", three)):
        frames = to_size(frames, args.size)
        for kinds in (("pose",), ("canny", "pose")):
            fps, mean = speed(frames, kinds, {"pose": {"mode": "multi"}})
            size = f"{frames.shape[2]}x{frames.shape[1]}"
            print(f"{name:<26} {'+'.join(kinds):<12} {size:>10} {fps:>9.1f} {mean:>12.2f}")


if __name__ == "__main__":
    main()

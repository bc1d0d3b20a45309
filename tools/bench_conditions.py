"""Throughput of decoding and condition extraction at 512 px on this machine.

Builds a 512 x 512 clip of the astronaut sliding sideways (``--frames`` frames, mp4 via
vidreal.write_video), then times decoding (vidreal.iter_video), extraction of canny, pose, and
canny + pose together (a DetectorSet fed chunk by chunk, as ``vidreal conditions`` does; several kinds run in
parallel threads),
decode + both kinds, and ``extract_file`` end to end (detector set-up, decoding, extraction,
encoding of both maps). For each it prints wall-clock frames/s and this process's CPU time per
frame: on a shared machine the wall rate drops with other processes' load, the CPU time much less.

    .venv/bin/python tools/bench_conditions.py [--frames 60] [--chunk-size 16] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from skimage import data

from vidreal import io
from vidreal.conditions import DetectorSet, extract_file


def make_clip(n_frames: int) -> np.ndarray:
    """uint8 (n_frames, 512, 512, 3): the astronaut sliding right by 2 px a frame."""
    astronaut = data.astronaut()
    padded = np.pad(astronaut, ((0, 0), (2 * n_frames, 0), (0, 0)), mode="edge")
    return np.stack([padded[:, 2 * (n_frames - t): 2 * (n_frames - t) + 512] for t in range(n_frames)])


def timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def best(runs) -> tuple[float, float]:
    """The fastest (wall, cpu) pair of several runs."""
    return min(runs, key=lambda run: run[0])


def extract(source, kinds):
    """(wall, cpu) of feeding ``source()``'s chunks to a fresh DetectorSet (set up outside)."""
    with DetectorSet(kinds) as detectors:
        detectors(next(iter(source()))[:1])  # first-call costs (engines, imports) outside the timing
        return timed(lambda: [detectors(chunk) for chunk in source()])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--chunk-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    clip = make_clip(args.frames)
    n, chunk_size = len(clip), args.chunk_size
    print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at start; "
          f"clip {n} frames 512x512; chunk {chunk_size}; best of {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        path = io.write_video(Path(tmp) / "clip.mp4", clip, fps=Fraction(30))
        chunks = list(io.iter_video(path, chunk_size=chunk_size))
        decoded = lambda: io.iter_video(path, chunk_size=chunk_size)  # noqa: E731
        out = Path(tmp) / "maps.mp4"
        rows = [("decode (iter_video)", best(timed(lambda: list(decoded())) for _ in range(args.repeats)))]
        for kinds in [("canny",), ("pose",), ("canny", "pose")]:
            rows.append((f"extract {'+'.join(kinds)}",
                         best(extract(lambda: chunks, kinds) for _ in range(args.repeats))))
        rows.append(("decode + canny+pose",
                     best(extract(decoded, ("canny", "pose")) for _ in range(args.repeats))))
        rows.append(("extract_file canny+pose (set-up, decode, encode)", best(
            timed(lambda: extract_file(path, out, kinds=("canny", "pose"), chunk_size=chunk_size, progress=False))
            for _ in range(args.repeats))))

    width = max(len(name) for name, _ in rows)
    print(f"{'':<{width}}  {'frames/s':>9}  {'CPU ms/frame':>12}")
    for name, (wall, cpu) in rows:
        print(f"{name:<{width}}  {n / wall:9.1f}  {1000 * cpu / n:12.1f}")
    print(f"load average {os.getloadavg()[0]:.1f} at end (other processes share the cores)")
    target = 25.0
    wall, cpu = dict(rows)["extract canny+pose"]
    print(f"canny+pose: {n / wall:.1f} frames/s wall ({'meets' if n / wall >= target else 'below'} the "
          f"{target:g} frames/s target); {n / cpu:.1f} frames per CPU-second")


if __name__ == "__main__":
    main()

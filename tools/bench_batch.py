#!/usr/bin/env python
"""Batch throughput: local executor with and without overlap, Ray with 1 and 2 workers.

    python tools/bench_batch.py [--models DIR] [--items 8] [--frames 8] [--input-size 256]
                                [--size 64] [--steps 2] [--repeat 2] [--no-ray]

Without --models the tiny random models are built first (tools/make_tiny_models.py): speed does
not depend on weight values, so for GPU figures pass full-size random models
(``tools/make_tiny_models.py DIR --full-size``).
Clips are generated (a moving square at --input-size px). Each variant translates the whole set
(``overwrite=True``) and a 2-item subset; "steady items/s" = (items - 2) / (t_all - t_2), which
cancels start-up (Ray start, actor start, model loading); "items/s" includes it. The local runs
share one translator loaded beforehand.
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidreal.batch import run_batch  # noqa: E402
from vidreal.config import load_config  # noqa: E402
from vidreal.io import write_video  # noqa: E402


def make_clips(folder: Path, n: int, frames: int, size: int) -> None:
    ys, xs = np.mgrid[0:size, 0:size]
    for i in range(n):
        clip = np.zeros((frames, size, size, 3), np.uint8)
        clip[..., 0] = (xs * 200 // size)[None]
        clip[..., 2] = 40 * (i % 6)
        for t in range(frames):
            x0 = (size // 8 + t * size // (2 * frames)) % (size // 2)
            clip[t, size // 4: size // 2, x0: x0 + size // 4] = (250, 250, 60)
        write_video(folder / f"c{i % 2}" / f"clip{i:03d}.mp4", clip, fps=Fraction(24))


def timed(in_dir, out_dir, config, pattern=None, **kw) -> tuple[float, int]:
    start = time.perf_counter()
    result = run_batch(in_dir, out_dir, config, pattern=pattern, overwrite=True, progress=False, **kw)
    assert result.failed == 0, result.table()
    return time.perf_counter() - start, result.done


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, help="folder made by tools/make_tiny_models.py (sd/, controlnet-*/)")
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--input-size", type=int, default=256, help="clip size in px (decode + conditions work)")
    parser.add_argument("--size", type=int, default=64, help="working size (translation work)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--repeat", type=int, default=2, help="measure each variant this many times, keep the best")
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    models = args.models
    if models is None:
        models = work / "models"
        subprocess.run([sys.executable, str(ROOT / "tools" / "make_tiny_models.py"), str(models)], check=True,
                       stdout=subprocess.DEVNULL)
    config = load_config(model=str(models / "sd"), size=args.size, steps=args.steps, chunk_size=8, device=args.device,
                         controlnets={"canny": str(models / "controlnet-canny"), "pose": str(models / "controlnet-pose")})
    make_clips(work / "in", args.items, args.frames, args.input_size)
    subset = "clip00[01].mp4"
    print(f"{args.items} clips x {args.frames} frames, {args.input_size}px in, working size {args.size}, "
          f"{args.steps} steps, {os.cpu_count()} CPUs, models {models}")

    from vidreal.translate import load_translator

    start = time.perf_counter()
    translator = load_translator(config)
    print(f"model load: {time.perf_counter() - start:.2f} s")

    # Where an item's time goes: preparation (decode + conditions, CPU) vs translation (the model).
    from vidreal.conditions import DetectorSet
    from vidreal.io import iter_video, resize_frames, probe

    clip = sorted((work / "in").rglob("*.mp4"))[0]
    info = probe(clip)
    size = translator.working_size(info.height, info.width, config.size)
    for _ in range(2):  # the second pass is the measured one
        start = time.perf_counter()
        with DetectorSet(translator.controlnet_names) as detectors:
            pieces = [(c, detectors(resize_frames(c, *size))) for c in iter_video(clip, chunk_size=config.chunk_size)]
        t_prep = time.perf_counter() - start
        start = time.perf_counter()
        list(translator.stream(pieces, "a person", config.options(), progress=False))
        t_model = time.perf_counter() - start
    print(f"one item: prepare (decode + conditions) {t_prep:.2f} s, translate {t_model:.2f} s: overlap can at best "
          f"save {min(t_prep, t_model) / (t_prep + t_model):.0%} of the time")

    variants = [("local, no overlap", dict(translator=translator, overlap=False)),
                ("local, overlap", dict(translator=translator, overlap=True))]
    if not args.no_ray:
        import ray

        os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")  # shared machine: no OOM-killer surprises
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        variants += [("ray, 1 worker", dict(executor="ray", workers=1)),
                     ("ray, 2 workers", dict(executor="ray", workers=2))]
    timed(work / "in", work / "warmup", config, pattern=subset, translator=translator)  # first-call costs

    best: dict[str, list[float]] = {name: [float("inf"), float("inf"), 0, 0] for name, _ in variants}
    for _ in range(args.repeat):  # variants interleaved, best of the repeats: less noise from other load
        for name, kw in variants:
            tag = name.replace(" ", "").replace(",", "_")
            t_all, n_all = timed(work / "in", work / tag, config, **kw)
            t_two, n_two = timed(work / "in", work / ("sub_" + tag), config, pattern=subset, **kw)
            b = best[name]
            b[:] = [min(b[0], t_all), min(b[1], t_two), n_all, n_two]
    rows = {}
    print(f"{'variant':<20} {'s (all)':>8} {'items/s':>8} {'steady items/s':>15}   (best of {args.repeat})")
    for name, (t_all, t_two, n_all, n_two) in best.items():
        steady = (n_all - n_two) / (t_all - t_two) if t_all > t_two else float("nan")
        rows[name] = (n_all / t_all, steady)
        print(f"{name:<20} {t_all:>8.2f} {n_all / t_all:>8.3f} {steady:>15.3f}")
    print(f"overlap / no overlap (steady): {rows['local, overlap'][1] / rows['local, no overlap'][1]:.2f}x")
    if not args.no_ray:
        print(f"ray 2 / 1 workers (steady): {rows['ray, 2 workers'][1] / rows['ray, 1 worker'][1]:.2f}x")
        ray.shutdown()


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""End-to-end frames/s of ``translate_file`` on a clip, and how busy each of its stages was.

    python tools/bench_pipeline.py samples/humanoid_walk_ground.mp4 --standin-ms 59 --size 512 \\
        --frames 192 --kind canny --kind pose --keyframe-every 4
    python tools/bench_pipeline.py clip.mp4 --model weights/sd15 --controlnet canny=weights/cn-canny \\
        --controlnet pose=weights/cn-openpose --size 512 --steps 20 --device cuda --json

The input is first made into the clip measured (not timed): its short side scaled to ``--size``
and looped (forwards, backwards, ...) or cut to ``--frames`` frames. A short warm-up run (detectors,
model) precedes the timed one. Printed: frames/s end to end (frames / seconds of ``translate_file``),
the keyframes denoised, and per stage (``vidreal.stages``): ms per frame it handled (denoise: per
frame denoised; propagation: per frame propagated) and busy = its working time / the run's wall time
(waiting on a queue is no one's work). ``--json`` prints one line:
``{"fps", "frames", "keyframes", "stages": {name: {"ms_per_frame", "busy"}}, ...}``; with the stand-in and
keyframes also ``denoise_thread_ms_per_propagated``: the denoising thread's time besides denoising (the
stand-in's sleep taken out) per propagated frame, and its CPU time (``..._cpu_...``).

``--standin-ms MS`` replaces only the denoising and decoding inside the real Translator's stream with
a stand-in that sleeps MS per denoised frame (no CPU) and returns the frame's first control image;
decoding, conditions, flows, propagation and encoding are real. So a CPU-only machine shows whether
the pipeline keeps pace with a GPU (248 ms: an H200's 20-step frame; 59 ms: LCM, 4 steps). The
stand-in is built on the tiny random models (``tools/make_tiny_models.py``; ``--models DIR`` reuses
a folder it made). With the stand-in, torch runs on one CPU thread (``--torch-threads``): the stand-in
needs none, and the torch work left (the occlusion tests, warps and blends of propagation) is what a
GPU would do; on a spare thread each it does not keep OpenMP helpers spinning on the cores that the
CPU stages need (measured here: ~2 frames/s more at 59 ms, K=4). The report names the count.
"""
from __future__ import annotations

import argparse
import json
import os
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidreal.config import load_config  # noqa: E402
from vidreal.io import VideoWriter, open_media, resize_frames  # noqa: E402
from vidreal.pipeline import Translator  # noqa: E402
from vidreal.translate import STAGE_NAMES, translate_file  # noqa: E402


class StandInTranslator(Translator):
    """The real Translator whose denoising and decoding sleep ``ms`` per frame and return each frame's
    first control image (a refine pass returns the frames it was given)."""

    ms = 59.0

    def _denoise_frames(self, run, batch, bar, start=None) -> np.ndarray:
        time.sleep(self.ms * len(batch) / 1000)
        if start is not None:
            return start
        return np.stack([frame.controls[0] for frame in batch])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("input", type=Path)
    p.add_argument("--standin-ms", type=float, help="stand-in denoiser: ms per denoised frame (sleeping)")
    p.add_argument("--model", help="SD 1.5 weights (not with --standin-ms)")
    p.add_argument("--controlnet", action="append", default=[], metavar="KIND=PATH")
    p.add_argument("--models", type=Path, help="folder made by tools/make_tiny_models.py, for the stand-in")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--kind", action="append", choices=("canny", "pose"),
                   help="conditions of the stand-in (repeatable; default canny and pose)")
    p.add_argument("--size", type=int, default=512, help="working size, and the measured clip's short side")
    p.add_argument("--frames", type=int, default=96)
    p.add_argument("--keyframe-every", default="1", help="K (an integer) or auto")
    p.add_argument("--flow-method", default="dis", help="flow for propagation: dis, dis-fast, farneback, raft, raft-small")
    p.add_argument("--flow-size", type=int, help="short side flows are estimated at (default: the working size)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--chunk-size", type=int, default=8)
    p.add_argument("--serial", action="store_true", help="translate_file(overlap=False): the stages one after another")
    p.add_argument("--torch-threads", type=int,
                   help="torch's CPU threads (default: 1 with --standin-ms, torch's own otherwise)")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.add_argument("--translator-only", action="store_true",
                   help="also time the Translator alone on the same frames and conditions held in memory "
                        "(decoded and extracted first, untimed): the ceiling translate_file is measured against")
    args = p.parse_args(argv)
    if (args.standin_ms is None) == (args.model is None):
        p.error("give --standin-ms MS or --model (with --controlnet KIND=PATH)")
    if args.model and not args.controlnet:
        p.error("--model needs at least one --controlnet KIND=PATH")
    return args


def make_clip(src: Path, dst: Path, size: int, frames: int) -> Path:
    """``src`` scaled to short side ``size`` and looped back and forth (or cut) to ``frames`` frames."""
    media = open_media(src)
    info = media.info
    scale = size / min(info.height, info.width)
    height, width = round(info.height * scale / 2) * 2, round(info.width * scale / 2) * 2
    clip = np.concatenate(list(media.chunks(32)))
    order = np.concatenate([np.arange(len(clip)), np.arange(len(clip) - 2, 0, -1)]) if len(clip) > 2 \
        else np.arange(len(clip))
    with VideoWriter(dst, info.fps or 24, crf=18) as writer:
        for start in range(0, frames, 32):
            indices = [order[i % len(order)] for i in range(start, min(start + 32, frames))]
            writer.write(resize_frames(clip[indices], height, width))
    return dst


def translator_and_config(args, tmp: Path):
    keyframe_every = None if args.keyframe_every == "1" else \
        args.keyframe_every if args.keyframe_every == "auto" else int(args.keyframe_every)
    options = dict(size=args.size, steps=args.steps, chunk_size=args.chunk_size, keyframe_every=keyframe_every,
                   flow_method=args.flow_method, flow_size=args.flow_size)
    if args.model:
        config = load_config(model=args.model, controlnets=dict(item.split("=", 1) for item in args.controlnet),
                             device=args.device, dtype=args.dtype, **options)
        return None, config
    if args.models is None:
        sys.path.insert(0, str(ROOT / "tools"))
        from make_tiny_models import make_all

        paths = make_all(tmp / "models")
        models = tmp / "models"
    else:
        models = args.models
        paths = {"sd": models / "sd", "canny": models / "controlnet-canny", "pose": models / "controlnet-pose"}
    kinds = args.kind or ["canny", "pose"]
    config = load_config(model=str(paths["sd"]), controlnets={k: str(paths[k]) for k in kinds}, device="cpu",
                         **options)
    translator = Translator.from_pretrained(config.model, config.controlnets, device="cpu")
    translator.__class__ = StandInTranslator
    translator.ms = args.standin_ms
    return translator, config


def translator_alone(translator, config, clip: Path) -> float:
    """Seconds of the Translator alone on ``clip``'s frames and conditions, both made first (untimed)."""
    from vidreal.conditions import DetectorSet

    frames = np.concatenate(list(open_media(clip).chunks(32)))
    work = translator.working_size(*frames.shape[1:3], config.size)
    with DetectorSet(list(config.controlnets)) as detectors:
        conditions = detectors(resize_frames(frames, *work))
    start = time.perf_counter()
    translator(frames, conditions, config.prompt, config.options(), progress=False)
    return time.perf_counter() - start


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    threads = args.torch_threads or (1 if args.standin_ms is not None else None)
    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = make_clip(args.input, tmp / "clip.mp4", args.size, args.frames)
        warm = make_clip(args.input, tmp / "warm.mp4", args.size, min(args.frames, 2 * args.chunk_size))
        translator, config = translator_and_config(args, tmp)
        if translator is None:
            from vidreal.translate import load_translator

            translator = load_translator(config)
        run = dict(translator=translator, progress=False, record=False, overlap=not args.serial)
        translate_file(warm, tmp / "warm-out.mp4", config, **run)
        cpu, process_cpu = time.thread_time(), time.process_time()  # the denoising stage runs in this thread
        result = translate_file(clip, tmp / "out.mp4", config, **run)
        cpu, process_cpu = time.thread_time() - cpu, time.process_time() - process_cpu
        alone = translator_alone(translator, config, clip) if args.translator_only else None
    stages = {name: {"ms_per_frame": figures["ms_per_frame"], "busy": figures["busy"]}
              for name, figures in result.stages.items() if name in STAGE_NAMES}
    report = {"fps": round(result.n_frames / result.seconds, 3), "frames": result.n_frames,
              "keyframes": result.stages["denoise"]["frames"], "stages": stages, "seconds": round(result.seconds, 3),
              "size": args.size, "keyframe_every": args.keyframe_every, "standin_ms": args.standin_ms,
              "flow_method": args.flow_method, "flow_size": args.flow_size,
              "overlap": not args.serial,
              "cpu_cores": round(process_cpu / result.seconds, 2), "torch_threads": torch.get_num_threads()}  # CPU time of all threads / wall time
    # the denoising thread's time on anything but denoising (the stand-in's sleep taken out), per frame
    # propagated: an upper bound, as the keyframes' own share (their controls, batching) is counted in
    propagated = result.n_frames - report["keyframes"]
    if args.standin_ms is not None and propagated:
        other = result.stages["denoise"]["seconds"] - args.standin_ms / 1000 * report["keyframes"]
        report["denoise_thread_ms_per_propagated"] = round(1000 * other / propagated, 2)
        report["denoise_thread_cpu_ms_per_propagated"] = round(1000 * cpu / propagated, 2)
    if alone is not None:
        report["translator_fps"] = round(result.n_frames / alone, 3)
        report["vs_translator"] = round(alone / result.seconds, 3)
    if args.json:
        print(json.dumps(report))
        return
    what = f"stand-in {args.standin_ms:g} ms/frame" if args.standin_ms is not None else args.model
    flows = f", flows {args.flow_method} at {args.flow_size or args.size} px" if args.keyframe_every != "1" else ""
    print(f"{args.input.name} at {args.size} px, {result.n_frames} frames, K={args.keyframe_every}{flows}, {what}, "
          f"{'serial' if args.serial else 'overlapped'}: {report['fps']:.2f} frames/s end to end "
          f"({result.seconds:.1f} s, {report['keyframes']} keyframes; {report['cpu_cores']:.2f} CPU cores busy "
          f"on average, of {os.cpu_count()}; torch on {report['torch_threads']} thread(s))")
    if alone is not None:
        print(f"Translator alone on the same frames in memory: {report['translator_fps']:.2f} frames/s; "
              f"translate_file is {report['vs_translator']:.2f}x that")
    if "denoise_thread_ms_per_propagated" in report:
        print(f"denoising thread, besides denoising: {report['denoise_thread_ms_per_propagated']:.1f} ms per propagated "
              f"frame ({report['denoise_thread_cpu_ms_per_propagated']:.1f} ms CPU; keyframes' share included)")
    print(f"{'stage':<12} {'ms/frame':>9} {'frames':>7} {'busy':>6}")
    for name, figures in result.stages.items():
        print(f"{name:<12} {figures['ms_per_frame']:>9.1f} {figures['frames']:>7d} {figures['busy']:>6.2f}")


if __name__ == "__main__":
    main()

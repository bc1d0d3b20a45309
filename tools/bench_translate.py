#!/usr/bin/env python
"""Benchmark vidreal's Translator against the stock per-frame diffusers loop, and its memory.

    python tools/bench_translate.py                      # tiny random models (built here), CPU
    python tools/bench_translate.py --model weights/sd15 --controlnet canny=weights/cn-canny \\
        --controlnet pose=weights/cn-openpose --size 512 --steps 20 --frames 16 --device cuda --dtype fp16

Prints, measured in one run on the same machine:
  * frames/s of the stock loop a user would write (``StableDiffusionControlNetPipeline`` called once
    per frame, same components, steps, size, guidance, dtype) and of vidreal in each consistency
    mode, with the ratio vidreal / stock;
  * peak memory of a translation of N frames against 4N frames (CUDA: max allocated; CPU: growth
    of the process's peak RSS after loading), each in a fresh subprocess, with the ratio.
Speed does not depend on weight values, so random weights time like real ones.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a person in the style of sks person"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="SD 1.5 weights (default: tiny random models built in a temp folder)")
    p.add_argument("--controlnet", action="append", default=[], metavar="KIND=WEIGHTS")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--guidance", type=float, default=9.0)
    p.add_argument("--chunk-size", type=int, default=16)
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, help="fp32 | fp16 | bf16 (default: auto)")
    p.add_argument("--repeats", type=int, default=2, help="timed repeats (best is reported)")
    p.add_argument("--no-memory", action="store_true", help="skip the N vs 4N memory measurement")
    p.add_argument("--memory-child", nargs=2, metavar=("FRAMES", "JSON"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def models(args, tmp: Path):
    if args.model:
        return args.model, dict(item.split("=", 1) for item in args.controlnet)
    sys.path.insert(0, str(ROOT / "tools"))
    from make_tiny_models import make_all

    paths = make_all(tmp / "tiny")
    return str(paths["sd"]), {"canny": str(paths["canny"]), "pose": str(paths["pose"])}


def inputs(n, size, kinds):
    import numpy as np

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    return frames, {k: rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8) for k in kinds}


def best_time(fn, repeats):
    import torch

    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return min(times)


def speed(args, model, controlnets):
    import torch

    from vidreal.pipeline import Translator

    tr = Translator.from_pretrained(model, controlnets, device=args.device, dtype=args.dtype)
    frames, conds = inputs(args.frames, args.size, list(controlnets))
    pipe = tr.pipe
    kw = dict(num_inference_steps=args.steps, guidance_scale=args.guidance, seed=0, progress=False, size=None)

    def stock():
        for i in range(len(frames)):
            images = [torch.from_numpy(conds[k][i:i + 1]).permute(0, 3, 1, 2).float().div(255).to(tr.device, pipe.unet.dtype)
                      for k in controlnets]
            pipe(PROMPT, image=images if len(images) > 1 else images[0], num_inference_steps=args.steps,
                 guidance_scale=args.guidance, generator=torch.Generator("cpu").manual_seed(0), output_type="np",
                 height=args.size, width=args.size)

    def ours(mode):
        return lambda: tr(frames, conds, PROMPT, chunk_size=args.chunk_size, consistency=mode, **kw)

    stock()  # warm-up (allocator, kernels)
    ours("cross-frame")()
    print(f"device {tr.device}, dtype {str(pipe.unet.dtype).replace('torch.', '')}, torch threads "
          f"{torch.get_num_threads()}, {args.frames} frames {args.size}x{args.size}, {args.steps} steps, "
          f"guidance {args.guidance}, {len(controlnets)} ControlNet(s), chunk {args.chunk_size}")
    t_stock = best_time(stock, args.repeats)
    print(f"{'stock per-frame loop':28s} {args.frames / t_stock:8.2f} frames/s   1.00x")
    for mode in ("per-frame", "shared-noise", "cross-frame"):
        t = best_time(ours(mode), args.repeats)
        print(f"{'vidreal ' + mode:28s} {args.frames / t:8.2f} frames/s   {t_stock / t:.2f}x")


def memory_child(args, model, controlnets, n, out_json):
    """Runs in a fresh process: peak memory of one streamed translation of n frames."""
    import threading

    import torch

    from vidreal.pipeline import Translator

    tr = Translator.from_pretrained(model, controlnets, device=args.device, dtype=args.dtype)
    frames, conds = inputs(1, args.size, list(controlnets))
    pieces = ((frames, conds) for _ in range(n))  # a long clip arriving frame by frame
    cuda = tr.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:  # sample the resident set every 5 ms: ru_maxrss would include the model-loading peak
        base, samples, done = _rss(), [], threading.Event()
        sampler = threading.Thread(target=lambda: [samples.append(_rss()) for _ in iter(lambda: done.wait(0.005), True)])
        sampler.start()
    for _ in tr.stream(pieces, PROMPT, num_inference_steps=args.steps, chunk_size=args.chunk_size, progress=False):
        pass
    if cuda:
        peak = torch.cuda.max_memory_allocated()
    else:
        done.set()
        sampler.join()
        peak = max(samples + [_rss()])
    Path(out_json).write_text(json.dumps({"frames": n, "peak_growth_bytes": peak - base}))


def _rss() -> int:
    """Resident set size of this process in bytes (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory(args, model, controlnets, tmp: Path):
    results = {}
    for n in (args.frames, 4 * args.frames):
        out = tmp / f"mem{n}.json"
        cmd = [sys.executable, __file__, "--memory-child", str(n), str(out), "--model", model, "--size", str(args.size),
               "--steps", str(args.steps), "--chunk-size", str(args.chunk_size)]
        cmd += [x for kind, path in controlnets.items() for x in ("--controlnet", f"{kind}={path}")]
        cmd += ["--device", args.device] if args.device else []
        cmd += ["--dtype", args.dtype] if args.dtype else []
        subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")})
        results[n] = json.loads(out.read_text())["peak_growth_bytes"]
    n, n4 = args.frames, 4 * args.frames
    print(f"peak memory growth: {n} frames {results[n] / 2**20:.1f} MiB, {n4} frames {results[n4] / 2**20:.1f} MiB, "
          f"ratio {results[n4] / max(results[n], 1):.2f}x (chunk {args.chunk_size})")


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.memory_child:
            memory_child(args, args.model, dict(item.split("=", 1) for item in args.controlnet),
                         int(args.memory_child[0]), args.memory_child[1])
            return
        model, controlnets = models(args, Path(tmp))
        speed(args, model, controlnets)
        if not args.no_memory:
            memory(args, model, controlnets, Path(tmp))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Benchmark vidreal's Translator against the stock diffusers pipeline (batched and per frame), and its memory.

    python tools/bench_translate.py                      # tiny random models (built here), CPU
    python tools/bench_translate.py --full-size --size 512 --steps 20 --frames 16 --device cuda --dtype fp16
    python tools/bench_translate.py --table                # eager, compiled, TAESD, LCM: one markdown table
    python tools/bench_translate.py --table --full-size --device cuda --dtype fp16 --size 512 --steps 20 \
        --frames 32 --chunk-size 8 --stock-frames 4 --repeats 1
    python tools/bench_translate.py --frame-memory --full-size --size 512 --steps 2   # the K/V cache's size
    python tools/bench_translate.py --model weights/sd15 --controlnet canny=weights/cn-canny \\
        --controlnet pose=weights/cn-openpose --size 512 --steps 20 --frames 16 --device cuda --dtype fp16

Prints, measured in one run on the same machine:
  * frames/s of the stock pipeline (``StableDiffusionControlNetPipeline``, same components, steps,
    size, guidance, dtype) called with ``chunk_size`` frames at a time (the fair baseline: batching
    alone gives most of the speed) and called once per frame (the loop a user would write), and of
    vidreal in each consistency mode, with the ratio vidreal / stock batched;
  * peak memory of a translation of N frames against 4N frames above the loaded models (CUDA: max
    allocated; CPU: peak live bytes of the tensors plus peak of the numpy/Python heap, counted exactly:
    see ``memory_child``), each in a fresh subprocess, with the ratio (``--memory-only`` skips the speed
    part). N should be long enough for the mode's steady state (keyframes hold ``chunk x K`` frames).
Speed does not depend on weight values, so random weights time like real ones: ``--full-size``
builds SD 1.5-sized random models (``tools/make_tiny_models.py --full-size``) for GPU figures
where no weights can be downloaded. Also printed: the largest difference between the stock
pipeline's frame 0 and vidreal's (per-frame mode, same seed), a check of the numerics on the device.
``--table`` prints only one markdown table (the rows of ``TABLE_ROWS``: cross-frame eager, compiled
with CUDA graphs, + TAESD, LCM 4 steps at guidance 1, LCM + compile + TAESD): frames/s, the ratio
against the stock batched pipeline, the max level difference against the eager run of the same
sampler, and the graphs compiled after the first chunk (0: static shapes held). One translator is
compiled once for all rows: two batch shapes (with and without guidance) are compiled in all.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a person in the style of sks person"
MEMORY_SETTINGS = {  # name -> Translator keyword arguments
    "per-frame": dict(consistency="per-frame"), "shared-noise": dict(consistency="shared-noise"),
    "cross-frame": dict(consistency="cross-frame"), "memory": dict(consistency="memory"),
    "flow": dict(consistency="flow"), "keyframes4": dict(consistency="cross-frame", keyframe_every=4, refine=0.3),
}


SPEED_ROWS = {  # name -> (consistency, more Translator keyword arguments)
    "per-frame": ("per-frame", {}), "shared-noise": ("shared-noise", {}),
    "cross-frame, no memory": ("cross-frame", {"kv_cache": "off"}),  # vidreal before the frame memory
    "cross-frame": ("cross-frame", {}), "memory": ("memory", {}), "flow": ("flow", {}),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="SD 1.5 weights (default: tiny random models built in a temp folder)")
    p.add_argument("--full-size", action="store_true", help="without --model: SD 1.5-sized random models")
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
    p.add_argument("--memory-only", action="store_true", help="only the N vs 4N memory measurement")
    p.add_argument("--only", action="append", choices=list(SPEED_ROWS),
                   help="time only these vidreal rows (repeatable)")
    p.add_argument("--stock-frames", type=int, help="frames for the stock loop (default --frames; it is slow)")
    p.add_argument("--table", action="store_true",
                   help="only the markdown table: eager, compiled, TAESD, LCM (frames/s, vs stock batched, diff, recompilations)")
    p.add_argument("--taesd", help="AutoencoderTiny folder for the table (default: random, built with the models)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (tests: aot_eager)")
    p.add_argument("--profile", action="store_true", help="print the top kernels of one cross-frame call")
    p.add_argument("--frame-memory", action="store_true",
                   help="only the size of the frame memory (K/V cache) in cross-frame and memory mode, as recorded")
    p.add_argument("--memory-modes", default=",".join(MEMORY_SETTINGS),
                   help=f"settings for the N vs 4N memory check, comma-separated (default: all of {','.join(MEMORY_SETTINGS)})")
    p.add_argument("--memory-child", nargs=3, metavar=("FRAMES", "JSON", "SETTING"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def models(args, tmp: Path):
    if args.model:
        return args.model, dict(item.split("=", 1) for item in args.controlnet)
    sys.path.insert(0, str(ROOT / "tools"))
    from make_tiny_models import make_all

    paths = make_all(tmp / "models", full_size=args.full_size)
    args.taesd = args.taesd or str(paths["taesd"])
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

    def stock(n=len(frames)):
        out = []
        for i in range(n):
            images = [torch.from_numpy(conds[k][i:i + 1]).permute(0, 3, 1, 2).contiguous().float().div(255)
                      .to(tr.device, pipe.unet.dtype)
                      for k in controlnets]
            out.append(pipe(PROMPT, image=images if len(images) > 1 else images[0], num_inference_steps=args.steps,
                            guidance_scale=args.guidance, generator=torch.Generator("cpu").manual_seed(0),
                            output_type="np", height=args.size, width=args.size).images[0])
        return out

    def batched():
        return stock_batched(tr, conds, args)

    def ours(mode, **options):
        return lambda: tr(frames, conds, PROMPT, chunk_size=args.chunk_size, consistency=mode, **options, **kw)

    reference = (stock(1)[0] * 255).round()  # also the warm-up (allocator, kernels)
    one = {k: v[:1] for k, v in conds.items()}
    mine = tr(frames[:1], one, PROMPT, consistency="per-frame", **kw)[0]  # a batch of one, as the stock loop
    print(f"frame 0, stock vs vidreal (one frame): max |difference| {abs(reference - mine).max():.0f} levels of 255")
    print(f"device {tr.device}, dtype {str(pipe.unet.dtype).replace('torch.', '')}, torch threads "
          f"{torch.get_num_threads()}, {args.frames} frames {args.size}x{args.size}, {args.steps} steps, "
          f"guidance {args.guidance}, {len(controlnets)} ControlNet(s), chunk {args.chunk_size}")
    n_stock = args.stock_frames or args.frames
    batched()  # warm-up of its batch shape
    t_stock = best_time(batched, args.repeats)
    t_loop = best_time(lambda: stock(n_stock), args.repeats) / n_stock * args.frames
    print(f"{'stock, ' + str(args.chunk_size) + ' frames per call':28s} {args.frames / t_stock:8.2f} frames/s   1.00x")
    print(f"{'stock per-frame loop':28s} {args.frames / t_loop:8.2f} frames/s   {t_stock / t_loop:.2f}x   "
          f"({n_stock} frames)")
    for name, (mode, options) in SPEED_ROWS.items():
        if args.only and name not in args.only:
            continue
        t = best_time(ours(mode, **options), args.repeats)
        print(f"{'vidreal ' + name:28s} {args.frames / t:8.2f} frames/s   {t_stock / t:.2f}x")
    if args.profile:
        profile(ours("cross-frame"))


def stock_batched(tr, conds, args, steps=None, guidance=None):
    """The stock pipeline called with ``chunk_size`` frames at a time (control images and
    generators per frame, the same seed), over the clip; returns float (T, H, W, 3) in [0, 1]."""
    import numpy as np
    import torch

    pipe = tr.pipe
    kinds = list(conds)
    out = []
    for i in range(0, len(conds[kinds[0]]), args.chunk_size):
        images = [torch.from_numpy(conds[k][i:i + args.chunk_size]).permute(0, 3, 1, 2).contiguous().float()
                  .div(255).to(tr.device, pipe.unet.dtype) for k in kinds]
        n = len(images[0])
        out.append(pipe([PROMPT] * n, image=images if len(images) > 1 else images[0],
                        num_inference_steps=steps or args.steps, guidance_scale=args.guidance if guidance is None
                        else guidance, generator=[torch.Generator("cpu").manual_seed(0) for _ in range(n)],
                        output_type="np", height=args.size, width=args.size).images)
    return np.concatenate(out)


TABLE_ROWS = [  # (row, compiled, TAESD, LCM 4 steps at guidance 1), in the order printed
    ("cross-frame eager", False, False, False),
    ("cross-frame compiled (CUDA graphs)", True, False, False),
    ("compiled + TAESD", True, True, False),
    ("LCM 4 steps, guidance 1", False, False, True),
    ("LCM + compile + TAESD", True, True, True),
]


def table(args, model, controlnets):
    """The markdown table of ``TABLE_ROWS`` (see the module). Eager rows run first, then the same
    translator is compiled once; the TAESD rows swap its VAE for the AutoencoderTiny."""
    import numpy as np
    import torch
    from diffusers import AutoencoderTiny

    from vidreal.pipeline import Translator

    tr = Translator.from_pretrained(model, controlnets, device=args.device, dtype=args.dtype)
    frames, conds = inputs(args.frames, args.size, list(controlnets))
    kl = tr.pipe.vae
    tiny = AutoencoderTiny.from_pretrained(args.taesd).to(tr.device, tr.pipe.unet.dtype)
    stock_batched(tr, {k: v[:args.chunk_size] for k, v in conds.items()}, args)  # warm-up
    t_stock = best_time(lambda: stock_batched(tr, conds, args), args.repeats)
    results, eager = {}, {}
    for name, compiled, taesd, lcm in sorted(TABLE_ROWS, key=lambda row: row[1]):  # eager rows first
        if compiled and not tr.compiled:
            tr.compile(backend=args.compile_backend)
        tr.pipe.vae = tiny if taesd else kl
        options = dict(num_inference_steps=4, guidance_scale=1.0, scheduler="lcm") if lcm else dict(
            num_inference_steps=args.steps, guidance_scale=args.guidance)

        def call(n=len(frames)):
            return tr(frames[:n], {k: v[:n] for k, v in conds.items()}, PROMPT, chunk_size=args.chunk_size,
                      consistency="cross-frame", seed=0, progress=False, size=None, **options)

        call(min(args.chunk_size, len(frames)))  # warm-up: one chunk (compiles its graphs)
        graphs = Translator.compilations()
        out = call()
        t = best_time(call, args.repeats)
        recompiled = Translator.compilations() - graphs  # graphs made after the first chunk
        if not compiled:
            eager[lcm] = out
        difference = "-" if not compiled and not taesd else f"{np.abs(out.astype(int) - eager[lcm]).max():d}"
        results[name] = (args.frames / t, t_stock / t, difference, recompiled if compiled else "-")
    tr.pipe.vae = kl
    print(f"\n{args.frames} frames {args.size}x{args.size}, {args.steps} steps (LCM: 4), guidance {args.guidance:g} "
          f"(LCM: 1), {len(controlnets)} ControlNet(s), chunk {args.chunk_size}, {tr.device}, "
          f"{str(tr.pipe.unet.dtype).removeprefix('torch.')}; stock pipeline with {args.chunk_size} frames per call: "
          f"{args.frames / t_stock:.2f} frames/s\n")
    print("| vidreal | frames/s | vs stock batched | max diff vs eager (levels) | recompilations after chunk 1 |")
    print("|---|---|---|---|---|")
    for name, *_ in TABLE_ROWS:
        fps, ratio, difference, recompiled = results[name]
        print(f"| {name} | {fps:.2f} | {ratio:.2f}x | {difference} | {recompiled} |")


def profile(call):
    """The CUDA kernels (or CPU ops) that take the most time in one call."""
    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with torch_profile(activities=activities) as prof:
        call()
    key = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=60))


def memory_child(args, model, controlnets, n, out_json, setting="cross-frame"):
    """Runs in a fresh process: peak memory of one streamed translation of n frames, above what the
    loaded models hold. CUDA: ``max_memory_allocated``. CPU: the peak of the live bytes of the tensors
    allocated during the run (torch's profiler reports every allocation and free) plus the peak of the
    Python heap and numpy arrays (``tracemalloc``). Both count what the run holds, byte-exact and
    repeatable; the process's resident set would add allocator caching and arena noise (tens of MiB
    run to run at this size), larger than what is measured."""
    import torch

    from vidreal.pipeline import Translator

    tr = Translator.from_pretrained(model, controlnets, device=args.device, dtype=args.dtype)
    frames, conds = inputs(1, args.size, list(controlnets))
    pieces = ((frames, conds) for _ in range(n))  # a long clip arriving frame by frame

    def run():
        for _ in tr.stream(pieces, PROMPT, num_inference_steps=args.steps, chunk_size=args.chunk_size,
                           progress=False, **MEMORY_SETTINGS[setting]):
            pass

    if tr.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run()
        result = {"peak_growth_bytes": torch.cuda.max_memory_allocated() - base}
    else:
        tensors, arrays = cpu_peaks(run)
        result = {"peak_growth_bytes": tensors + arrays, "tensor_bytes": tensors, "array_bytes": arrays}
    Path(out_json).write_text(json.dumps({"frames": n, **result}))


def cpu_peaks(fn) -> tuple[int, int]:
    """Run ``fn``; return the peak live bytes of the torch tensors it allocated and the peak of the
    Python/numpy heap it grew (tracemalloc), each counted from zero at the start."""
    import tracemalloc

    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # the profiler's own log lines off (read at its first start)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        tracemalloc.start()  # inside the profiler: its own start and event processing are not counted
        fn()
        heap_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    events = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for _, nbytes in sorted(events, key=lambda e: e[0]):  # allocations (+) and frees (-) in time order
        live += nbytes
        peak = max(peak, live)
    return peak, heap_peak


def frame_memory(args, model, controlnets):
    """The frame memory's size as the translator records it (``stats["frame_memory_bytes"]``) for a
    two-frame clip: the anchor's (cross-frame) and anchor + previous frame's (memory) attention inputs."""
    from vidreal.pipeline import Translator

    tr = Translator.from_pretrained(model, controlnets, device=args.device, dtype=args.dtype)
    frames, conds = inputs(2, args.size, list(controlnets))
    scheduler = copy.deepcopy(tr.pipe.scheduler)
    scheduler.set_timesteps(args.steps)
    calls = len(scheduler.timesteps)  # one memory entry per UNet call (PNDM, SD 1.5's own: steps + 1)
    for mode in ("cross-frame", "memory"):
        stats = {}
        tr(frames, conds, PROMPT, num_inference_steps=args.steps, guidance_scale=args.guidance, chunk_size=2,
           consistency=mode, progress=False, stats=stats)
        size = stats["frame_memory_bytes"]
        print(f"frame memory {mode:11s}: {size / 2**30:.3f} GiB at {args.size}x{args.size}, {args.steps} steps, "
              f"guidance {args.guidance}, {str(tr.pipe.unet.dtype).removeprefix('torch.')} "
              f"({calls} UNet calls, {size / calls / 2**20:.1f} MiB each)", flush=True)


def memory(args, model, controlnets, tmp: Path):
    for setting in args.memory_modes.split(","):
        results = {}
        for n in (args.frames, 4 * args.frames):
            out = tmp / f"mem{n}.json"
            cmd = [sys.executable, __file__, "--memory-child", str(n), str(out), setting, "--model", model,
                   "--size", str(args.size), "--steps", str(args.steps), "--chunk-size", str(args.chunk_size)]
            cmd += [x for kind, path in controlnets.items() for x in ("--controlnet", f"{kind}={path}")]
            cmd += ["--device", args.device] if args.device else []
            cmd += ["--dtype", args.dtype] if args.dtype else []
            subprocess.run(cmd, check=True, env={"HF_HUB_OFFLINE": "1", **os.environ})
            results[n] = json.loads(out.read_text())
        n, n4 = args.frames, 4 * args.frames
        a, b = results[n]["peak_growth_bytes"], results[n4]["peak_growth_bytes"]
        parts = "".join(f", {k.split('_')[0]}s {results[n][k] / 2**20:.1f} -> {results[n4][k] / 2**20:.1f}"
                        for k in ("tensor_bytes", "array_bytes") if k in results[n])
        print(f"peak memory growth {setting:13s}: {n} frames {a / 2**20:.1f} MiB, {n4} frames {b / 2**20:.1f} MiB, "
              f"ratio {b / max(a, 1):.2f}x{parts} (chunk {args.chunk_size})", flush=True)


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.memory_child:
            memory_child(args, args.model, dict(item.split("=", 1) for item in args.controlnet),
                         int(args.memory_child[0]), args.memory_child[1], args.memory_child[2])
            return
        model, controlnets = models(args, Path(tmp))
        if args.frame_memory:
            frame_memory(args, model, controlnets)
            return
        if args.table:
            table(args, model, controlnets)
            return
        if not args.memory_only:
            speed(args, model, controlnets)
        if not args.no_memory:
            memory(args, model, controlnets, Path(tmp))


if __name__ == "__main__":
    main()

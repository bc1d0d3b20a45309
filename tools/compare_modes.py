#!/usr/bin/env python
"""Translate one clip in every consistency mode and keyframe setting; print their metrics side by side.

    python tools/compare_modes.py samples/humanoid_walk_ground.mp4            # tiny random models
    python tools/compare_modes.py --long                                      # a rendered 320-frame clip
    python tools/compare_modes.py clip.mp4 --config configs/rocog.yaml --model weights/sd15 \\
        --controlnet canny=weights/cn-canny --controlnet pose=weights/cn-openpose --out runs/modes

Settings: per-frame, shared-noise, cross-frame without the frame memory (the anchor re-denoised in
every batch: vidreal before the memory), cross-frame, memory, flow, and cross-frame with
``--keyframe-every`` 2, 4, 8, each without and with ``--refine 0.3``, and flow with K = 4. One row
each: warp error (lower = steadier), interpolation error, edge F1 and pose PCK (structure kept),
frames/s of the whole ``translate_file`` (decode, conditions, denoise, encode) and its peak memory
above the loaded models (CUDA: max allocated, in the timed run; CPU: tensors plus numpy/Python heap,
counted exactly in a second, untimed run of the setting; ``--no-memory`` skips it). With tiny random
models the numbers show the mechanism, not image quality. ``--long`` renders a long humanoid walk
with an orbiting camera (``tools/make_samples.py``; needs pybullet) so fading consistency can show.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {  # name -> config overrides
    "per-frame": dict(consistency="per-frame"),
    "shared-noise": dict(consistency="shared-noise"),
    "cross-frame, no memory": dict(consistency="cross-frame", kv_cache="off"),
    "cross-frame": dict(consistency="cross-frame"),
    "memory": dict(consistency="memory"),
    "flow": dict(consistency="flow"),
    **{f"cross-frame K={k}{' +refine' if r else ''}": dict(consistency="cross-frame", keyframe_every=k, refine=r)
       for k in (2, 4, 8) for r in (None, 0.3)},
    "flow K=4": dict(consistency="flow", keyframe_every=4),
}
COLUMNS = (("warp err", "warp_error", "{:.5f}"), ("interp RMSE", "interp_rmse", "{:.4f}"),
           ("edge F1", "edge_f1", "{:.3f}"), ("pose PCK", "pose_pck", "{:.3f}"), ("frames/s", "fps", "{:.2f}"),
           ("peak MiB", "peak_mib", "{:.0f}"), ("memory MiB", "frame_memory_mib", "{:.1f}"))


def timed_run(fn):
    """(result of fn(), seconds, peak memory growth in bytes while it ran, or None on CPU).

    CUDA: max allocated, measured in the timed run. On a CPU the exact counter costs time (~1.2x),
    so the peak is measured by ``counted_peak`` in a second, untimed run."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    result = fn()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return result, seconds, (torch.cuda.max_memory_allocated() - base) if cuda else None


def counted_peak(fn) -> int:
    """Peak bytes of the tensors plus the numpy/Python heap that ``fn`` allocates, counted exactly
    (``tools/bench_translate.py``'s counter; what the C++ of decord, PyAV or mediapipe holds is not seen)."""
    if str(ROOT / "tools") not in sys.path:  # run as a script, tools/ is already there
        sys.path.insert(0, str(ROOT / "tools"))
    from bench_translate import cpu_peaks

    return sum(cpu_peaks(fn))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("input", nargs="?", help="clip to translate (default: samples/humanoid_walk_ground.mp4)")
    p.add_argument("--long", action="store_true", help="render and translate a long clip (--long-frames frames)")
    p.add_argument("--long-frames", type=int, default=320)
    p.add_argument("--frames", type=int, help="use only the clip's first N frames")
    p.add_argument("--config", help="YAML preset")
    p.add_argument("--model", help="SD 1.5 weights (default: tiny random models)")
    p.add_argument("--controlnet", action="append", default=[], metavar="KIND=WEIGHTS")
    p.add_argument("--size", type=int, help="working size (default: preset, or 64 with tiny models)")
    p.add_argument("--steps", type=int, help="denoising steps (default: preset, or 4 with tiny models)")
    p.add_argument("--chunk-size", type=int, default=4)
    p.add_argument("--only", action="append", choices=list(SETTINGS), help="run only these settings (repeatable)")
    p.add_argument("--no-pose", action="store_true", help="skip pose PCK (mediapipe)")
    p.add_argument("--no-memory", action="store_true",
                   help="CPU: skip the second, counted run that measures peak memory (the column reads n/a)")
    p.add_argument("--out", default=None, help="folder for the outputs (default: a temp folder)")
    args = p.parse_args(argv)

    from vidreal.config import load_config
    from vidreal.metrics import compute_file_metrics
    from vidreal.translate import load_translator, translate_file

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(args.input or ROOT / "samples" / "humanoid_walk_ground.mp4")
        if args.long:
            sys.path.insert(0, str(ROOT / "tools"))
            from make_samples import long_clip

            source = long_clip(Path(tmp) / "long_walk.mp4", n_frames=args.long_frames)
        if args.frames:
            from vidreal.io import read_video, write_video

            clip = read_video(source)
            source = write_video(Path(tmp) / f"first{args.frames}.mp4", clip.frames[:args.frames], clip.fps, crf=12)
        overrides = {"size": args.size, "steps": args.steps, "chunk_size": args.chunk_size}
        if args.model:
            overrides["model"] = args.model
            if args.controlnet:
                overrides["controlnets"] = dict(item.split("=", 1) for item in args.controlnet)
        else:
            sys.path.insert(0, str(ROOT / "tools"))
            from make_tiny_models import make_all

            tiny = make_all(Path(tmp) / "tiny")
            overrides.update(model=str(tiny["sd"]), controlnets={"canny": str(tiny["canny"]), "pose": str(tiny["pose"])},
                             size=args.size or 64, steps=args.steps or 4)
        base = load_config(args.config, **overrides)
        translator = load_translator(base)  # loaded once for all settings
        out_dir = Path(args.out or tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        warmup = load_config(args.config, **overrides, max_frames=2 * args.chunk_size)  # allocator, kernels, graphs
        translate_file(source, out_dir / "warmup.mp4", warmup, translator=translator, progress=False, record=False)
        rows = {}
        for name in args.only or SETTINGS:
            config = load_config(args.config, **{**overrides, **SETTINGS[name]})
            output = out_dir / (name.replace(" ", "_").replace(",", "").replace("=", "") + ".mp4")
            run = lambda: translate_file(source, output, config, translator=translator, progress=False)  # noqa: E731
            result, seconds, peak = timed_run(run)
            if peak is None and not args.no_memory:
                peak = counted_peak(run)
            rows[name] = compute_file_metrics(source, output, pose=not args.no_pose)
            import yaml
            record = yaml.safe_load(output.with_name(output.name + ".vidreal.yaml").read_text())["result"]
            rows[name].update(fps=result.n_frames / seconds, peak_mib=None if peak is None else peak / 2**20,
                              frame_memory_mib=record["correspondence"]["frame_memory_mb"])
            print(f"{name}: done ({seconds:.1f} s)", file=sys.stderr)
        first = next(iter(rows.values()))
        print(f"{source} ({first['n_frames']} frames {first['width']}x{first['height']}), working size {base.size}, "
              f"{base.steps} steps, chunk {base.chunk_size}, device {translator.device}")
        width = max(len(n) for n in rows)
        print(f"{'setting':{width}s}  " + "  ".join(f"{c[0]:>11s}" for c in COLUMNS))
        for name, r in rows.items():
            cells = ["n/a" if r.get(key) is None else fmt.format(r[key]) for _, key, fmt in COLUMNS]
            print(f"{name:{width}s}  " + "  ".join(f"{c:>11s}" for c in cells))
        print(f"(warp error of the source itself: {first['warp_error_source']:.5f}; interp RMSE of the source: "
              f"{first['interp_rmse_source']:.4f})")
        if args.out:
            print(f"outputs in {out_dir}")


if __name__ == "__main__":
    main()

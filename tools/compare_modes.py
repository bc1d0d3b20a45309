#!/usr/bin/env python
"""Translate one clip in all three consistency modes and print their metrics side by side.

    python tools/compare_modes.py samples/humanoid_walk_ground.mp4            # tiny random models
    python tools/compare_modes.py clip.mp4 --config configs/rocog.yaml --model weights/sd15 \\
        --controlnet canny=weights/cn-canny --controlnet pose=weights/cn-openpose --out runs/modes

Writes OUT/<mode>.mp4 for each mode (watch them side by side) and prints one column per mode:
warp error (lower = steadier), interpolation error, edge F1 and pose PCK (structure kept).
With tiny random models the numbers show the mechanism, not image quality.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ("per-frame", "shared-noise", "cross-frame")
ROWS = (("warp error (masked MSE)", "warp_error", "{:.5f}"), ("interpolation RMSE", "interp_rmse", "{:.4f}"),
        ("edge F1", "edge_f1", "{:.3f}"), ("pose PCK", "pose_pck", "{:.3f}"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("input")
    p.add_argument("--config", help="YAML preset")
    p.add_argument("--model", help="SD 1.5 weights (default: tiny random models)")
    p.add_argument("--controlnet", action="append", default=[], metavar="KIND=WEIGHTS")
    p.add_argument("--size", type=int, help="working size (default: preset, or 64 with tiny models)")
    p.add_argument("--steps", type=int, help="denoising steps (default: preset, or 4 with tiny models)")
    p.add_argument("--out", default=None, help="folder for the three outputs (default: a temp folder)")
    args = p.parse_args(argv)

    from vidreal.config import load_config
    from vidreal.metrics import compute_file_metrics
    from vidreal.translate import load_translator, translate_file

    with tempfile.TemporaryDirectory() as tmp:
        overrides = {"size": args.size, "steps": args.steps}
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
        config = load_config(args.config, **overrides)
        translator = load_translator(config)  # loaded once for all modes
        out_dir = Path(args.out or tmp)
        results = {}
        for mode in MODES:
            config.consistency = mode
            output = out_dir / f"{mode}.mp4"
            translate_file(args.input, output, config, translator=translator, progress=True, record=False)
            results[mode] = compute_file_metrics(args.input, output, pose=True)
        source_floor = results[MODES[0]]["warp_error_source"]
        width = max(len(r[0]) for r in ROWS)
        print(f"{'metric':{width}s}  " + "  ".join(f"{m:>12s}" for m in MODES))
        for label, key, fmt in ROWS:
            cells = ["n/a" if results[m].get(key) is None else fmt.format(results[m][key]) for m in MODES]
            print(f"{label:{width}s}  " + "  ".join(f"{c:>12s}" for c in cells))
        print(f"(warp error of the source itself: {source_floor:.5f})")
        if args.out:
            print(f"outputs: {', '.join(str(out_dir / f'{m}.mp4') for m in MODES)}")


if __name__ == "__main__":
    main()

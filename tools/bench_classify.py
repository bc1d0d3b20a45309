"""Benchmark: classifier training with cached backbone features vs. running the backbone every epoch.

Generates a small labelled image set (coloured shapes, one colour per class), trains the report's
head on a frozen Swin for 7 epochs twice through ``vidreal.classify.train`` — ``cache=True`` (features
computed once, included in its time) and ``cache=False`` — and prints both times, the speed-up and
how far apart the two heads are (they should agree to float noise).

    .venv/bin/python tools/bench_classify.py                  # tiny Swin, 224 px input (real preprocessing)
    .venv/bin/python tools/bench_classify.py --size small     # swin_tiny-sized (28 M params), slower
    .venv/bin/python tools/bench_classify.py --video          # video clips: per-frame Swin + mean head

With ``--video`` the data are short mp4 clips (a class-coloured square moving in a class direction),
sampled ``--clip-len`` frames every ``--frame-interval`` (one clip per training video, ``--eval-clips``
per validation video); the cache then holds per-clip frame features, so the uncached run decodes
and runs the backbone on every sampled frame in every epoch.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vidreal.classify import train

SIZES = {
    # 1.4 M params: the tests' tiny Swin, at the real 224 px input
    "tiny": dict(backbone="swin_base_patch4_window7_224",
                 backbone_kwargs=dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8))),
    # swin_tiny_patch4_window7_224's architecture (28 M params), random weights
    "small": dict(backbone="swin_tiny_patch4_window7_224", backbone_kwargs={}),
}


def make_images(folder: Path, n_classes: int, per_class: int, seed: int, size: int = 96) -> Path:
    """folder/class_<k>/<i>.png: a class-coloured disc or square on noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for k in range(n_classes):
        colour = np.array([(k * 97) % 256, (k * 53 + 80) % 256, (k * 151 + 40) % 256], dtype=np.uint8)
        (folder / f"class_{k:02d}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 80, (size, size, 3)).astype(np.uint8)
            cx, cy, r = *rng.integers(size // 4, 3 * size // 4, 2), rng.integers(size // 8, size // 4)
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r if k % 2 else (abs(xx - cx) < r) & (abs(yy - cy) < r)
            img[mask] = colour
            Image.fromarray(img).save(folder / f"class_{k:02d}" / f"{i:03d}.png")
    return folder


def make_videos(folder: Path, n_classes: int, per_class: int, seed: int, n_frames: int = 24, size: int = 96) -> Path:
    """folder/class_<k>/<i>.mp4: a class-coloured square moving in a class-specific direction."""
    from vidreal.io import write_video

    rng = np.random.default_rng(seed)
    for k in range(n_classes):
        colour = np.array([(k * 97) % 256, (k * 53 + 80) % 256, (k * 151 + 40) % 256], dtype=np.uint8)
        angle = 2 * np.pi * k / n_classes
        for i in range(per_class):
            frames = rng.integers(0, 80, (n_frames, size, size, 3)).astype(np.uint8)
            x0, y0 = rng.integers(size // 4, 3 * size // 4, 2)
            for f in range(n_frames):
                x = int(x0 + 2 * f * np.cos(angle)) % (size - 16)
                y = int(y0 + 2 * f * np.sin(angle)) % (size - 16)
                frames[f, y:y + 16, x:x + 16] = colour
            write_video(folder / f"class_{k:02d}" / f"{i:03d}.mp4", frames, fps=12)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--train-per-class", type=int, default=32)
    parser.add_argument("--val-per-class", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: steadier ratios on a shared machine; 0 = torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--video", action="store_true", help="video clips instead of images")
    parser.add_argument("--clip-len", type=int, default=8)
    parser.add_argument("--frame-interval", type=int, default=2)
    parser.add_argument("--eval-clips", type=int, default=2)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make = make_videos if args.video else make_images
        train_dir = make(tmp / "train", args.classes, args.train_per_class, 0)
        val_dir = make(tmp / "val", args.classes, args.val_per_class, 1)
        common = dict(pretrained=False, epochs=args.epochs, batch_size=args.batch_size, device=args.device,
                      seed=0, progress=False, **SIZES[args.size])
        if args.video:
            common.update(clip_len=args.clip_len, frame_interval=args.frame_interval, eval_clips=args.eval_clips)
        train(train_dir, val_dir, tmp / "warmup", **{**common, "epochs": 1})  # imports, first-call costs

        times, cpu, runs = {}, {}, {}
        for cache in (False, True):
            start, start_cpu = time.perf_counter(), time.process_time()
            runs[cache] = train(train_dir, val_dir, tmp / f"run_{cache}", cache=cache, **common)
            times[cache], cpu[cache] = time.perf_counter() - start, time.process_time() - start_cpu

    n_train, n_val = args.classes * args.train_per_class, args.classes * args.val_per_class
    params = sum(p.numel() for p in runs[True].model.backbone.parameters()) / 1e6
    head_diff = max((a - b).abs().max().item() for a, b in
                    zip(runs[True].model.head.state_dict().values(), runs[False].model.head.state_dict().values()))
    loss_diff = max(abs(a["train_loss"] - b["train_loss"])
                    for a, b in zip(runs[True].metrics["epochs"], runs[False].metrics["epochs"]))
    print(f"backbone: {args.size} Swin ({params:.1f} M params, frozen, random init), 224 px input, "
          f"{args.device}, {torch.get_num_threads()} torch threads")
    if args.video:
        print(f"data: {n_train} train / {n_val} val videos (24 frames, 96 px), {args.classes} classes; clips of "
              f"{args.clip_len} frames every {args.frame_interval}, 1 per train video, {args.eval_clips} per val video; "
              f"{args.epochs} epochs, batch {args.batch_size}")
    else:
        print(f"data: {n_train} train / {n_val} val images, {args.classes} classes; {args.epochs} epochs, batch {args.batch_size}")
    print(f"uncached (backbone every epoch): {times[False]:7.2f} s wall, {cpu[False]:7.2f} s CPU")
    print(f"cached (features once + head):  {times[True]:7.2f} s wall, {cpu[True]:7.2f} s CPU")
    print(f"speed-up for {args.epochs} epochs: {times[False] / times[True]:.2f}x wall, {cpu[False] / cpu[True]:.2f}x CPU")
    print(f"agreement: max |head weight diff| {head_diff:.2e}, max |epoch loss diff| {loss_diff:.2e}")


if __name__ == "__main__":
    main()

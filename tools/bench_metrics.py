"""Throughput of `vidreal.metrics` on a synthetic 512 px, 100-frame clip (frames/s per group).

The source pans a window across skimage's astronaut photo (a person, so pose runs on real
detections); the "output" is the source plus per-frame noise, standing in for a translation.
Each group processes both clips (the source's numbers are the reference). CLIP is timed with a
ViT-B/32-sized CLIPModel built from its config with random weights (speed does not depend on the
weights; no hub access needed); model loading is excluded. Wall time and this process's CPU
time are printed: on a shared machine the wall time grows with the other processes' load.

    .venv/bin/python tools/bench_metrics.py [--frames 100] [--size 512] [--flow dis] [--no-clip]
"""
from __future__ import annotations

import argparse
import os
import time

import cv2
import numpy as np
from skimage import data

from vidreal.metrics import FLOW_METHODS, edge_metrics, pose_metrics, temporal_metrics
from vidreal.metrics.clip import image_embeddings


def make_clip(n_frames: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """source: a size x size window panning 1 px/frame right and down over the astronaut;
    output: source + Gaussian noise (sigma 6), independent per frame. uint8 (T, size, size, 3) each."""
    canvas = cv2.resize(data.astronaut(), (size + n_frames, size + n_frames), interpolation=cv2.INTER_LINEAR)
    source = np.stack([canvas[t:t + size, t:t + size] for t in range(n_frames)])
    noise = np.random.default_rng(0).normal(0, 6, source.shape)
    output = np.clip(source + noise, 0, 255).astype(np.uint8)
    return source, output


def clip_embed_both(source: np.ndarray, output: np.ndarray, model, processor) -> float:
    """CLIP frame consistency of the output, embedding both clips (what clip_metrics computes)."""
    emb = [image_embeddings(clip, model, processor) for clip in (output, source)]
    return float(np.mean(np.sum(emb[0][:-1] * emb[0][1:], axis=1)))


def timed(fn, *args, **kwargs):
    start, cpu = time.perf_counter(), time.process_time()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--flow", default="dis", choices=list(FLOW_METHODS))
    parser.add_argument("--no-clip", action="store_true", help="Skip the CLIP timing.")
    args = parser.parse_args()

    source, output = make_clip(args.frames, args.size)
    n = len(source)
    rows = {}
    temporal, *rows[f"temporal (flow {args.flow})"] = timed(temporal_metrics, source, output, flow=args.flow)
    edges, *rows["edges"] = timed(edge_metrics, source, output)
    pose, *rows["pose"] = timed(pose_metrics, source, output)
    if not args.no_clip:
        import torch
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

        torch.manual_seed(0)
        model = CLIPModel(CLIPConfig()).eval()  # the default config is ViT-B/32's architecture
        processor = CLIPImageProcessor()  # 224 px, as openai/clip-vit-base-patch32
        image_embeddings(source[:2], model, processor)  # warm-up
        _, *rows["clip (ViT-B/32 size)"] = timed(clip_embed_both, source, output, model, processor)
    rows["overall"] = [sum(r[0] for r in rows.values()), sum(r[1] for r in rows.values())]

    print(f"clip: {n} frames, {args.size}x{args.size}, both clips processed by every group; "
          f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'group':<24} {'wall s':>7} {'frames/s':>9} {'s/10 frames':>12} {'CPU s':>7}")
    for name, (wall, cpu) in rows.items():
        print(f"{name:<24} {wall:7.2f} {n / wall:9.1f} {10 * wall / n:12.2f} {cpu:7.2f}")
    print()
    print(f"warp error: output {temporal['warp_error']:.6f}, source {temporal['warp_error_source']:.6f}, "
          f"unwarped {temporal['unwarped_error']:.6f}; masked {100 * temporal['masked_fraction']:.1f}%")
    print(f"interpolation RMSE: output {temporal['interp_rmse']:.4f}, source {temporal['interp_rmse_source']:.4f}; "
          f"edge F1 {edges['edge_f1']:.3f}; pose PCK {pose['pose_pck']:.3f} "
          f"({pose['pose_frames']} frames, {pose['pose_frames_excluded']} without a person)")


if __name__ == "__main__":
    main()

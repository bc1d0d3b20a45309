#!/usr/bin/env python
"""Peak memory of `translate` with pose on: a clip and a clip 16x longer must peak alike.

    python tools/check_memory.py [--frames 30] [--factor 16] [--models DIR] [--size 64] [--clip FILE] [--still]
                                 [--pose-mode multi]

Streaming keeps a translation's memory to its chunks, whatever the clip's length. This checks
the whole process, not only the translator's tensors: it writes a 176x144 clip of ``--frames``
frames and one ``--factor`` times longer (samples/humanoid_walk_ground.mp4, or ``--clip FILE``, e.g.
a real clip with people, played forward and back; by default each frame shrunk to a small person
wandering about the frame, see ``make_clip``), translates each in a fresh child process with canny + pose
ControlNets (1 step, ``--size`` px) through ``vidreal.translate_file``, and reads the child's peak
resident memory (the kernel's VmHWM, at its exit). Prints both peaks and their ratio; exits 1
when the ratio is above ``--limit`` (1.1).

The models are tiny random ones (tools/make_tiny_models.py, built into a temporary folder unless
``--models`` names one): the translator's own memory is flat by design; what this watches is
everything around it (condition detectors, pose tracks, writers, logs).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidreal.io import read_video, resize_frames, write_video  # noqa: E402

# Run in the child: translate one clip, then print the process's peak resident memory in KiB.
CHILD = """
import sys
from vidreal.config import load_config
from vidreal.translate import translate_file
models, clip, out, size, mode = sys.argv[1:6]
config = load_config(model=models + "/sd", controlnets={"canny": models + "/controlnet-canny",
                     "pose": models + "/controlnet-pose"}, steps=1, size=int(size), chunk_size=8,
                     conditions={"pose": {"mode": mode}})
translate_file(clip, out, config, progress=False, record=False)
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""


def make_clip(path: Path, n_frames: int, source: Path, wander: bool = True) -> Path:
    """A 176x144 clip of ``n_frames``: ``source``'s frames, forward then backward, repeated.

    ``wander``: each frame shrunk to a square of 50 to 130 px that drifts about the frame (a fixed
    random walk, partly off the edges at times), on the source's background colour: a small person
    who moves, as in real footage, so ``auto`` pose turns to tracks, whose crops follow them and
    who are lost and found again at the edges."""
    frames = read_video(source).frames
    loop = np.concatenate([frames, frames[-2:0:-1]])
    loop = loop[np.arange(n_frames) % len(loop)]
    if not wander:
        return write_video(path, resize_frames(loop, 144, 176), fps=24)
    rng = np.random.default_rng(0)
    out = np.empty((n_frames, 144, 176, 3), np.uint8)
    x, y, side = 40.0, 20.0, 90.0
    for frame, canvas in zip(loop, out):
        side = float(np.clip(side + rng.normal(0, 3), 50, 130))
        x = float(np.clip(x + rng.normal(0, 4), -20, 176 - side + 20))
        y = float(np.clip(y + rng.normal(0, 2), -10, 144 - side + 10))
        canvas[:] = frame[2, 2]
        person = resize_frames(frame[None], int(side), int(side))[0]
        x0, y0 = int(x), int(y)
        left, top = max(x0, 0), max(y0, 0)
        right, bottom = min(x0 + int(side), 176), min(y0 + int(side), 144)
        canvas[top:bottom, left:right] = person[top - y0:bottom - y0, left - x0:right - x0]
    return write_video(path, out, fps=24)


def peak_kib(models: Path, clip: Path, size: int, mode: str) -> int:
    """Peak resident memory (KiB) of a fresh process translating ``clip``."""
    out = clip.with_name(clip.stem + ".out.mp4")
    done = subprocess.run([sys.executable, "-c", CHILD, str(models), str(clip), str(out), str(size), mode], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"translating {clip.name} failed:\n{done.stderr[-2000:]}")
    return int(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30, help="frames of the short clip")
    parser.add_argument("--factor", type=int, default=16, help="the long clip has this many times more frames")
    parser.add_argument("--models", type=Path, help="tiny models folder (default: built in a temporary folder)")
    parser.add_argument("--size", type=int, default=64, help="working size (short side, px)")
    parser.add_argument("--limit", type=float, default=1.1, help="largest ratio of the peaks that passes")
    parser.add_argument("--clip", type=Path, default=ROOT / "samples" / "humanoid_walk_ground.mp4",
                        help="the clip looped (scaled to 176x144): a real one with people is the harder case")
    parser.add_argument("--still", action="store_true",
                        help="the clip's frames as they are (scaled), not shrunk to a small person wandering about")
    parser.add_argument("--pose-mode", default="auto", choices=("auto", "single", "multi"),
                        help="the pose condition's mode (multi: a track and a pose graph per person)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = args.models
        if models is None:
            models = tmp / "models"
            subprocess.run([sys.executable, str(ROOT / "tools" / "make_tiny_models.py"), str(models)], check=True,
                           capture_output=True)
        clips = [make_clip(tmp / f"{name}.mp4", n, args.clip, wander=not args.still)
                 for name, n in (("short", args.frames), ("long", args.frames * args.factor))]
        short, long = (peak_kib(models, clip, args.size, args.pose_mode) for clip in clips)
    ratio = long / short
    print(f"peak memory: {short / 1024:.0f} MiB for {args.frames} frames, {long / 1024:.0f} MiB for "
          f"{args.frames * args.factor} frames: {ratio:.2f}x (limit {args.limit}x)")
    sys.exit(0 if ratio <= args.limit else 1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Peak memory of `translate` with pose on: a clip and a clip 16x longer must peak alike.

    python tools/check_memory.py [--frames 30] [--factor 16] [--models DIR] [--size 64] [--clip FILE] [--pose-mode multi]

Streaming keeps a translation's memory to its chunks, whatever the clip's length. This checks
the whole process, not only the translator's tensors: it writes a 176x144 clip of ``--frames``
frames and one ``--factor`` times longer (samples/humanoid_walk_ground.mp4, or ``--clip FILE``, e.g.
a real clip with people, played forward and back, so a person is in every frame), translates each in a fresh child process with canny + pose
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


def make_clip(path: Path, n_frames: int, source: Path) -> Path:
    """A 176x144 clip of ``n_frames``: ``source``'s frames, forward then backward, repeated."""
    frames = resize_frames(read_video(source).frames, 144, 176)
    loop = np.concatenate([frames, frames[-2:0:-1]])
    return write_video(path, loop[np.arange(n_frames) % len(loop)], fps=24)


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
        short = peak_kib(models, make_clip(tmp / "short.mp4", args.frames, args.clip), args.size, args.pose_mode)
        long = peak_kib(models, make_clip(tmp / "long.mp4", args.frames * args.factor, args.clip), args.size,
                        args.pose_mode)
    ratio = long / short
    print(f"peak memory: {short / 1024:.0f} MiB for {args.frames} frames, {long / 1024:.0f} MiB for "
          f"{args.frames * args.factor} frames: {ratio:.2f}x (limit {args.limit}x)")
    sys.exit(0 if ratio <= args.limit else 1)


if __name__ == "__main__":
    main()

"""Video clips for the classifier: which frames a clip takes, how they are decoded and preprocessed.

Sampling follows the RoCoG-v2 baselines (mmaction2's ``SampleFrames``): a clip is ``clip_len``
frames taken every ``frame_interval`` frames, i.e. it spans ``clip_len * frame_interval`` source
frames (16 x 5 = 80 by default). A video shorter than that is looped (frame numbers wrap around).

- evaluation (``random=False``): ``n_clips`` clips spread evenly over the video, each starting in
  the middle of its share; one clip is the centre clip. Deterministic, so a frozen backbone's
  features can be cached.
- training with ``random=True`` (``augment``): each clip starts at a random offset in its share.

Only the sampled frames are decoded (:func:`vidreal.io.read_frames`, decord ``get_batch``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from vidreal.checks import positive_int
from vidreal.classify.data import Samples


def sample_clips(n_frames: int, clip_len: int = 16, frame_interval: int = 5, n_clips: int = 1,
                 random: bool = False, generator: torch.Generator | None = None) -> np.ndarray:
    """Frame numbers of ``n_clips`` clips of a video with ``n_frames`` frames: int64 (n_clips, clip_len).

    Every number lies in ``[0, n_frames)``; within a clip they step by ``frame_interval`` (modulo
    ``n_frames`` where the clip runs past the end: a short video is looped).
    random: random clip starts (training); the generator draws them (None: torch's global RNG).
    """
    for name, value in (("n_frames", n_frames), ("clip_len", clip_len), ("frame_interval", frame_interval),
                        ("n_clips", n_clips)):
        positive_int(name, value)
    span = clip_len * frame_interval
    share = (n_frames - span + 1) / n_clips  # room for each clip's start
    if random:
        whole = int(share)
        if whole > 0:
            starts = np.arange(n_clips) * whole + torch.randint(0, whole, (n_clips,), generator=generator).numpy()
        else:  # shorter than the clips: random starts anywhere, looped
            starts = torch.randint(0, n_frames, (n_clips,), generator=generator).numpy()
    elif share > 0:
        starts = (np.arange(n_clips) * share + share / 2).astype(np.int64)
    else:
        starts = np.zeros(n_clips, dtype=np.int64)
    indices = starts[:, None] + np.arange(clip_len)[None] * frame_interval
    return np.mod(indices, n_frames).astype(np.int64)


@dataclass(frozen=True)
class ClipTransform:
    """uint8 (N, H, W, 3) RGB frames -> float32 (N, 3, size, size) normalised tensor.

    Shorter side resized to ``resize`` (bilinear, antialiased), centre crop ``size``, then
    ``(x / 255 - mean) / std`` per channel. Deterministic; its repr keys the feature cache.
    """

    size: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255)
        h, w = x.shape[-2:]
        scale = self.resize / min(h, w)
        new_h, new_w = max(self.size, round(h * scale)), max(self.size, round(w * scale))
        if (new_h, new_w) != (h, w):
            x = torch.nn.functional.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False,
                                                antialias=True)
        top, left = (new_h - self.size) // 2, (new_w - self.size) // 2
        x = x[:, :, top:top + self.size, left:left + self.size]
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()

    @classmethod
    def from_crop_pct(cls, size: int, crop_pct: float, mean: Sequence[float], std: Sequence[float]) -> ClipTransform:
        """timm's convention: resize to ``floor(size / crop_pct)``, crop ``size``."""
        return cls(int(size), int(math.floor(size / crop_pct)), tuple(map(float, mean)), tuple(map(float, std)))


class VideoDataset:
    """Map-style dataset over video :class:`Samples`: item i -> (float32 (K, T, 3, S, S), label int).

    K = ``n_clips`` clips of T = ``clip_len`` frames (see :func:`sample_clips`), each frame through
    ``transform``. ``random`` clip starts for training with augmentation. ``sampling`` describes
    the choice of frames (it keys the feature cache with the transform).
    """

    def __init__(self, samples: Samples, transform: ClipTransform, clip_len: int = 16, frame_interval: int = 5,
                 n_clips: int = 1, random: bool = False):
        self.samples = samples
        self.transform = transform
        self.clip_len, self.frame_interval, self.n_clips, self.random = clip_len, frame_interval, n_clips, random
        self.sampling = dict(clip_len=clip_len, frame_interval=frame_interval, n_clips=n_clips, random=random)
        sample_clips(1, clip_len, frame_interval, n_clips)  # validates the settings now

    def __len__(self) -> int:
        return len(self.samples)

    def frame_indices(self, index: int) -> np.ndarray:
        """int64 (K, T): the frames item ``index`` takes."""
        from vidreal.io import probe

        samples = self.samples
        n_frames = samples.n_frames[index] if samples.n_frames else probe(samples.paths[index]).n_frames
        return sample_clips(n_frames, self.clip_len, self.frame_interval, self.n_clips, self.random)

    def __getitem__(self, index: int):
        from vidreal.io import read_frames

        indices = self.frame_indices(index)
        frames = read_frames(self.samples.paths[index], indices.reshape(-1))  # only these frames decoded
        x = self.transform(frames)
        return x.view(self.n_clips, self.clip_len, *x.shape[1:]), self.samples.labels[index]

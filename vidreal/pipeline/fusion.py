"""Flow-guided fusion (``consistency="flow"``): the previous frame's predicted clean latent, warped
along the SOURCE flow, blended into the current frame's prediction during a band of steps.

At each denoising step inside ``band`` (fractions of the schedule, e.g. ``(0.2, 0.8)``), for
frame j of the denoised sequence and its previous frame j-1:

    x0_j  = (x_j - sqrt(1 - a_t) eps_j) / sqrt(a_t)          (a_t: the scheduler's alphas_cumprod)
    x0_j += w_j * (warp(x0_{j-1}, flow_j) - x0_j)              (x0_{j-1} already fused: a chain from frame 0)
    eps_j = (x_j - sqrt(a_t) x0_j) / sqrt(1 - a_t)             (what the scheduler steps with)

``flow_j`` is the source flow from frame j to frame j-1 resized to the latent grid, ``w_j`` the
fraction of each latent cell's pixels that the occlusion test marks visible in both frames, so
disoccluded cells keep their own prediction (``warp.fusion_link``, computed ahead in the stream's
flow pool). The fused x0 of each batch's last frame is kept per
step, so a batch's first frame fuses with its previous frame as if the clip were one batch
(chunk-invariant). Everything here is per stream.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class FlowFusion:
    """Per-stream fusion state: the band, and the last fused x0 per step (``nbytes`` says its size)."""

    def __init__(self, band: tuple[float, float]):
        self.band = tuple(band)
        self.last: dict[int, torch.Tensor] = {}  # step -> fused x0 of the latest batch's last frame (1, C, h, w)
        self.links: list = []  # per frame of the current batch: (grid, weight) or None; set before each call
        self.record = True

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.last.values())

    def active(self, step: int, n_steps: int) -> bool:
        lo, hi = self.band
        return lo <= step / n_steps < hi

    def __call__(self, eps: torch.Tensor, x: torch.Tensor, t, step: int, alphas_cumprod: torch.Tensor) -> torch.Tensor:
        """eps, x: (n, C, h, w) noise prediction and scaled latents of the batch; returns the fused eps."""
        a = alphas_cumprod[int(t)].to(x.device, x.dtype)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        fused, prev = [], self.last.get(step)
        for j, link in enumerate(self.links):
            cur = x0[j:j + 1]
            if link is not None and prev is not None:
                grid, weight = link
                warped = F.grid_sample(prev, grid, mode="bilinear", padding_mode="border", align_corners=True)
                cur = cur + weight * (warped - cur)
            fused.append(cur)
            prev = cur
        if self.record:
            self.last[step] = prev
        x0 = torch.cat(fused)
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

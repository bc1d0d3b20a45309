"""Correspondence on the translator's device: backward warping, the occlusion test, keyframe
propagation and flow-fusion links in torch, with the source flows estimated ahead of their use.

The numpy functions of ``vidreal.flow`` (which the metrics use) define the results: ``warp`` and
``valid_mask`` here equal them within interpolation error given the same flows (``grid_sample``
with ``align_corners=True`` and border padding is ``cv2.remap`` with ``BORDER_REPLICATE``).

``Correspondence`` is one stream's flow work: fed the source frames of a keyframe gap (or a pair of
keyframes, for fusion) as soon as they are known, it returns Futures; a worker pool
(``vidreal.flow.FlowPool``) estimates each pair's two flows once and prepares, on the device, all
that depends on the source alone (sampling grids, occlusion masks, blend weights). Once the
keyframes are denoised, warping and blending their outputs (``propagate``) is a short job for a
thread of its own (``submit``), done while the next batch denoises: the denoising thread waits for no flow.

Propagation: for a frame t between keyframes a < t < b, each keyframe's output is warped to t
along the source flow from t to that keyframe (direct flows: errors do not accumulate over the
gap). The warps are blended with weights ``(b - t) / (b - a) * visible_a`` and ``(t - a) / (b - a)
* visible_b`` (``visible``: the forward-backward occlusion mask of that flow); where neither
keyframe sees the pixel, the nearer keyframe's warp is used and the pixel counts as unseen.
"""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vidreal.flow import (BOUNDARY_BIAS, BOUNDARY_WEIGHT, CONSISTENCY_BIAS, CONSISTENCY_WEIGHT, FlowPool)
from vidreal.stages import in_run, timed


@functools.lru_cache(maxsize=16)
def _coords(height: int, width: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixel coordinates xs, ys, float32 (H, W) each (made once per size and device: read only)."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32),
                            torch.arange(width, device=device, dtype=torch.float32), indexing="ij")
    return xs, ys


@functools.lru_cache(maxsize=16)
def _identity_grid(height: int, width: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(grid of no motion, float32 (H, W, 2); pixels -> grid units, float32 (2,)), made once per size and
    device (read only): ``grid_sample``'s normalised coordinates (align_corners) of ``x + flow(x)`` are
    ``identity + flow * per_pixel``."""
    xs, ys = _coords(height, width, device)
    per_pixel = torch.tensor([2 / max(width - 1, 1), 2 / max(height - 1, 1)], device=device)
    return torch.stack([xs, ys], dim=-1) * per_pixel - 1, per_pixel


def sampling_grid(flow: torch.Tensor, scale: tuple[float, float] = (1.0, 1.0)) -> torch.Tensor:
    """float32 (N, H, W, 2) flow -> ``grid_sample``'s normalised grid of ``x + flow(x)`` (align_corners).
    ``scale``: the flow is in pixels of another size, (new width / its width, new height / its height)."""
    _, height, width, _ = flow.shape
    identity, per_pixel = _identity_grid(height, width, flow.device)
    if scale != (1.0, 1.0):
        per_pixel = per_pixel * torch.tensor(scale, device=flow.device)
    return torch.addcmul(identity, flow, per_pixel)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample float (N, C, H, W) ``image`` at ``x + flow(x)`` (bilinear, edges replicated), as
    ``vidreal.flow.warp``; flow float32 (N, H, W, 2)."""
    return F.grid_sample(image, sampling_grid(flow).to(image.dtype), mode="bilinear", padding_mode="border",
                         align_corners=True)


def in_bounds(flow: torch.Tensor) -> torch.Tensor:
    """bool (N, H, W): where ``x + flow(x)`` lies inside the frame (``vidreal.flow.in_bounds``)."""
    _, height, width, _ = flow.shape
    xs, ys = _coords(height, width, flow.device)
    tx, ty = xs + flow[..., 0], ys + flow[..., 1]
    return (tx >= -0.5) & (tx <= width - 0.5) & (ty >= -0.5) & (ty <= height - 0.5)


def valid_mask(flow_ab: torch.Tensor, flow_ba: torch.Tensor) -> torch.Tensor:
    """bool (N, H, W): where float32 (N, H, W, 2) ``flow_ab`` can be trusted: the forward-backward and
    motion-boundary tests of ``vidreal.flow.valid_mask`` (Ruder et al. 2016), and in the frame."""
    u, v = flow_ab[..., 0], flow_ab[..., 1]
    back = warp(flow_ba.permute(0, 3, 1, 2), flow_ab)
    bu, bv = back[:, 0], back[:, 1]
    norm2 = u * u + v * v
    consistent = (u + bu) ** 2 + (v + bv) ** 2 <= CONSISTENCY_WEIGHT * (norm2 + bu * bu + bv * bv) + CONSISTENCY_BIAS
    du_y, du_x = torch.gradient(u, dim=(1, 2))
    dv_y, dv_x = torch.gradient(v, dim=(1, 2))
    smooth = du_x**2 + du_y**2 + dv_x**2 + dv_y**2 <= BOUNDARY_WEIGHT * norm2 + BOUNDARY_BIAS
    return consistent & smooth & in_bounds(flow_ab)


@dataclass
class Link:
    """What propagating one frame t from keyframes a < t < b needs, all from the source: grids
    (1, H, W, 2) onto each keyframe, normalised blend weights (1, 1, H, W) summing to 1, and the
    fraction of pixels neither keyframe sees."""

    grid_a: torch.Tensor
    grid_b: torch.Tensor
    weight_a: torch.Tensor
    weight_b: torch.Tensor
    unseen: float


def upscale_flow(flow: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """float32 (N, h, w, 2) flows resampled (bilinear) to (N, height, width, 2), in the new pixels
    (``vidreal.flow.upscale_flow``, on the device)."""
    h, w = flow.shape[1:3]
    big = F.interpolate(flow.permute(0, 3, 1, 2), size=(height, width), mode="bilinear", align_corners=False)
    return big.permute(0, 2, 3, 1) * torch.tensor([width / w, height / h], device=flow.device)


def propagation_link(forward: torch.Tensor, backward: torch.Tensor, t: int, a: int, b: int,
                     size: tuple[int, int] | None = None) -> Link:
    """``Link`` of frame t from float32 (2, h, w, 2) flows: ``forward`` = (t -> a, t -> b),
    ``backward`` = (a -> t, b -> t). ``size``: the frames' (H, W) when the flows were estimated
    smaller: the occlusion test and the weights are computed at the flows' size, then the forward
    flows and the weights are scaled up (4x less work at half the size)."""
    if not a < t < b:
        raise ValueError(f"frame {t} is not strictly between keyframes {a} and {b}")
    visible = valid_mask(forward, backward).float()  # (2, h, w)
    wa = visible[0] * ((b - t) / (b - a))
    wb = visible[1] * ((t - a) / (b - a))
    total = wa + wb
    seen = total > 0
    nearer_a = float(t - a <= b - t)
    weights = torch.stack([torch.where(seen, wa / torch.where(seen, total, 1.0), nearer_a),
                           torch.where(seen, wb / torch.where(seen, total, 1.0), 1.0 - nearer_a)])[:, None]
    unseen = 1.0 - float(seen.count_nonzero()) / seen.numel()
    h, w = forward.shape[1:3]
    if size is None or tuple(size) == (h, w):
        grids = sampling_grid(forward)
    else:  # the flows and the weights scaled up together: one interpolation (weights still sum to 1)
        flows = forward.permute(0, 3, 1, 2).reshape(1, 4, h, w)
        big = F.interpolate(torch.cat([flows, weights.reshape(1, 2, h, w)], dim=1), size=tuple(size),
                            mode="bilinear", align_corners=False)[0]
        grids = sampling_grid(big[:4].reshape(2, 2, *size).permute(0, 2, 3, 1), (size[1] / w, size[0] / h))
        weights = big[4:, None]
    return Link(grids[:1], grids[1:], weights[:1], weights[1:], unseen)


def propagate(links: list[Link], out_a: np.ndarray, out_b: np.ndarray, device) -> np.ndarray:
    """The frames of one gap: uint8 (n, H, W, 3), from the keyframes' uint8 (H, W, 3) outputs and
    each frame's ``Link`` (the only work propagation leaves to the denoising thread)."""
    n = len(links)
    outs = torch.from_numpy(np.stack([out_a, out_b])).to(device).permute(0, 3, 1, 2).float()
    from_a = F.grid_sample(outs[:1].expand(n, -1, -1, -1), torch.cat([k.grid_a for k in links]), mode="bilinear",
                           padding_mode="border", align_corners=True)
    from_b = F.grid_sample(outs[1:].expand(n, -1, -1, -1), torch.cat([k.grid_b for k in links]), mode="bilinear",
                           padding_mode="border", align_corners=True)
    frames = from_a.mul_(torch.cat([k.weight_a for k in links])).addcmul_(from_b, torch.cat([k.weight_b for k in links]))
    return frames.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def fusion_link(forward: torch.Tensor, backward: torch.Tensor, latent_hw: tuple[int, int], dtype):
    """(grid (1, h, w, 2), weight (1, 1, h, w)) that warp the previous frame's latent onto the current
    one (``vidreal.pipeline.fusion``), from float32 (1, H, W, 2) flows current -> previous and back:
    the flow area-averaged onto the latent grid, the weight the share of each cell's pixels visible."""
    h, w = latent_hw
    height, width = forward.shape[1:3]
    valid = valid_mask(forward, backward).float()[:, None]
    small = F.interpolate(forward.permute(0, 3, 1, 2), size=(h, w), mode="area").permute(0, 2, 3, 1)
    small = small * torch.tensor([w / width, h / height], device=small.device)
    weight = F.interpolate(valid, size=(h, w), mode="area")
    return sampling_grid(small).to(dtype), weight.to(dtype)


class Correspondence:
    """One stream's source correspondence, computed ahead in a ``FlowPool``; every result is a Future.

    ``gap(left, right, frames)``: one ``Link`` Future per frame between two keyframes (``(index,
    uint8 (H, W, 3) source)`` each). ``fusion(current, previous, latent_hw, dtype)``: the fusion link
    between two consecutive denoised frames. Each flow pair is estimated once, at ``flow_size``.
    """

    def __init__(self, method: str = "dis", size: int | None = None, device=None, workers: int | None = None):
        self.device = torch.device(device or "cpu")
        self.pool = FlowPool(method, size, workers=workers, device=self.device)
        # propagation (``submit``) in a thread of its own: the denoiser waits for it, so it must not
        # queue behind the flows of later gaps, which the pool is already estimating ahead
        self._propagation = ThreadPoolExecutor(1, thread_name_prefix="vidreal-propagation")

    def _tensor(self, flows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(flows).to(self.device)

    def gap(self, left, right, frames) -> list:
        (a, source_a), (b, source_b) = left, right
        ends = np.stack([source_a, source_b])

        def job(pairs, t, source):
            with timed("flow", frames=1):
                forward, backward = pairs(np.broadcast_to(source, ends.shape), ends, full=False)
                return propagation_link(self._tensor(forward), self._tensor(backward), t, a, b,
                                        size=source.shape[:2])
        return [self.pool.submit(in_run(job), t, source) for t, source in frames]

    def fusion(self, current: np.ndarray, previous: np.ndarray, latent_hw, dtype):
        def job(pairs):
            with timed("flow"):
                forward, backward = pairs(current[None], previous[None], full=False)  # (any size will do)
                return fusion_link(self._tensor(forward), self._tensor(backward), latent_hw, dtype)
        return self.pool.submit(in_run(job))

    def submit(self, fn):
        """Run ``fn()`` in the propagation thread (after the propagation queued before it), counted in
        the caller's run (``vidreal.stages.in_run``); its Future."""
        return self._propagation.submit(in_run(fn))

    def close(self) -> None:
        self._propagation.shutdown(wait=True, cancel_futures=True)
        self.pool.close()

"""Optical flow, backward warping and the occlusion test: used by translation (keyframe propagation,
flow-guided fusion) and by the temporal metrics, always on the SOURCE clip.

Conventions: a flow from frame ``a`` to frame ``b`` is float32 ``(H, W, 2)`` (dx, dy in pixels)
defined on ``a``'s pixels, so that ``a(x) ~ b(x + flow(x))``. ``warp(b, flow)`` samples ``b`` at
``x + flow(x)`` and so rebuilds ``a``.

Flow methods (a registry, ``FLOW_METHODS``):
  - ``dis``: OpenCV's DIS optical flow, "medium" preset (no weights; ~20 ms per 512 px pair).
  - ``dis-fast``: DIS with the "fast" preset (~5 ms per 512 px pair, less accurate).
  - ``farneback``: OpenCV's Farneback flow (no weights; slower and blurrier than DIS).
  - ``raft`` / ``raft-small``: torchvision's RAFT large / small. Their weights come from
    torchvision's download cache (``$TORCH_HOME/hub/checkpoints``); with ``HF_HUB_OFFLINE=1``
    (the project's offline switch) nothing is downloaded. Missing weights raise ModelError.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from vidreal.errors import ConfigError, ModelError
from vidreal.runtime import background_thread, first_line, hub_offline, resolve_device

log = logging.getLogger(__name__)

# Occlusion test constants from Ruder et al. 2016 ("Artistic style transfer for videos"), the
# test Lai et al. 2018 use for their warp error.
CONSISTENCY_WEIGHT = 0.01
CONSISTENCY_BIAS = 0.5
BOUNDARY_WEIGHT = 0.01
BOUNDARY_BIAS = 0.002


class DisFlow:
    """OpenCV DIS optical flow on grey frames."""

    def __init__(self, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM):
        self._dis = cv2.DISOpticalFlow_create(preset)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return _pairwise(a, b, lambda x, y: self._dis.calc(x, y, None))


class FarnebackFlow:
    """OpenCV Farneback optical flow on grey frames (pyramid 0.5 x 3 levels, window 15)."""

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return _pairwise(
            a, b, lambda x, y: cv2.calcOpticalFlowFarneback(x, y, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        )


def _pairwise(a, b, fn) -> np.ndarray:
    out = np.empty(a.shape[:3] + (2,), dtype=np.float32)
    for i, (x, y) in enumerate(zip(a, b)):
        out[i] = fn(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.cvtColor(y, cv2.COLOR_RGB2GRAY))
    return out


class RaftFlow:
    """torchvision RAFT on RGB frames; ``model`` is a torchvision ``RAFT`` module.

    Frames are scaled to [-1, 1] and padded (edge replicate) to multiples of 8 and at least
    ``MIN_SIZE`` px, as RAFT needs; the flow is cropped back to the frame.
    """

    MIN_SIZE = 128  # RAFT's correlation pyramid needs feature maps of at least 16 (x 8) px

    def __init__(self, model, device=None, num_flow_updates: int = 12):
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.num_flow_updates = num_flow_updates

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        _, height, width, _ = a.shape
        pad_h = max(self.MIN_SIZE, height + -height % 8) - height
        pad_w = max(self.MIN_SIZE, width + -width % 8) - width

        def prepare(x):
            t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device).permute(0, 3, 1, 2)
            t = t.float() / 127.5 - 1.0
            return F.pad(t, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else t

        with torch.inference_mode():
            flows = self.model(prepare(a), prepare(b), num_flow_updates=self.num_flow_updates)
        flow = flows[-1][:, :, :height, :width].permute(0, 2, 3, 1)
        return flow.float().cpu().numpy()


def _load_raft(small: bool, device=None) -> RaftFlow:
    import torch
    from torchvision.models import optical_flow

    if small:
        builder, weights = optical_flow.raft_small, optical_flow.Raft_Small_Weights.DEFAULT
    else:
        builder, weights = optical_flow.raft_large, optical_flow.Raft_Large_Weights.DEFAULT
    name = builder.__name__
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    hint = f"download {weights.url} into {cached.parent}, or use flow 'dis'"
    if not cached.exists() and hub_offline():
        raise ModelError(f"{name} weights are not in the torch cache and the hub is offline "
                         f"(HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set): {hint}",
                         path=cached)
    try:
        model = builder(weights=weights, progress=False)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        raise ModelError(f"cannot get {name} weights ({first_line(exc)}): {hint}", path=cached) from exc
    return RaftFlow(model, device=device)


LEARNED = ("raft", "raft-small")  # methods that run on the translator's device (one model, one worker)

FLOW_METHODS = {
    "dis": lambda device=None: DisFlow(),
    "dis-fast": lambda device=None: DisFlow(cv2.DISOPTICAL_FLOW_PRESET_FAST),
    "farneback": lambda device=None: FarnebackFlow(),
    "raft": lambda device=None: _load_raft(small=False, device=device),
    "raft-small": lambda device=None: _load_raft(small=True, device=device),
}


def check_flow_method(method: str) -> str:
    if method not in FLOW_METHODS:
        raise ConfigError(f"unknown flow method {method!r}; valid methods: {', '.join(FLOW_METHODS)}")
    return method


def make_flow_estimator(method: str = "dis", device=None):
    """A callable ``(a, b) -> flow``: uint8 ``(N, H, W, 3)`` RGB pairs -> float32 ``(N, H, W, 2)``.

    Raises ConfigError for an unknown method, ModelError when RAFT weights are unavailable.
    """
    return FLOW_METHODS[check_flow_method(method)](device=device)


@functools.lru_cache(maxsize=4)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (xs, ys), float32 ``(H, W)`` each; cached, do not modify."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return xs, ys


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``image`` at ``x + flow(x)`` (bilinear, edges replicated).

    image: ``(H, W)`` or ``(H, W, C)`` (uint8 or float32); flow: float32 ``(H, W, 2)``.
    Returns an array of ``image``'s shape and dtype. Samples that fall outside the frame are
    not meaningful: ``in_bounds(flow)`` says which ones are.
    """
    height, width = flow.shape[:2]
    xs, ys = _grid(height, width)
    map_x = xs + flow[..., 0]
    map_y = ys + flow[..., 1]
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def in_bounds(flow: np.ndarray) -> np.ndarray:
    """bool ``(H, W)``: where ``x + flow(x)`` lies inside the frame (within the border pixels' area,
    i.e. up to half a pixel beyond the outermost pixel centres)."""
    height, width = flow.shape[:2]
    xs, ys = _grid(height, width)
    tx, ty = xs + flow[..., 0], ys + flow[..., 1]
    return (tx >= -0.5) & (tx <= width - 0.5) & (ty >= -0.5) & (ty <= height - 0.5)


def valid_mask(flow_ab: np.ndarray, flow_ba: np.ndarray) -> np.ndarray:
    """Non-occlusion mask of frame ``a``: bool ``(H, W)``, True where ``flow_ab`` can be trusted.

    flow_ab: float32 ``(H, W, 2)`` from ``a`` to ``b``; flow_ba: from ``b`` back to ``a``.
    A pixel is masked out (False) when (Ruder et al. 2016, as in Lai et al. 2018):
      - forward-backward check: ``|w + w~|^2 > 0.01 (|w|^2 + |w~|^2) + 0.5``, with ``w =
        flow_ab(x)`` and ``w~ = flow_ba(x + w)`` (occluded or disoccluded in ``b``);
      - motion boundary: ``|grad u|^2 + |grad v|^2 > 0.01 |w|^2 + 0.002``;
      - ``x + w`` falls outside the frame.
    """
    u, v = flow_ab[..., 0], flow_ab[..., 1]
    back = warp(flow_ba, flow_ab)
    bu, bv = back[..., 0], back[..., 1]
    norm2 = u * u + v * v
    consistent = (u + bu) ** 2 + (v + bv) ** 2 <= CONSISTENCY_WEIGHT * (norm2 + bu * bu + bv * bv) + CONSISTENCY_BIAS
    du_y, du_x = np.gradient(u)
    dv_y, dv_x = np.gradient(v)
    smooth = du_x**2 + du_y**2 + dv_x**2 + dv_y**2 <= BOUNDARY_WEIGHT * norm2 + BOUNDARY_BIAS
    return consistent & smooth & in_bounds(flow_ab)


def check_flow_size(size) -> int | None:
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 16):
        raise ConfigError(f"flow_size must be an integer >= 16 (or null: the working size), got {size!r}")
    return size


class FlowPool:
    """Source flows estimated off the caller's thread, ahead of their use.

        pool = FlowPool("dis", size=256)
        future = pool.submit(job, a, b)     # job(pool.pairs, a, b) runs in a worker
        pool.close()

    ``pairs(a, b)`` gives both directions of frame pairs at once (call it from the workers). OpenCV
    methods run in up to ``workers`` threads (OpenCV releases the GIL), each with its own estimator;
    ``raft``/``raft-small`` run in one thread on ``device`` (the model is loaded here, so missing
    weights fail before any frame). ``size``: flows are estimated with the short side at ``size``
    pixels and scaled up to the frames' size (None, or a size >= the frames': at their size).
    """

    def __init__(self, method: str = "dis", size: int | None = None, workers: int | None = None, device=None):
        self.method, self.size, self.device = check_flow_method(method), check_flow_size(size), device
        learned = method in LEARNED
        self._shared = make_flow_estimator(method, device=device) if learned else None
        workers = 1 if learned else workers or max(1, min(4, os.cpu_count() or 1))
        # background threads: flows are estimated ahead of their use, so the decoding and conditions
        # that feed the denoiser come first where the CPU is short (vidreal.runtime.background_thread)
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="vidreal-flow", initializer=background_thread)
        self._local = threading.local()

    def _estimator(self):
        if self._shared is not None:
            return self._shared
        if getattr(self._local, "estimator", None) is None:
            self._local.estimator = make_flow_estimator(self.method)
        return self._local.estimator

    def pairs(self, a: np.ndarray, b: np.ndarray, full: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Flows ``a -> b`` and ``b -> a``: uint8 ``(N, H, W, 3)`` -> two float32 ``(N, H, W, 2)``;
        ``full=False``: at the size they were estimated at (``(N, h, w, 2)``, in its pixels), for a
        caller that scales them up itself (on the device)."""
        n, height, width = a.shape[:3]
        scale = 1.0 if self.size is None else self.size / min(height, width)
        if scale < 1.0:  # each frame made small once, before the two directions are put together
            h, w = max(8, round(height * scale)), max(8, round(width * scale))
            a, b = (np.stack([cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA) for x in xs]) for xs in (a, b))
        flows = self._estimator()(np.concatenate([a, b]), np.concatenate([b, a]))
        if scale < 1.0 and full:
            flows = np.stack([upscale_flow(f, height, width) for f in flows])
        return flows[:n], flows[n:]

    def submit(self, fn, *args) -> Future:
        """Run ``fn(self.pairs, *args)`` in a worker; its Future."""
        return self._executor.submit(fn, self.pairs, *args)

    def close(self) -> None:
        """Drop queued jobs, wait for running ones."""
        self._executor.shutdown(wait=True, cancel_futures=True)


def upscale_flow(flow: np.ndarray, height: int, width: int) -> np.ndarray:
    """A flow field ``(h, w, 2)`` resampled up to ``(height, width, 2)`` (bilinear), in the new pixels."""
    h, w = flow.shape[:2]
    big = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
    return big * np.array([width / w, height / h], dtype=np.float32)

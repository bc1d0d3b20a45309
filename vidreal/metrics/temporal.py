"""Temporal consistency: warp error and interpolation error, measured along the SOURCE's motion.

Flow and occlusion masks are computed once, on the source clip (a clean render whose motion we
trust), and applied to both clips. The source's own numbers are the floor an output can reach:
a translated clip that moves exactly like its source scores what the source scores.

- Warp error (Lai et al. 2018): for each pair ``(t, t+1)``, the mean over non-occluded pixels
  and over RGB channels of ``(O_t - warp(O_{t+1}, F_t))^2`` with values in [0, 1], where ``F_t``
  is the source flow ``t -> t+1`` and the mask is ``flow.valid_mask`` (forward-backward check +
  motion boundaries + out of frame); then the mean over pairs.
- Unwarped error: the plain mean squared difference of consecutive frames over all pixels (no
  flow): how much the clip changes; warping should bring it down to the warp error.
- Interpolation error: frame ``t`` rebuilt from ``t-1`` and ``t+1`` warped by the source flows
  ``t -> t-1`` and ``t -> t+1``, averaged where both are valid, using the one valid side where
  only one is, skipped where neither is; RMSE ([0, 1] units) and PSNR (dB, capped at 100) per
  frame, then the mean over frames ``1 .. T-2``.

Per-frame lists have length T: pair values sit at the pair's first frame ``t`` (the last entry is
None), interpolation values at ``t`` (the first and last entries are None).
"""
from __future__ import annotations

import math

import numpy as np
from vidreal.progress import bar as tqdm  # tqdm on a terminal, plain lines in a log, off under -q

from vidreal.errors import InputError
from vidreal.flow import check_flow_method, make_flow_estimator, valid_mask, warp

MAX_PSNR = 100.0

SUMMARY_KEYS = (
    "warp_error", "warp_error_source", "unwarped_error", "unwarped_error_source", "masked_fraction",
    "interp_rmse", "interp_rmse_source", "interp_psnr", "interp_psnr_source",
)


def check_same_shape(source: np.ndarray, output: np.ndarray) -> None:
    if source.shape != output.shape or source.ndim != 4:
        raise InputError(
            f"source and output frames must both be (T, H, W, 3) of one shape, got {source.shape} and {output.shape}"
        )


def _float(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float32) * (1.0 / 255.0)


def masked_mse(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean over True pixels of ``mask`` (bool ``(H, W)``) and channels of ``(a - b)^2``.

    a, b: float32 ``(H, W, C)``. None when the mask is empty.
    """
    n = int(np.count_nonzero(mask))
    if n == 0:
        return None
    diff = a - b
    per_pixel = np.einsum("ijk,ijk->ij", diff, diff)  # squared difference summed over channels
    return float(np.dot(per_pixel.ravel(), mask.ravel().astype(np.float32))) / (n * a.shape[-1])


def psnr(mse: float) -> float:
    """PSNR in dB of a mean squared error on [0, 1] values, capped at ``MAX_PSNR``."""
    return min(MAX_PSNR, 10.0 * math.log10(1.0 / max(mse, 1e-30)))


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def interpolate(prev_frame, next_frame, flow_to_prev, valid_prev, flow_to_next, valid_next):
    """Rebuild a middle frame from its neighbours.

    prev_frame, next_frame: float32 ``(H, W, 3)``; flow_to_*: float32 ``(H, W, 2)`` from the
    middle frame to that neighbour; valid_*: bool ``(H, W)`` masks of those flows.
    Returns (float32 ``(H, W, 3)`` prediction, bool ``(H, W)`` where it is defined).
    """
    wa = valid_prev.astype(np.float32)[..., None]
    wb = valid_next.astype(np.float32)[..., None]
    total = wa + wb
    pred = (wa * warp(prev_frame, flow_to_prev) + wb * warp(next_frame, flow_to_next)) / np.maximum(total, 1.0)
    return pred, total[..., 0] > 0


class TemporalStream:
    """:func:`temporal_metrics` of a clip that arrives in chunks (in order): :meth:`add` the
    (source, output) chunks, then :meth:`result`. Holds three frames, never the clip."""

    def __init__(self, flow: str = "dis", device=None):
        check_flow_method(flow)
        self.flow, self.device = flow, device
        self._estimator = None
        self.per: dict[str, list] = {key: [] for key in SUMMARY_KEYS}
        self._source = None  # uint8 (H, W, 3) source frame t
        self._floats: dict[str, list] = {"": [], "_source": []}  # float frames t-1, t per suffix
        self._previous = None  # (flow t -> t-1, its mask), from the pair before

    def add(self, source: np.ndarray, output: np.ndarray) -> None:
        """Append uint8 ``(n, H, W, 3)`` source and output frames (the same shape)."""
        check_same_shape(source, output)
        for src, out in zip(source, output):
            self._add_frame(src, out)

    def _add_frame(self, src: np.ndarray, out: np.ndarray) -> None:
        for key in SUMMARY_KEYS:
            self.per[key].append(None)
        t = len(self.per["warp_error"]) - 2  # the pair (t, t + 1) this frame completes
        frames = {"": out, "_source": src}
        if t >= 0:
            if self._estimator is None:
                self._estimator = make_flow_estimator(self.flow, device=self.device)
            fw, bw = self._estimator(np.stack([self._source, src]), np.stack([src, self._source]))
            valid_fw, valid_bw = valid_mask(fw, bw), valid_mask(bw, fw)
            self.per["masked_fraction"][t] = 1.0 - float(np.count_nonzero(valid_fw)) / valid_fw.size
        for suffix, frame in frames.items():
            cache = self._floats[suffix]
            cache.append(_float(frame))
            del cache[:-3]
            if t < 0:
                continue
            a, b = cache[-2], cache[-1]
            self.per["warp_error" + suffix][t] = masked_mse(a, warp(b, fw), valid_fw)
            diff = a - b
            self.per["unwarped_error" + suffix][t] = float(np.vdot(diff, diff)) / diff.size
            if self._previous is not None:
                pred, defined = interpolate(cache[-3], b, self._previous[0], self._previous[1], fw, valid_fw)
                mse = masked_mse(a, pred, defined)
                if mse is not None:
                    self.per["interp_rmse" + suffix][t] = math.sqrt(mse)
                    self.per["interp_psnr" + suffix][t] = psnr(mse)
        if t >= 0:
            self._previous = (bw, valid_bw)
        self._source = src

    def result(self) -> dict:
        """What :func:`temporal_metrics` returns for the frames added so far."""
        result = {key: _mean(self.per[key]) for key in SUMMARY_KEYS}
        result["per_frame"] = {key: list(values) for key, values in self.per.items()}
        return result


def temporal_metrics(
    source: np.ndarray,
    output: np.ndarray,
    flow: str = "dis",
    device=None,
    progress: bool = False,
) -> dict:
    """Warp error, unwarped error and interpolation error of ``output`` and ``source``.

    source, output: uint8 ``(T, H, W, 3)`` RGB of the same shape. flow: a ``FLOW_METHODS`` name.
    Returns ``{key: float | None for key in SUMMARY_KEYS, "per_frame": {key: list of T}}``
    (``masked_fraction``: the mean fraction of pixels the occlusion mask drops). Values are None
    where undefined (one frame: every value; two frames: interpolation).
    """
    check_same_shape(source, output)
    stream = TemporalStream(flow, device)
    for t in tqdm(range(len(source)), desc="temporal", unit="frame", disable=not progress):
        stream.add(source[t:t + 1], output[t:t + 1])
    return stream.result()

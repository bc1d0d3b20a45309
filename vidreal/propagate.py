"""Keyframe propagation: frames between two keyframes built from the keyframes' outputs, along the
SOURCE clip's motion (numpy/OpenCV; no model).

For a frame t between keyframes a < t < b, each keyframe's output is warped to t along the source
flow computed directly from t to that keyframe (``vidreal.flow``; direct rather than composed
frame-to-frame flows: errors do not accumulate over the gap, and the occlusion test is made for the
very pair that is used, at 4 flow estimates per frame - cheap next to denoising). The two warps are
blended with weights ``(b - t) / (b - a) * visible_a`` and ``(t - a) / (b - a) * visible_b``
(``visible``: the forward-backward occlusion mask of that flow). Where neither keyframe sees the
pixel, the nearer keyframe's warp is used; the fraction of such pixels is returned.
"""
from __future__ import annotations

import numpy as np

from vidreal.flow import masked_flow, warp


def propagate(estimator, sources: np.ndarray, times, left, right) -> tuple[np.ndarray, list[float]]:
    """Build the frames of one gap between two keyframes.

    estimator: a ``vidreal.flow.make_flow_estimator`` callable. sources: uint8 (n, H, W, 3) source
    frames of the gap; times: their n frame indices. left, right: ``(index, source uint8 (H, W, 3),
    output uint8 (H, W, 3))`` of the keyframes around them (outputs at the sources' size).
    Returns (uint8 (n, H, W, 3) frames, per-frame fraction of pixels neither keyframe sees).
    """
    (a, source_a, out_a), (b, source_b, out_b) = left, right
    if not a < min(times) <= max(times) < b:
        raise ValueError(f"frames {list(times)} are not strictly between keyframes {a} and {b}")
    n = len(sources)
    flow_a, visible_a = masked_flow(estimator, sources, np.repeat(source_a[None], n, axis=0))
    flow_b, visible_b = masked_flow(estimator, sources, np.repeat(source_b[None], n, axis=0))
    out_a, out_b = out_a.astype(np.float32), out_b.astype(np.float32)
    frames, unseen = np.empty_like(sources), []
    for i, t in enumerate(times):
        from_a, from_b = warp(out_a, flow_a[i]), warp(out_b, flow_b[i])
        wa = visible_a[i] * np.float32((b - t) / (b - a))
        wb = visible_b[i] * np.float32((t - a) / (b - a))
        total = wa + wb
        seen = total > 0
        nearer = from_a if t - a <= b - t else from_b
        blend = (wa[..., None] * from_a + wb[..., None] * from_b) / np.where(seen, total, 1)[..., None]
        frames[i] = np.clip(np.where(seen[..., None], blend, nearer).round(), 0, 255).astype(np.uint8)
        unseen.append(1.0 - float(np.count_nonzero(seen)) / seen.size)
    return frames, unseen

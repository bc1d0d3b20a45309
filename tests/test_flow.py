"""vidreal.flow (shared by translation and metrics) and vidreal.propagate, on synthetic clips with known motion."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from vidreal.flow import make_flow_estimator, masked_flow, resize_flow
from vidreal.propagate import propagate


def texture(h=48, w=80, seed=0):
    rng = np.random.default_rng(seed)
    big = np.kron(rng.integers(0, 255, (h // 4, w // 4, 3)), np.ones((4, 4, 1))).astype(np.float32)
    return cv2.GaussianBlur(big, (0, 0), 1.5).clip(0, 255).astype(np.uint8)


def test_metrics_still_export_the_flow_tools():
    import vidreal.metrics as metrics
    from vidreal import flow

    assert metrics.warp is flow.warp and metrics.valid_mask is flow.valid_mask and metrics.FLOW_METHODS is flow.FLOW_METHODS


def test_masked_flow_recovers_a_translation():
    big = texture()
    a, b = big[None, :, 10:58], big[None, :, 13:61]  # b(x) = a(x + 3): flow a -> b is (-3, 0)
    flow, valid = masked_flow(make_flow_estimator("dis"), a, b)
    assert flow.shape == (1, 48, 48, 2) and valid.shape == (1, 48, 48) and valid.dtype == bool
    inner = valid[0, 8:-8, 8:-8]
    assert inner.mean() > 0.9
    assert np.abs(flow[0, 8:-8, 8:-8][inner] - [-3, 0]).mean() < 0.3
    assert not valid[0, :, :2].any()  # the columns that leave the frame are masked


def test_resize_flow_scales_vectors():
    flow = np.zeros((32, 64, 2), np.float32)
    flow[..., 0], flow[..., 1] = 8.0, -4.0
    small = resize_flow(flow, 8, 16)
    assert small.shape == (8, 16, 2) and np.allclose(small[..., 0], 2.0) and np.allclose(small[..., 1], -1.0)


def test_propagate_moves_consistent_keyframes_along_the_source_motion():
    big = texture(w=96)
    sources = np.stack([big[:, t:t + 48] for t in range(5)])  # frame t(x) = frame 0(x + t)
    out_big = texture(w=96, seed=5)  # "outputs" that move like the source: the ideal keyframe outputs
    outs = np.stack([out_big[:, t:t + 48] for t in range(5)])
    frames, unseen = propagate(make_flow_estimator("dis"), sources[1:4], [1, 2, 3], (0, sources[0], outs[0]),
                               (4, sources[4], outs[4]))
    assert frames.shape == (3, 48, 48, 3) and frames.dtype == np.uint8 and len(unseen) == 3
    for i, t in enumerate((1, 2, 3)):
        err = np.abs(frames[i, 6:-6, 6:-6].astype(int) - outs[t, 6:-6, 6:-6]).mean()
        assert err < 2.0, (t, err)  # interpolation error only
    assert all(0 <= u < 0.1 for u in unseen)


def test_propagate_falls_back_to_the_nearer_keyframe_where_neither_sees():
    def known_flow(a, b):  # a flow that is known, not estimated: zero, except a square that leaves the frame
        flow = np.zeros(a.shape[:3] + (2,), np.float32)
        flow[:, 16:32, 16:32, 0] = 100.0
        return flow

    still = texture(48, 48)
    black, white = np.zeros((48, 48, 3), np.uint8), np.full((48, 48, 3), 255, np.uint8)
    frames, unseen = propagate(known_flow, still[None], [1], (0, still, black), (3, still, white))
    assert 16 * 16 / 48**2 <= unseen[0] < 0.2  # the square, and its motion boundary
    assert frames[0, 20:28, 20:28].max() == 0  # the nearer keyframe (frame 0, black) fills what neither sees
    assert np.abs(frames[0, :8, :8].astype(int) - 85).max() <= 1  # seen by both: 2/3 black + 1/3 white
    with pytest.raises(ValueError, match="between keyframes"):
        propagate(known_flow, still[None], [0], (0, still, black), (3, still, white))

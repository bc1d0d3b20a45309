"""vidreal.flow (shared by translation and metrics), the flow pool, and the device path of propagation and
fusion (vidreal.pipeline.warp) against the numpy path, on synthetic clips with known motion."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from vidreal import flow as npflow
from vidreal.errors import ModelError
from vidreal.flow import FlowPool, make_flow_estimator
from vidreal.pipeline import warp as dev


def texture(h=48, w=80, seed=0):
    rng = np.random.default_rng(seed)
    big = np.kron(rng.integers(0, 255, (h // 4, w // 4, 3)), np.ones((4, 4, 1))).astype(np.float32)
    return cv2.GaussianBlur(big, (0, 0), 1.5).clip(0, 255).astype(np.uint8)


def smooth_flow(h, w, amplitude, seed, sigma=12):
    rng = np.random.default_rng(seed)
    flow = cv2.GaussianBlur(rng.normal(size=(h, w, 2)).astype(np.float32), (0, 0), sigma)
    return (flow / np.abs(flow).max() * amplitude).astype(np.float32)


def t(array):
    return torch.from_numpy(np.ascontiguousarray(array))


# the numpy path: each frame's flows and masks as the metrics compute them, blended as translation used to
def numpy_propagate(out_a, out_b, forward, backward, time, a, b):
    """forward (t -> a, t -> b), backward (a -> t, b -> t): (2, H, W, 2) numpy flows of one frame."""
    visible = [npflow.valid_mask(f, g) for f, g in zip(forward, backward)]
    from_a, from_b = npflow.warp(out_a.astype(np.float32), forward[0]), npflow.warp(out_b.astype(np.float32), forward[1])
    wa, wb = visible[0] * np.float32((b - time) / (b - a)), visible[1] * np.float32((time - a) / (b - a))
    total = wa + wb
    seen = total > 0
    nearer = from_a if time - a <= b - time else from_b
    blend = (wa[..., None] * from_a + wb[..., None] * from_b) / np.where(seen, total, 1)[..., None]
    return np.clip(np.where(seen[..., None], blend, nearer).round(), 0, 255).astype(np.uint8), 1 - seen.mean()


def test_metrics_still_export_the_flow_tools():
    import vidreal.metrics as metrics

    assert metrics.warp is npflow.warp and metrics.valid_mask is npflow.valid_mask
    assert metrics.FLOW_METHODS is npflow.FLOW_METHODS


def test_device_warp_and_occlusion_test_equal_numpy():
    h, w = 48, 64
    image = texture(h, w, seed=3).astype(np.float32)
    for flow_ab in (smooth_flow(h, w, 3.0, 0), np.broadcast_to(np.float32([2.5, -1.0]), (h, w, 2)).copy()):
        flow_ba = -npflow.warp(flow_ab, flow_ab) + smooth_flow(h, w, 0.4, 1)  # nearly consistent: masks of both kinds
        warped = dev.warp(t(image).permute(2, 0, 1)[None], t(flow_ab)[None])[0].permute(1, 2, 0).numpy()
        expected = npflow.warp(image, flow_ab)
        assert np.abs(warped - expected).mean() < 0.2 and np.abs(warped - expected).max() < 2.0  # cv2's 1/32 px steps
        mask = dev.valid_mask(t(flow_ab)[None], t(flow_ba)[None])[0].numpy()
        expected = npflow.valid_mask(flow_ab, flow_ba)
        assert 0.05 < expected.mean() < 0.98 and (mask == expected).mean() > 0.995


@pytest.mark.parametrize("kind", ["shift", "smooth"])
def test_device_propagation_equals_the_numpy_path(kind):
    h, w, a, b = 48, 64, 0, 4
    out_a, out_b = texture(h, w, seed=5), texture(h, w, seed=6)
    for time in (1, 2, 3):
        if kind == "shift":  # frame t(x) = a(x + t) = b(x + t - 4): known translations, exact inverse flows back
            forward = np.stack([np.broadcast_to(np.float32([-time, 0]), (h, w, 2)),
                                np.broadcast_to(np.float32([b - time, 0]), (h, w, 2))])
        else:
            forward = np.stack([smooth_flow(h, w, 5.0, time), smooth_flow(h, w, 5.0, 10 + time)])
        backward = np.stack([-npflow.warp(f, f) for f in forward])
        expected, unseen = numpy_propagate(out_a, out_b, forward, backward, time, a, b)
        link = dev.propagation_link(t(forward), t(backward), time, a, b)
        got = dev.propagate([link], out_a, out_b, "cpu")[0]
        err = np.abs(got.astype(int) - expected)
        assert err.mean() < 0.5 and np.percentile(err, 99) <= 3, (kind, time, err.mean())
        assert abs(link.unseen - unseen) < 0.01
        if kind == "shift":  # the columns that left one keyframe are seen by the other
            assert unseen == 0 and link.unseen == 0


def test_device_fusion_link_equals_the_numpy_path():
    h, w, f = 64, 96, 8
    forward = smooth_flow(h, w, 4.0, 4, sigma=16)
    backward = -npflow.warp(forward, forward)
    grid, weight = dev.fusion_link(t(forward)[None], t(backward)[None], (h // f, w // f), torch.float32)
    # numpy: the flow and the visible share area-averaged onto the latent grid, in latent pixels
    small = cv2.resize(forward, (w // f, h // f), interpolation=cv2.INTER_AREA) / f
    share = cv2.resize(npflow.valid_mask(forward, backward).astype(np.float32), (w // f, h // f),
                       interpolation=cv2.INTER_AREA)
    ys, xs = np.mgrid[0:h // f, 0:w // f].astype(np.float32)
    expected = np.stack([2 * (xs + small[..., 0]) / (w // f - 1) - 1, 2 * (ys + small[..., 1]) / (h // f - 1) - 1], -1)
    assert np.abs(grid[0].numpy() - expected).max() < 1e-4
    assert np.abs(weight[0, 0].numpy() - share).max() <= 3 / f**2 and 0.3 < share.mean() < 1  # a pixel on a threshold


def test_flow_pool_recovers_a_translation_at_a_smaller_size():
    big = texture(96, 160)
    a, b = big[None, :, 20:116], big[None, :, 26:122]  # b(x) = a(x + 6): flow a -> b is (-6, 0)
    pool = FlowPool("dis")
    try:
        for size in (None, 48):
            forward, backward = pool.submit(lambda pairs: pairs(a, b)).result()
            assert forward.shape == (1, 96, 96, 2) and backward.shape == forward.shape
            valid = npflow.valid_mask(forward[0], backward[0])
            inner = valid[16:-16, 16:-16]
            assert inner.mean() > 0.9
            assert np.abs(forward[0, 16:-16, 16:-16][inner] - [-6, 0]).mean() < 0.5, size
            assert np.abs(backward[0, 16:-16, 16:-16] - [6, 0]).mean() < 0.5
            assert not valid[:, :4].any()  # the columns that leave the frame are masked
            pool.close()
            pool = FlowPool("dis", size=48)
    finally:
        pool.close()


def test_upscale_flow_scales_vectors():
    flow = np.zeros((8, 16, 2), np.float32)
    flow[..., 0], flow[..., 1] = 2.0, -1.0
    big = npflow.upscale_flow(flow, 32, 64)
    assert big.shape == (32, 64, 2) and np.allclose(big[..., 0], 8.0) and np.allclose(big[..., 1], -4.0)


def test_upscale_flow_on_the_device_equals_the_numpy_one():
    flow = np.random.default_rng(2).normal(0, 3, (2, 12, 20, 2)).astype(np.float32)
    big = dev.upscale_flow(t(flow), 36, 60).numpy()
    assert big.shape == (2, 36, 60, 2)
    assert np.abs(big - np.stack([npflow.upscale_flow(f, 36, 60) for f in flow])).max() < 1e-3


@pytest.mark.parametrize("size", [None, 32])
def test_correspondence_propagates_consistent_keyframes_along_the_source_motion(size):
    """At the frames' size, and with flows estimated at a 32-px short side (the occlusion test and the
    weights at that size, scaled up on the device): the links are at the frames' size either way."""
    big = texture(w=96)
    sources = np.stack([big[:, s:s + 48] for s in range(5)])  # frame t(x) = frame 0(x + t)
    out_big = texture(w=96, seed=5)  # "outputs" that move like the source: the ideal keyframe outputs
    outs = np.stack([out_big[:, s:s + 48] for s in range(5)])
    corr = dev.Correspondence("dis", size)
    try:
        links = [f.result() for f in corr.gap((0, sources[0]), (4, sources[4]), [(s, sources[s]) for s in (1, 2, 3)])]
    finally:
        corr.close()
    assert all(link.grid_a.shape == (1, 48, 48, 2) and link.weight_b.shape == (1, 1, 48, 48) for link in links)
    assert all(torch.allclose(link.weight_a + link.weight_b, torch.ones(1)) for link in links)
    frames = dev.propagate(links, outs[0], outs[4], "cpu")
    assert frames.shape == (3, 48, 48, 3) and frames.dtype == np.uint8
    for i, s in enumerate((1, 2, 3)):
        err = np.abs(frames[i, 6:-6, 6:-6].astype(int) - outs[s, 6:-6, 6:-6]).mean()
        assert err < 2.0, (s, err)  # interpolation error only
    assert all(0 <= link.unseen < 0.1 for link in links)


def test_propagation_falls_back_to_the_nearer_keyframe_where_neither_sees():
    h = w = 48
    forward = np.zeros((2, h, w, 2), np.float32)  # zero, except a square that leaves the frame
    forward[:, 16:32, 16:32, 0] = 100.0
    backward = np.zeros_like(forward)
    black, white = np.zeros((h, w, 3), np.uint8), np.full((h, w, 3), 255, np.uint8)
    link = dev.propagation_link(t(forward), t(backward), 1, 0, 3)
    frame = dev.propagate([link], black, white, "cpu")[0]
    assert 16 * 16 / 48**2 <= link.unseen < 0.2  # the square, and its motion boundary
    assert frame[20:28, 20:28].max() == 0  # the nearer keyframe (frame 0, black) fills what neither sees
    assert np.abs(frame[:8, :8].astype(int) - 85).max() <= 1  # seen by both: 2/3 black + 1/3 white
    with pytest.raises(ValueError, match="between keyframes"):
        dev.propagation_link(t(forward), t(backward), 0, 0, 3)


def test_raft_without_weights_is_the_metrics_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="raft_small weights are not in the torch cache") as info:
        dev.Correspondence("raft-small")
    assert "\n" not in str(info.value)

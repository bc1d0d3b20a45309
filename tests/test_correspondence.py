"""Keyframe propagation, the frame memory (memory mode, K/V cache) and flow fusion, on tiny models."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from vidreal.cli import cli
from vidreal.config import load_config
from vidreal.errors import ConfigError
from vidreal.pipeline import Translator

PROMPT = "a person in the style of sks person"
KW = dict(num_inference_steps=3, guidance_scale=9.0, seed=3, progress=False, size=None)


def load(tiny_models):
    return Translator.from_pretrained(tiny_models["sd"], {"canny": tiny_models["canny"], "pose": tiny_models["pose"]},
                                      device="cpu")


@pytest.fixture(scope="module")
def moving():
    """A smooth texture sliding left by 1 px per frame: frame t is frame 0 shifted by t (a known translation)."""
    rng = np.random.default_rng(1)
    big = np.kron(rng.integers(0, 255, (8, 12, 3)), np.ones((4, 4, 1))).astype(np.float32)
    import cv2
    big = cv2.GaussianBlur(big, (0, 0), 1.5).clip(0, 255).astype(np.uint8)  # (32, 48, 3)
    frames = np.stack([big[:, t:t + 32] for t in range(5)])
    return frames, {"canny": frames, "pose": frames}


def diff(a, b) -> int:
    return int(np.abs(a.astype(int) - b).max())


def test_cross_frame_with_frame_memory_equals_carried_anchor(translator, clip):
    frames, conds = clip
    today = translator(frames, conds, PROMPT, chunk_size=2, kv_cache="off", **KW)  # anchor re-denoised per batch
    cached = translator(frames, conds, PROMPT, chunk_size=2, **KW)
    on_cpu = translator(frames, conds, PROMPT, chunk_size=2, kv_cache="cpu", **KW)
    assert diff(cached, today) <= 1 and diff(on_cpu, cached) == 0  # fp32 batch noise only; exact in float64 (below)


@pytest.mark.parametrize("mode", ["memory", "flow"])
def test_memory_and_flow_are_chunk_invariant(translator, clip, mode):
    frames, conds = clip
    whole = translator(frames, conds, PROMPT, chunk_size=6, consistency=mode, **KW)
    chunked = translator(frames, conds, PROMPT, chunk_size=2, consistency=mode, **KW)
    assert diff(whole, chunked) <= 1
    cross = translator(frames, conds, PROMPT, chunk_size=6, **KW)
    assert diff(whole[:1], cross[:1]) <= 1 and diff(whole[1:], cross[1:]) > 2  # same frame 0, other attention


@pytest.mark.slow
def test_chunk_invariance_is_exact_in_float64(tiny_models, clip):
    tr = load(tiny_models)
    tr.pipe.to(torch.float64)
    frames, conds = clip
    four = {k: v[:4] for k, v in conds.items()}
    assert diff(tr(frames[:4], four, PROMPT, chunk_size=2, **KW), tr(frames[:4], four, PROMPT, chunk_size=2, kv_cache="off",
                                                                      **KW)) == 0
    for mode in ("memory", "flow"):
        whole = tr(frames[:4], {k: v[:4] for k, v in conds.items()}, PROMPT, chunk_size=4, consistency=mode, **KW)
        chunked = tr(frames[:4], {k: v[:4] for k, v in conds.items()}, PROMPT, chunk_size=2, consistency=mode, **KW)
        assert diff(whole, chunked) == 0, mode


@pytest.mark.slow
def test_flow_band_decides_the_fusion(translator, clip):
    frames, conds = clip
    memory = translator(frames, conds, PROMPT, consistency="memory", **KW)
    no_band = translator(frames, conds, PROMPT, consistency="flow", flow_band=(0.0, 0.0), **KW)
    full = translator(frames, conds, PROMPT, consistency="flow", flow_band=(0.0, 1.0), **KW)
    assert diff(no_band, memory) == 0
    assert diff(full[1:], memory[1:]) > 2


@pytest.mark.parametrize("options", [dict(consistency="shared-noise"), dict(), dict(consistency="memory"),
                                     dict(consistency="flow"), dict(keyframe_every=3),
                                     dict(consistency="flow", keyframe_every=2)])
def test_static_clip_gives_identical_frames(translator, clip, options):
    frames, conds = clip
    still = np.repeat(frames[:1], 5, axis=0)
    out = translator(still, {k: np.repeat(v[:1], 5, axis=0) for k, v in conds.items()}, PROMPT, chunk_size=2,
                     **options, **KW)
    assert max(diff(out[i], out[0]) for i in range(len(out))) <= 1


def test_propagated_frame_is_the_shifted_keyframe(translator, moving):
    frames, conds = moving
    stats = {}
    out = translator(frames, conds, PROMPT, keyframe_every=4, stats=stats, **KW).astype(np.float32)
    assert stats["keyframes"] == [0, 4] and stats["propagated"] == 3
    # frame t(x) = frame 0(x + t) = frame 4(x + t - 4): the blend of both keyframes moved by that translation
    for t in (1, 2, 3):
        cols = slice(4 - t + 2, 32 - t - 2)  # visible in both keyframes, away from the borders
        expected = ((4 - t) * out[0][:, 6:30] + t * out[4][:, 2:26]) / 4  # both shifted to frame t's columns
        got = out[t][:, cols]
        source_err = np.abs(((4 - t) * frames[0][:, 6:30].astype(np.float32) + t * frames[4][:, 2:26]) / 4
                            - frames[t][:, cols]).mean()  # the same blend on the source: pure interpolation error
        assert expected.shape == got.shape
        err = np.abs(got - expected).mean()
        assert err <= max(3 * source_err, 2.0), (t, err, source_err)


def test_keyframe_every_one_equals_keyframe_free(translator, clip):
    frames, conds = clip
    assert diff(translator(frames, conds, PROMPT, keyframe_every=1, **KW), translator(frames, conds, PROMPT, **KW)) == 0


def test_last_frame_is_a_keyframe_and_keyframes_match_full_translation(translator, clip):
    frames, conds = clip
    stats = {}
    out = translator(frames, conds, PROMPT, keyframe_every=4, chunk_size=2, stats=stats, **KW)
    full = translator(frames, conds, PROMPT, **KW)
    assert stats["keyframes"] == [0, 4, 5] and stats["propagated"] == 3 and out.shape == frames.shape
    assert all(diff(out[i], full[i]) <= 1 for i in (0, 4, 5))  # cross-frame keyframes depend on the anchor only
    assert 0 <= stats["unseen_fraction"] <= 1


def test_clip_shorter_than_k(translator, clip):
    frames, conds = clip
    for n, keys in ((3, [0, 2]), (1, [0])):
        stats = {}
        out = translator(frames[:n], {k: v[:n] for k, v in conds.items()}, PROMPT, keyframe_every=8, stats=stats, **KW)
        assert out.shape == frames[:n].shape and stats["keyframes"] == keys


@pytest.mark.slow
def test_refine_repairs_propagated_frames_only(translator, clip):
    frames, conds = clip
    plain = translator(frames, conds, PROMPT, keyframe_every=4, **KW)
    refined = translator(frames, conds, PROMPT, keyframe_every=4, refine=0.7, chunk_size=2, **KW)
    assert all(diff(plain[i], refined[i]) <= 1 for i in (0, 4, 5))  # keyframes untouched (other batches: fp32 noise)
    assert diff(plain[1:4], refined[1:4]) > 2
    again = translator(frames, conds, PROMPT, keyframe_every=4, refine=0.7, chunk_size=6, **KW)
    assert diff(again, refined) <= 1  # refine batches do not change the output either


def test_two_interleaved_streams_equal_two_solo_runs(translator, clip):
    frames, conds = clip
    pieces = [[(frames[i:i + 1] if s == 0 else frames[::-1][i:i + 1].copy(),
                {k: (v if s == 0 else v[::-1].copy())[i:i + 1] for k, v in conds.items()}) for i in range(4)]
              for s in (0, 1)]
    solo = [np.concatenate(list(translator.stream(p, PROMPT, chunk_size=2, consistency="memory", **KW))) for p in pieces]
    before = dict(translator.pipe.unet.attn_processors)
    a = translator.stream(pieces[0], PROMPT, chunk_size=2, consistency="memory", **KW)
    b = translator.stream(pieces[1], PROMPT, chunk_size=2, consistency="memory", **KW)
    out = [[], []]
    for _ in range(2):
        out[0].append(next(a))
        assert translator.pipe.unet.attn_processors == before  # nothing left installed between batches
        out[1].append(next(b))
    assert diff(np.concatenate(out[0]), solo[0]) == 0 and diff(np.concatenate(out[1]), solo[1]) == 0
    abandoned = translator.stream(pieces[0], PROMPT, chunk_size=2, **KW)
    next(abandoned)
    del abandoned
    assert translator.pipe.unet.attn_processors == before


@pytest.mark.slow
def test_chunk_size_one_denoises_one_frame_per_batch(translator, clip):
    frames, conds = clip
    sizes = []
    hook = translator.pipe.unet.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    try:
        translator(frames[:4], {k: v[:4] for k, v in conds.items()}, PROMPT, chunk_size=1, **KW)
        cached, sizes[:] = sorted(set(sizes)), []
        translator(frames[:4], {k: v[:4] for k, v in conds.items()}, PROMPT, chunk_size=1, kv_cache="off", **KW)
    finally:
        hook.remove()
    assert cached == [2]  # one frame, times 2 for guidance: the anchor is never re-denoised
    assert sorted(set(sizes)) == [2, 4]  # carried anchor: batches of 1, 2, 2, 2 frames


@pytest.mark.parametrize("options, match", [
    (dict(keyframe_every=0), "keyframe_every"), (dict(keyframe_every=4, refine=1.5), "refine"),
    (dict(refine=0.3), "needs keyframe_every"), (dict(consistency="flow", flow_band=(0.5, 1.2)), "flow_band"),
    (dict(flow_band=(0.8, 0.2)), "flow_band"), (dict(consistency="memory", kv_cache="off"), "kv_cache"),
    (dict(kv_cache="gpu"), "kv_cache"), (dict(consistency="optical"), "consistency"),
])
def test_bad_values_are_one_line_errors(translator, clip, options, match):
    frames, conds = clip
    with pytest.raises(ConfigError, match=match) as info:
        translator(frames[:2], {k: v[:2] for k, v in conds.items()}, PROMPT, **{**KW, **options})
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=match):
        load_config(**{k: list(v) if isinstance(v, tuple) else v for k, v in options.items()})


def test_flow_mode_on_one_frame_is_cross_frame(translator, clip):
    frames, conds = clip
    one = {k: v[:1] for k, v in conds.items()}
    assert diff(translator(frames[:1], one, PROMPT, consistency="flow", **KW), translator(frames[:1], one, PROMPT, **KW)) <= 1


def test_config_keys_and_fingerprint():
    base = load_config()
    assert load_config(keyframe_every=4).fingerprint() != base.fingerprint()
    assert load_config(consistency="flow", flow_band=[0.1, 0.9]).fingerprint() != load_config(consistency="flow").fingerprint()
    assert load_config(kv_cache="cpu").fingerprint() == base.fingerprint()  # where the memory lives: same output
    preset = load_config("configs/rocog_long.yaml")
    assert (preset.consistency, preset.keyframe_every, preset.refine) == ("flow", 4, 0.3)


@pytest.mark.slow
def test_cli_translate_with_keyframes_and_flow(tiny_models, samples, tmp_path):
    out, side = tmp_path / "out.mp4", tmp_path / "side.mp4"
    args = ["translate", str(samples / "humanoid_walk_ground.mp4"), "-o", str(out), "--model", str(tiny_models["sd"]),
            "--controlnet", f"canny={tiny_models['canny']}", "--controlnet", f"pose={tiny_models['pose']}", "--size",
            "32", "--steps", "2", "--no-progress", "--consistency", "flow", "--keyframe-every", "8", "--refine", "0.5",
            "--flow-band", "0.1", "0.9", "--kv-cache", "cpu", "--preview", str(side)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    import vidreal
    assert len(vidreal.read_video(out).frames) == 48
    record = yaml.safe_load(out.with_name("out.mp4.vidreal.yaml").read_text())
    assert (record["consistency"], record["keyframe_every"], record["refine"], record["flow_band"], record["kv_cache"]) \
        == ("flow", 8, 0.5, [0.1, 0.9], "cpu")
    assert record["result"]["correspondence"]["keyframes"] == 7  # 0, 8, ..., 40 and the last (47)
    assert record["result"]["correspondence"]["propagated"] == 41
    bad = CliRunner().invoke(cli, args[:-9] + ["--keyframe-every", "0"])
    assert bad.exit_code == 2 and "keyframe_every must be a positive integer or null (or \"auto\"), got 0" in bad.output


def _bench():
    import sys
    from pathlib import Path
    tools = str(Path(__file__).resolve().parents[1] / "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    import bench_translate
    return bench_translate


def test_cpu_peak_counter_counts_tensors_and_arrays_exactly():
    def work():
        held = [torch.empty(1 << 20, dtype=torch.uint8) for _ in range(3)]  # 3 MiB live at once
        del held
        scratch = torch.empty(2 << 20, dtype=torch.uint8)  # then 2 MiB: the peak stays 3
        array = np.ones(1 << 20, dtype=np.uint8)  # 1 MiB of numpy
        return scratch, array

    tensors, arrays = _bench().cpu_peaks(work)
    assert tensors == 3 << 20
    assert 1 << 20 <= arrays < (1 << 20) + (64 << 10)


@pytest.mark.slow
@pytest.mark.parametrize("options, n", [(dict(consistency="cross-frame"), 4), (dict(consistency="memory"), 4),
                                        (dict(consistency="flow"), 4),
                                        (dict(consistency="cross-frame", keyframe_every=2, refine=0.3), 8)],
                         ids=["cross-frame", "memory", "flow", "keyframes"])
def test_tensor_memory_is_flat_in_clip_length(translator, clip, options, n):
    """A 4x longer clip holds no more tensor memory at its peak (the benchmark's counter, exact).
    ``n`` frames reach the steady state: batches of 2 frames, and with keyframes every 2 frames up to
    chunk x K = 4 frames held and refined (at 4 frames the first refine batch is still smaller)."""
    frames, conds = clip

    def peak(n):
        pieces = ((frames[:1], {k: v[:1] for k, v in conds.items()}) for _ in range(n))

        def run():
            for _ in translator.stream(pieces, PROMPT, chunk_size=2, **{**KW, "num_inference_steps": 2}, **options):
                pass
        return _bench().cpu_peaks(run)[0]

    short = peak(n)
    assert peak(4 * n) <= short


def test_frame_memory_size_is_steps_x_halves_x_attention_inputs(translator, clip):
    """The stated size of the frame memory: UNet calls x guidance halves x the self-attention inputs
    of one frame (tokens x channels, summed over layers), per cached frame; twice that in memory mode.
    The UNet calls are the scheduler's timesteps (PNDM, SD 1.5's own, runs one more than the steps)."""
    import copy
    frames, conds = clip
    inputs = []
    hooks = [m.register_forward_pre_hook(lambda m, a, kw: inputs.append(kw.get("hidden_states", a[0] if a else None)),
                                         with_kwargs=True)
             for name, m in translator.pipe.unet.named_modules() if name.endswith("attn1")]
    try:
        translator(frames[:1], {k: v[:1] for k, v in conds.items()}, PROMPT, **{**KW, "num_inference_steps": 1},
                   consistency="per-frame")
    finally:
        for h in hooks:
            h.remove()
    one_frame_one_step = sum(x[0].numel() * x.element_size() for x in inputs)  # batch 2 (guidance): one frame's half
    sizes = {}
    for mode, steps, cache in (("cross-frame", 2, "device"), ("cross-frame", 3, "device"), ("memory", 3, "device"),
                               ("cross-frame", 3, "off")):
        stats = {}
        translator(frames[:4], {k: v[:4] for k, v in conds.items()}, PROMPT, chunk_size=2, consistency=mode,
                   kv_cache=cache, stats=stats, **{**KW, "num_inference_steps": steps})
        sizes[mode, steps, cache] = stats["frame_memory_bytes"]

    def calls(steps):
        scheduler = copy.deepcopy(translator.pipe.scheduler)
        scheduler.set_timesteps(steps)
        return len(scheduler.timesteps)

    assert sizes["cross-frame", 3, "off"] == 0
    assert sizes["cross-frame", 2, "device"] == calls(2) * 2 * one_frame_one_step
    assert sizes["cross-frame", 3, "device"] == calls(3) * 2 * one_frame_one_step
    assert sizes["memory", 3, "device"] == 2 * sizes["cross-frame", 3, "device"]

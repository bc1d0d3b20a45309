"""ControlNet timing (control_start / control_end) and guess mode, against stock diffusers, on tiny models."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vidreal.config import load_config
from vidreal.errors import ConfigError

PROMPT = "a person in the style of sks person"
KW = dict(num_inference_steps=4, guidance_scale=9.0, seed=3, progress=False, size=None)


def stock(translator, conds, **options):
    images = [torch.from_numpy(np.ascontiguousarray(conds[k][:1])).permute(0, 3, 1, 2).float().contiguous() / 255
              for k in ("canny", "pose")]
    out = translator.pipe(PROMPT, negative_prompt="lowres", image=images, num_inference_steps=4, guidance_scale=9.0,
                          generator=torch.Generator("cpu").manual_seed(3), output_type="np", height=32, width=32,
                          **options).images
    return (out * 255).round().astype(np.uint8)


def test_default_schedule_equals_stock_diffusers_full_schedule(translator, clip):
    """Left at their defaults, the ControlNets act at every step: one frame equals stock diffusers
    told explicitly to run them from the first step to the last."""
    frames, conds = clip
    ours = translator(frames[:1], {k: v[:1] for k, v in conds.items()}, PROMPT, negative_prompt="lowres", **KW)
    full = stock(translator, conds, control_guidance_start=[0.0, 0.0], control_guidance_end=[1.0, 1.0])
    assert np.abs(ours.astype(int) - full).max() <= 1


@pytest.mark.parametrize("options, stock_options", [
    (dict(control_end=0.5), dict(control_guidance_end=0.5)),
    (dict(control_end=0.9), dict(control_guidance_end=0.9)),  # just under the default: the last of 4 steps goes
    (dict(control_start={"canny": 0.25}, control_end={"pose": 0.5}),
     dict(control_guidance_start=[0.25, 0.0], control_guidance_end=[1.0, 0.5])),
    (dict(guess_mode=True), dict(guess_mode=True)),
])
def test_one_frame_equals_stock_diffusers_with_the_same_timing(translator, clip, options, stock_options):
    frames, conds = clip
    ours = translator(frames[:1], {k: v[:1] for k, v in conds.items()}, PROMPT, negative_prompt="lowres", **options, **KW)
    expected = stock(translator, conds, **stock_options)
    assert np.abs(ours.astype(int) - expected).max() <= 1
    today = translator(frames[:1], {k: v[:1] for k, v in conds.items()}, PROMPT, negative_prompt="lowres", **KW)
    assert np.abs(ours.astype(int) - today).max() > 0  # the option has an effect


@pytest.mark.slow
def test_timing_changes_every_frame_and_stays_chunk_invariant(translator, clip):
    frames, conds = clip
    a = translator(frames, conds, PROMPT, negative_prompt="lowres", control_end=0.5, chunk_size=4, **KW)
    b = translator(frames, conds, PROMPT, negative_prompt="lowres", control_end=0.5, chunk_size=2, **KW)
    assert np.abs(a.astype(int) - b).max() <= 1


@pytest.mark.parametrize("options, message", [
    (dict(control_start=0.5, control_end=0.5), r"control_start \(0.5\) must be < control_end \(0.5\)"),
    (dict(control_start=0.8, control_end=0.2), r"control_start \(0.8\) must be < control_end \(0.2\)"),
    (dict(control_end=1.5), r"control_end \(1.5\), both in \[0, 1\]"),
    (dict(control_start={"depth": 0.1}), r"control_start names \['depth'\] not among controlnets"),
])
def test_bad_timing_is_one_line_config_error(options, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(**options)
    assert "\n" not in str(info.value)


def test_translator_rejects_bad_timing_before_denoising(translator, clip):
    frames, conds = clip
    with pytest.raises(ConfigError, match=r"must be < control_end"):
        translator(frames, conds, PROMPT, control_start={"pose": 0.9}, control_end={"pose": 0.1}, **KW)


def test_cli_flags_set_the_timing(tiny_models, samples, tmp_path):
    from click.testing import CliRunner

    from vidreal.cli import cli
    from vidreal.config import read_preset

    args = ["translate", str(samples / "objects" / "car" / "car_000.png"), "--model", str(tiny_models["sd"]),
            "--controlnet", f"canny={tiny_models['canny']}", "--size", "32", "--steps", "2", "--no-progress"]
    outs = {}
    for name, extra in {"default": [], "timed": ["--control-end", "0.5", "--guess-mode"]}.items():
        out = tmp_path / f"{name}.png"
        result = CliRunner().invoke(cli, args + ["-o", str(out), *extra])
        assert result.exit_code == 0, result.output
        outs[name] = out
    record = read_preset(outs["timed"].with_name("timed.png.vidreal.yaml"))
    assert record["control_end"] == 0.5 and record["guess_mode"] is True
    from vidreal.io import read_video
    assert np.abs(read_video(outs["timed"]).frames.astype(int) - read_video(outs["default"]).frames).max() > 0
    result = CliRunner().invoke(cli, args + ["-o", str(tmp_path / "bad.png"), "--control-start", "0.9",
                                             "--control-end", "0.1"])
    assert result.exit_code == 2 and "control_start (0.9) must be < control_end (0.1)" in result.output
    assert not (tmp_path / "bad.png").exists()

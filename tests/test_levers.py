"""Throughput choices (issue 12): several LoRAs with their scales, the few-step preset, exact-path
levers (fused QKV, channels_last) and the opt-in approximations (DeepCache, ToMe), on tiny models."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import vidreal
from vidreal.cli import cli
from vidreal.config import lora_list, parse_lora
from vidreal.errors import ConfigError, InputError, ModelError
from vidreal.pipeline import Translator
from vidreal.pipeline.approx import merge_tokens
from vidreal.pipeline.loading import load_pipeline

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a person in the style of sks person"
KW = dict(num_inference_steps=4, guidance_scale=9.0, seed=3, progress=False, size=None)


def diff(a, b) -> int:
    return int(np.abs(a.astype(int) - b).max())


@pytest.fixture(scope="module")
def nets(tiny_models):
    return {"canny": str(tiny_models["canny"]), "pose": str(tiny_models["pose"])}


@pytest.fixture(scope="module")
def translator(tiny_models, nets):
    return Translator.from_pretrained(tiny_models["sd"], nets, device="cpu")


@pytest.fixture(scope="module")
def clip():
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    conds = {k: rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8) for k in ("canny", "pose")}
    return frames, conds


@pytest.fixture(scope="module")
def loras(tiny_models, tmp_path_factory) -> list[Path]:
    """Two LoRA files for the tiny UNet (different random weights), saved as diffusers saves them."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    files = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_pretrained(tiny_models["sd"], subfolder="unet")
        unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                    target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        out = tmp_path_factory.mktemp(f"lora{seed}")
        StableDiffusionPipeline.save_lora_weights(out, unet_lora_layers=get_peft_model_state_dict(unet))
        files.append(out / "pytorch_lora_weights.safetensors")
    return files


# ----------------------------------------------------------------------------- several LoRAs
def test_lora_specs_parse():
    assert parse_lora("a.safetensors") == ("a.safetensors", 1.0)
    assert parse_lora("a.safetensors:0.5") == ("a.safetensors", 0.5)
    assert parse_lora("latent-consistency/lcm-lora-sdv1-5:-1", 0.3) == ("latent-consistency/lcm-lora-sdv1-5", -1.0)
    assert parse_lora({"path": "b", "scale": 2}) == ("b", 2.0)
    assert lora_list(None) == []
    assert lora_list("x", 0.7) == [("x", 0.7)]  # the old single key, at lora_scale
    assert lora_list(["x:0.2", {"path": "y"}], 0.7) == [("x", 0.2), ("y", 0.7)]
    for bad, match in [("x.safetensors:abc", "bad scale 'abc'"), ({"file": "x"}, "path: FILE"), (":0.5", "names no file"),
                       ({"path": "x", "scale": float("nan")}, "finite"), (3, "FILE")]:
        with pytest.raises(ConfigError, match=match):
            lora_list(bad)
    with pytest.raises(ConfigError, match="lora_scale"):
        vidreal.load_config(lora="x", lora_scale="big")


@pytest.mark.slow
def test_two_loras_each_at_its_scale(tiny_models, loras):
    a, b = (str(f) for f in loras)
    cn = {"canny": tiny_models["canny"]}
    g = torch.Generator().manual_seed(1)
    sample, text = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 7, 32, generator=g)

    def unet(lora=None):
        pipe = load_pipeline(tiny_models["sd"], cn, device="cpu", lora=lora)
        with torch.no_grad():
            return pipe.unet.state_dict(), pipe.unet(sample, 10, text).sample

    w0, base = unet()
    wa, one = unet(a)
    wb, _ = unet(f"{b}:0.5")
    wab, two = unet([a, {"path": b, "scale": 0.5}])
    _, zeros = unet([f"{a}:0", f"{b}:0"])
    _, double = unet([a, f"{b}:1.0"])
    assert torch.equal(zeros, base)  # scale 0 is no LoRA
    assert (one - base).abs().mean() > 1e-3  # a LoRA matters
    assert (two - one).abs().mean() > 1e-3  # two LoRAs differ from one
    assert (double - two).abs().mean() > 1e-3  # and the scale matters
    # fused one after the other, the LoRAs' scaled deltas add up in the weights
    assert max(((wab[k] - w0[k]) - (wa[k] - w0[k]) - (wb[k] - w0[k])).abs().max() for k in w0) < 1e-5


def test_bad_lora_files_fail_with_one_line(tiny_models, samples, tmp_path, loras):
    cn = {"canny": tiny_models["canny"]}
    with pytest.raises(InputError, match="LoRA not found"):
        load_pipeline(tiny_models["sd"], cn, device="cpu", lora=[str(loras[0]), str(tmp_path / "nope.safetensors")])
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(3)}, tmp_path / "not_lora.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file")
    for name in ("not_lora.safetensors", "garbage.safetensors"):
        with pytest.raises(ModelError, match="cannot load LoRA") as info:
            load_pipeline(tiny_models["sd"], cn, device="cpu", lora=str(tmp_path / name))
        assert "\n" not in str(info.value)
    out = tmp_path / "out.mp4"
    base = ["translate", str(samples / "humanoid_walk_ground.mp4"), "-o", str(out), "--model", str(tiny_models["sd"]),
            "--controlnet", f"canny={tiny_models['canny']}", "--steps", "1", "--size", "32", "--no-progress"]
    for flags, message, code in [
            (["--lora", str(loras[0]), "--lora", str(tmp_path / "nope.safetensors")], "LoRA not found", 1),
            (["--lora", f"{loras[0]}:strong"], "bad scale 'strong'", 2),  # a usage error: no file read
            (["--lora", str(tmp_path / "garbage.safetensors")], "cannot load LoRA", 1)]:
        res = CliRunner().invoke(cli, [*base, *flags])
        lines = [line for line in res.output.splitlines() if line.startswith("error:")]
        assert res.exit_code == code and len(lines) == 1 and message in lines[0], res.output
        assert "Traceback" not in res.output and not out.exists()


def test_cli_lora_flags_make_the_config():
    from vidreal.cli.options import _loras

    assert _loras(()) is None
    assert _loras(("a.safetensors",)) == "a.safetensors"  # one: the old single value
    assert _loras(("a.safetensors", "b:0.5")) == ["a.safetensors", "b:0.5"]
    config = vidreal.load_config(lora=["a.safetensors", "b:0.5"], lora_scale=0.8)
    assert lora_list(config.lora, config.lora_scale) == [("a.safetensors", 0.8), ("b", 0.5)]


def test_fast_preset_resolves_and_runs_at_four_lcm_steps(tiny_models, nets, loras, clip):
    fast = vidreal.load_config(ROOT / "configs" / "fast.yaml")
    assert fast.lora == "latent-consistency/lcm-lora-sdv1-5" and lora_list(fast.lora, fast.lora_scale) == [
        ("latent-consistency/lcm-lora-sdv1-5", 1.0)]
    assert fast.scheduler == "lcm" and 4 <= fast.steps <= 8 and 1.0 <= fast.guidance <= 2.0
    # the same preset with tiny models and a tiny LoRA in place of the hub's
    config = vidreal.load_config(ROOT / "configs" / "fast.yaml", model=str(tiny_models["sd"]), controlnets=nets,
                                 lora=f"{loras[0]}:0.8", device="cpu")
    from vidreal.translate import load_translator

    translator = load_translator(config)
    frames, conds = clip
    out = translator(frames, conds, config.prompt, num_inference_steps=config.steps, guidance_scale=config.guidance,
                     scheduler=config.scheduler, seed=0, progress=False, size=None)
    assert out.shape == frames.shape and out.dtype == np.uint8 and out.std() > 1


# ----------------------------------------------------------------------------- exact-path levers
@pytest.mark.slow
@pytest.mark.parametrize("levers", [["fused-qkv"], ["channels-last"], ["fused-qkv", "channels-last"]])
def test_levers_leave_outputs_equal(tiny_models, nets, translator, clip, levers):
    frames, conds = clip
    fast = Translator.from_pretrained(tiny_models["sd"], nets, device="cpu")
    fast.use_levers(levers)
    if "fused-qkv" in levers:
        assert all(m.fused_projections for m in fast.pipe.unet.modules() if hasattr(m, "fused_projections"))
    for mode in ("cross-frame", "memory", "per-frame"):
        exact = translator(frames, conds, PROMPT, consistency=mode, chunk_size=2, **KW)
        assert diff(exact, fast(frames, conds, PROMPT, consistency=mode, chunk_size=2, **KW)) <= 1, mode
    one = (frames[:1], {k: v[:1] for k, v in conds.items()})  # the stock pipeline path (its processors) as well
    assert diff(translator(*one, PROMPT, consistency="per-frame", **KW),
                fast(*one, PROMPT, consistency="per-frame", **KW)) <= 1


def test_levers_config_and_flag():
    from vidreal.cli.options import _levers

    assert vidreal.TranslateConfig().levers == []  # default: the plain path (fastest on CPU, measured)
    assert _levers("fused-qkv, channels-last") == ["fused-qkv", "channels-last"] and _levers("none") == []
    config = vidreal.load_config(levers=["fused-qkv"])
    assert config.fingerprint() == vidreal.TranslateConfig().fingerprint()  # exact: same outputs, same items
    for bad in (["fused_qkv"], "fused-qkv"):
        with pytest.raises(ConfigError, match="lever"):
            vidreal.load_config(levers=bad)


# ----------------------------------------------------------------------------- approximations
def test_merge_tokens_keeps_the_mean_and_drops_the_ratio():
    x = torch.randn(2, 64, 8, generator=torch.Generator().manual_seed(0))
    assert merge_tokens(x, 0.0, (8, 8)) is x
    merged = merge_tokens(x, 0.5, (8, 8))
    assert merged.shape == (2, 32, 8)
    assert merge_tokens(x, 0.75, (8, 8)).shape == (2, 16, 8)  # every 2x2 block down to its first token
    same = x[:, :1].expand(2, 64, 8)  # identical tokens merge into themselves
    assert torch.allclose(merge_tokens(same, 0.5, (8, 8)), same[:, :32])


@pytest.mark.slow
def test_approximations_off_by_default_and_when_zero(translator, clip):
    frames, conds = clip
    default = vidreal.TranslateConfig()
    assert default.deepcache_interval == 0 and default.tome_ratio == 0.0
    fingerprint = default.fingerprint()  # the exact path keeps its fingerprint (batch items stay done)
    assert vidreal.load_config(deepcache_interval=1).fingerprint() == fingerprint
    assert vidreal.load_config(deepcache_interval=2).fingerprint() != fingerprint
    assert vidreal.load_config(tome_ratio=0.3).fingerprint() != fingerprint
    exact = translator(frames, conds, PROMPT, **KW)
    assert np.array_equal(exact, translator(frames, conds, PROMPT, deepcache_interval=1, tome_ratio=0.0, **KW))
    assert np.array_equal(exact, translator(frames, conds, PROMPT, deepcache_interval=0, **KW))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["cross-frame", "memory", "per-frame"])
@pytest.mark.parametrize("option", [dict(deepcache_interval=2), dict(tome_ratio=0.5)])
def test_approximations_change_output_keep_shapes_and_chunks(translator, clip, mode, option):
    frames, conds = clip
    exact = translator(frames, conds, PROMPT, consistency=mode, **KW)
    approx = translator(frames, conds, PROMPT, consistency=mode, **option, **KW)
    assert approx.shape == exact.shape and approx.dtype == np.uint8 and approx.std() > 1
    assert diff(approx, exact) > 1  # an approximation: the output changes
    chunked = translator(frames, conds, PROMPT, consistency=mode, chunk_size=2, **option, **KW)
    assert diff(approx, chunked) <= 1  # deterministic, still independent of chunk_size


def test_bad_approximation_values_give_one_line(tiny_models, samples, tmp_path):
    for kwargs, match in [(dict(deepcache_interval=-1), "deepcache_interval"), (dict(deepcache_interval=2.5), "deepcache"),
                          (dict(tome_ratio=0.9), "tome_ratio"), (dict(tome_ratio=-0.1), "tome_ratio")]:
        with pytest.raises(ConfigError, match=match):
            vidreal.load_config(**kwargs)
    preset = tmp_path / "p.yaml"
    preset.write_text("tome_ratio: 2\n")
    out = tmp_path / "o.mp4"
    for flags in (["--config", str(preset)], ["--tome-ratio", "0.8"], ["--levers", "warp-drive"]):
        res = CliRunner().invoke(cli, ["translate", str(samples / "humanoid_walk_ground.mp4"), "-o", str(out), *flags])
        lines = [line for line in res.output.splitlines() if "rror" in line]
        assert res.exit_code in (1, 2) and len(lines) == 1 and "Traceback" not in res.output, res.output
        assert not out.exists()

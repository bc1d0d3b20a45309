"""Throughput choices: several LoRAs with their scales, the few-step preset, compile (padded static
batches, graph-safe frame memory), --vae (AutoencoderKL / AutoencoderTiny), the opt-in DeepCache,
and removed options (ToMe, levers) that name their replacement, on tiny models."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import vidreal
from vidreal.cli import cli
from vidreal.config import lora_list, parse_lora
from vidreal.errors import ConfigError, InputError, ModelError
from vidreal.pipeline import Translator
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
    assert fast.scheduler == "lcm" and 4 <= fast.steps <= 8 and fast.guidance == 1.0
    assert fast.vae == "madebyollin/taesd" and fast.compile == "auto"
    # the same preset with tiny models, a tiny LoRA and a tiny TAESD in place of the hub's
    config = vidreal.load_config(ROOT / "configs" / "fast.yaml", model=str(tiny_models["sd"]), controlnets=nets,
                                 lora=f"{loras[0]}:0.8", device="cpu", vae=str(tiny_models["taesd"]))
    from vidreal.translate import load_translator

    translator = load_translator(config)
    frames, conds = clip
    out = translator(frames, conds, config.prompt, num_inference_steps=config.steps, guidance_scale=config.guidance,
                     scheduler=config.scheduler, seed=0, progress=False, size=None)
    assert out.shape == frames.shape and out.dtype == np.uint8 and out.std() > 1


# ----------------------------------------------------------------------------- compile, padding
@pytest.mark.parametrize("mode", ["cross-frame", "memory", "flow", "per-frame"])
def test_padded_last_batch_gives_the_frames_of_an_unpadded_one(translator, mode):
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)  # batches of 2: the last one is short
    conds = {k: rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8) for k in ("canny", "pose")}
    kw = dict(KW, num_inference_steps=2, consistency=mode, chunk_size=2)
    plain = translator(frames, conds, PROMPT, **kw)
    translator.pad_batches = True  # as a compiled translator does
    try:
        padded = translator(frames, conds, PROMPT, **kw)
        assert translator._padded([1, 2], 4) == [1, 2, 2, 2]
    finally:
        translator.pad_batches = False
    assert padded.shape == plain.shape and diff(padded, plain) <= 1


def test_compile_on_through_the_config_leaves_the_hash_and_compiles_lazily(tiny_models):
    """compile: on (the real loading path) gives a compiled, padding translator; compiling changes speed, not
    results (test_compiled_equals_eager_...), so it does not change the config hash."""
    from vidreal.translate import load_translator

    config = vidreal.load_config(model=str(tiny_models["sd"]), controlnets={"canny": str(tiny_models["canny"])},
                                 device="cpu", compile=True)
    assert config.fingerprint() == vidreal.load_config(**{**config.to_dict(), "compile": False}).fingerprint()
    tr = load_translator(config)
    assert tr.compiled and tr.pad_batches  # torch.compile wraps now, compiles on the first call


def test_compile_auto_stays_off_on_cpu(tiny_models, nets, clip):
    tr = Translator.from_pretrained(tiny_models["sd"], nets, device="cpu")
    tr.use_compile("auto", long_runs=True)
    frames, conds = clip
    tr(frames[:2], {k: v[:2] for k, v in conds.items()}, PROMPT, **dict(KW, num_inference_steps=1))
    assert not tr.compiled and not tr.pad_batches
    with pytest.raises(ConfigError, match="compile must be one of auto, on, off"):
        tr.use_compile("sometimes")
    assert vidreal.load_config(compile=True).compile == "on"  # records before auto wrote booleans
    assert vidreal.load_config().compile == "auto"


@pytest.mark.slow
def test_compiled_equals_eager_is_chunk_invariant_and_pads_without_recompiling(tiny_models, nets, translator):
    rng = np.random.default_rng(6)
    frames = rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    conds = {k: rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8) for k in ("canny", "pose")}
    kw = dict(KW, num_inference_steps=2)
    compiled = Translator.from_pretrained(tiny_models["sd"], nets, device="cpu")
    compiled.use_compile("on")  # inductor's default mode on the CPU (CUDA graphs need CUDA)
    assert compiled.compiled and compiled.pad_batches
    for mode in ("cross-frame", "memory"):
        eager = translator(frames, conds, PROMPT, consistency=mode, chunk_size=2, **kw)
        pieces = [(frames[i:i + 2], {k: v[i:i + 2] for k, v in conds.items()}) for i in range(0, 5, 2)]
        out, graphs = [], []
        for batch in compiled.stream(pieces, PROMPT, consistency=mode, chunk_size=2, **kw):
            out.append(batch)
            graphs.append(Translator.compilations())
        out = np.concatenate(out)
        assert diff(out, eager) <= 2, mode
        assert graphs[2] == graphs[1], mode  # the short last batch is padded: no recompilation
        whole = compiled(frames, conds, PROMPT, consistency=mode, chunk_size=3, **kw)
        assert diff(whole, out) <= 2, mode  # chunk invariance holds compiled


@pytest.mark.slow
def test_bench_table_prints_one_row_per_setting(tiny_models):
    """tools/bench_translate.py --table at a tiny size: one markdown table, its five rows and columns."""
    import subprocess
    import sys

    cmd = [sys.executable, str(ROOT / "tools" / "bench_translate.py"), "--table", "--model", str(tiny_models["sd"]),
           "--controlnet", f"canny={tiny_models['canny']}", "--controlnet", f"pose={tiny_models['pose']}",
           "--taesd", str(tiny_models["taesd"]), "--size", "32", "--steps", "2", "--frames", "3", "--chunk-size", "2",
           "--repeats", "1", "--device", "cpu", "--compile-backend", "aot_eager"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in res.stdout.splitlines() if line.startswith("|")]
    assert [c.strip() for c in rows[0]] == ["vidreal", "frames/s", "vs stock batched", "max diff vs eager (levels)",
                                            "recompilations after chunk 1"]
    table = {r[0].strip(): [c.strip() for c in r[1:]] for r in rows[2:]}
    assert list(table) == ["cross-frame eager", "cross-frame compiled (CUDA graphs)", "compiled + TAESD",
                           "cross-frame K=4", "LCM 4 steps, guidance 1", "LCM + K=4", "LCM + compile + TAESD",
                           "LCM + compile + TAESD + K=4"]
    for name, (fps, ratio, difference, recompiled) in table.items():
        assert float(fps) > 0 and ratio.endswith("x")
        compiled = "compile" in name
        assert recompiled == ("0" if compiled else "-"), (name, recompiled)  # padding: the short last chunk too
    assert int(table["cross-frame compiled (CUDA graphs)"][2]) <= 2  # compiled = eager within rounding
    assert int(table["compiled + TAESD"][2]) > 2  # TAESD is an approximation


# ----------------------------------------------------------------------------- --vae
@pytest.mark.parametrize("which", ["taesd", "vae-kl", "taesd-file"])
def test_vae_tiny_or_kl_loads_and_translates(tiny_models, nets, translator, clip, which):
    folder = tiny_models["taesd" if which.startswith("taesd") else which]
    vae = folder / "diffusion_pytorch_model.safetensors" if which.endswith("file") else folder
    tr = Translator.from_pretrained(tiny_models["sd"], nets, device="cpu", vae=str(vae))
    assert type(tr.pipe.vae).__name__ == ("AutoencoderTiny" if which.startswith("taesd") else "AutoencoderKL")
    weights = load_file(folder / "diffusion_pytorch_model.safetensors")  # the VAE given, not the model's
    loaded = tr.pipe.vae.state_dict()
    assert loaded.keys() == weights.keys() and all(torch.equal(loaded[k], weights[k]) for k in loaded)
    frames, conds = clip
    kw = dict(KW, num_inference_steps=2)
    out = tr(frames, conds, PROMPT, **kw)
    assert out.shape == frames.shape and out.dtype == np.uint8 and out.std() > 1
    assert diff(out, translator(frames, conds, PROMPT, **kw)) > 1  # another VAE decodes other frames
    refined = tr(frames, conds, PROMPT, keyframe_every=2, refine=0.5, **kw)  # the encoder too (img2img)
    assert refined.shape == frames.shape


def test_vae_in_the_record_and_bad_vaes_fail_with_one_line(tiny_models, samples, tmp_path, empty_hub):
    out = tmp_path / "out.mp4"
    base = ["translate", str(samples / "humanoid_walk_ground.mp4"), "-o", str(out), "--model", str(tiny_models["sd"]),
            "--controlnet", f"canny={tiny_models['canny']}", "--steps", "1", "--size", "32", "--no-progress",
            "--max-frames", "2"]
    res = CliRunner().invoke(cli, [*base, "--vae", str(tiny_models["taesd"])])
    assert res.exit_code == 0, res.output
    record = (tmp_path / "out.mp4.vidreal.yaml").read_text()
    assert f"vae: {tiny_models['taesd']}" in record and "compiled: false" in record
    out.unlink()
    cases = [(["--vae", str(tiny_models["canny"])], "expected one of AutoencoderKL, AutoencoderTiny"),
             (["--vae", str(tmp_path / "nope.safetensors")], "VAE not found"),
             # offline and not cached: the same one-line listing of every missing model
             (["--vae", "madebyollin/taesd", "--controlnet", "pose=lllyasviel/control_v11p_sd15_openpose"],
              "cannot load 2 models")]
    for flags, message in cases:
        res = CliRunner().invoke(cli, [*base, *flags])
        lines = [line for line in res.output.splitlines() if line.startswith("error:")]
        assert res.exit_code in (1, 2) and len(lines) == 1 and message in lines[0], res.output
        assert "Traceback" not in res.output and not out.exists()
    assert "madebyollin/taesd" in res.output  # named among the missing models


# ----------------------------------------------------------------------------- removed options
def test_removed_options_name_their_replacement(samples, tmp_path):
    for key, value, replacement in [("tome_ratio", 0.5, "use deepcache_interval or compile"),
                                    ("levers", ["fused-qkv"], "applied by compile")]:
        with pytest.raises(ConfigError, match=f"{key} was removed.*{replacement}"):
            vidreal.load_config(**{key: value})
        preset = tmp_path / f"{key}.yaml"
        preset.write_text(f"{key}: {value}\n")
        with pytest.raises(ConfigError, match=replacement):
            vidreal.load_config(preset)
    out = tmp_path / "o.mp4"
    for flags, replacement in [(["--tome-ratio", "0.5"], "--tome-ratio was removed"),
                               (["--levers", "fused-qkv"], "--levers was removed: fused-qkv and channels-last are "
                                                           "applied by compile")]:
        res = CliRunner().invoke(cli, ["translate", str(samples / "humanoid_walk_ground.mp4"), "-o", str(out), *flags])
        lines = [line for line in res.output.splitlines() if line.startswith("error:")]
        assert res.exit_code in (1, 2) and len(lines) == 1 and replacement in lines[0], res.output
        assert "Traceback" not in res.output and not out.exists()


# ----------------------------------------------------------------------------- approximations
@pytest.mark.slow
def test_approximations_off_by_default_and_when_zero(translator, clip):
    frames, conds = clip
    default = vidreal.TranslateConfig()
    assert default.deepcache_interval == 0
    fingerprint = default.fingerprint()  # the exact path keeps its fingerprint (batch items stay done)
    assert vidreal.load_config(deepcache_interval=1).fingerprint() == fingerprint
    assert vidreal.load_config(deepcache_interval=2).fingerprint() != fingerprint
    exact = translator(frames, conds, PROMPT, **KW)
    assert np.array_equal(exact, translator(frames, conds, PROMPT, deepcache_interval=1, **KW))
    assert np.array_equal(exact, translator(frames, conds, PROMPT, deepcache_interval=0, **KW))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["cross-frame", "memory", "per-frame"])
@pytest.mark.parametrize("option", [dict(deepcache_interval=2)])
def test_approximations_change_output_keep_shapes_and_chunks(translator, clip, mode, option):
    frames, conds = clip
    exact = translator(frames, conds, PROMPT, consistency=mode, **KW)
    approx = translator(frames, conds, PROMPT, consistency=mode, **option, **KW)
    assert approx.shape == exact.shape and approx.dtype == np.uint8 and approx.std() > 1
    assert diff(approx, exact) > 1  # an approximation: the output changes
    chunked = translator(frames, conds, PROMPT, consistency=mode, chunk_size=2, **option, **KW)
    assert diff(approx, chunked) <= 1  # deterministic, still independent of chunk_size


def test_bad_approximation_values_give_one_line(samples, tmp_path):
    for kwargs, match in [(dict(deepcache_interval=-1), "deepcache_interval"), (dict(deepcache_interval=2.5), "deepcache")]:
        with pytest.raises(ConfigError, match=match):
            vidreal.load_config(**kwargs)
    preset = tmp_path / "p.yaml"
    preset.write_text("deepcache_interval: -2\n")
    out = tmp_path / "o.mp4"
    for flags in (["--config", str(preset)], ["--deepcache-interval", "-1"]):
        res = CliRunner().invoke(cli, ["translate", str(samples / "humanoid_walk_ground.mp4"), "-o", str(out), *flags])
        lines = [line for line in res.output.splitlines() if "rror" in line]
        assert res.exit_code in (1, 2) and len(lines) == 1 and "Traceback" not in res.output, res.output
        assert not out.exists()

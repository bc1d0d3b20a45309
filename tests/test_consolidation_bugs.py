"""Bugs found in the consolidation review (issue 10), each pinned by a test that failed before its fix."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from vidreal.cli import cli
from vidreal.config import DEFAULT_CONTROLNETS, DEFAULT_MODEL, load_config
from vidreal.errors import ConfigError, ModelError
from vidreal.pipeline import Translator
from vidreal.pipeline.loading import load_pipeline

PROMPT = "a person in the style of sks person"


@pytest.fixture(scope="module")
def translator(tiny_models):
    return Translator.from_pretrained(tiny_models["sd"], {"canny": tiny_models["canny"], "pose": tiny_models["pose"]},
                                      device="cpu", dtype="fp32")


def _one_line_error(res, *phrases, exit_code=1):
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == exit_code, res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


# ----------------------------------------------------------------------------- contiguous control images
def test_one_frame_equals_stock_diffusers_exactly(translator):
    """fp32, same components and inputs: the Translator's one-frame output IS the stock pipeline's
    (max difference 0; strided control tensors made it differ by 1-4 levels)."""
    rng = np.random.default_rng(2)  # at 32 px the strided tensors happened to round alike; at 64 px they did not
    frame = rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)
    conds = {k: rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8) for k in ("canny", "pose")}
    ours = translator(frame, conds, PROMPT, negative_prompt="lowres", num_inference_steps=4, guidance_scale=9.0, seed=3,
                      progress=False, size=None)
    images = [torch.from_numpy(conds[k]).permute(0, 3, 1, 2).contiguous().float() / 255 for k in ("canny", "pose")]
    stock = translator.pipe(PROMPT, negative_prompt="lowres", image=images, num_inference_steps=4, guidance_scale=9.0,
                            generator=torch.Generator("cpu").manual_seed(3), output_type="np", height=64,
                            width=64).images
    stock = (stock * 255).round().astype(np.uint8)
    assert ours.shape == stock.shape == (1, 64, 64, 3)
    assert np.abs(ours.astype(int) - stock).max() == 0


# ----------------------------------------------------------------------------- non-finite numbers
@pytest.mark.parametrize("flag", [["--guidance", "nan"], ["--guidance", "inf"], ["--lora-scale", "-inf"],
                                  ["--controlnet-scale", "canny=nan"]])
def test_non_finite_flags_refused_before_any_model_loads(samples, tmp_path, flag):
    out = tmp_path / "out.mp4"
    # the model does not exist: an error about the number shows it was checked first
    res = CliRunner().invoke(cli, ["translate", str(samples / "humanoid_walk_ground.mp4"), "-o", str(out),
                                   "--model", str(tmp_path / "no-such-model"), "--no-progress", *flag])
    _one_line_error(res, "must be a finite number", exit_code=2)
    assert list(tmp_path.iterdir()) == []


def test_non_finite_config_keys_and_api_values_refused(tmp_path, translator):
    preset = tmp_path / "p.yaml"
    preset.write_text("guidance: .nan\n")
    with pytest.raises(ConfigError, match="guidance must be a finite number, got nan"):
        load_config(preset)
    with pytest.raises(ConfigError, match="controlnet_scale.pose must be a finite number"):
        load_config(controlnet_scale={"pose": math.inf})
    frames = np.zeros((1, 32, 32, 3), np.uint8)
    conds = {"canny": frames, "pose": frames}
    for kwargs in ({"guidance_scale": math.nan}, {"guidance_scale": math.inf}, {"controlnet_scale": math.nan},
                   {"controlnet_scale": {"canny": math.inf}}):
        with pytest.raises(ConfigError, match="must be a finite number"):
            translator(frames, conds, PROMPT, num_inference_steps=2, progress=False, **kwargs)


def test_non_finite_training_numbers_refused_before_training(tmp_path):
    from vidreal.personalize import train_dreambooth, train_textual_inversion

    with pytest.raises(ConfigError, match="lr must be a finite number, got inf"):
        train_dreambooth(tmp_path / "images", tmp_path / "out", "nobody/model", lr=math.inf)
    with pytest.raises(ConfigError, match="prior_loss_weight must be a finite number, got nan"):
        train_dreambooth(tmp_path / "images", tmp_path / "out", "nobody/model", prior_loss_weight=math.nan)
    with pytest.raises(ConfigError, match="lr must be a finite number"):
        train_textual_inversion(tmp_path / "images", tmp_path / "out", "nobody/model", lr=math.inf)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- A1111 embedding names
def test_a1111_embedding_is_triggered_by_its_file_name(tiny_models, tmp_path):
    width = 32  # the tiny text encoder's hidden size
    vectors = torch.randn((2, width), generator=torch.Generator().manual_seed(0))
    # A1111 .pt files carry an internal name that is often stale: users type the file's name
    torch.save({"string_to_param": {"*": vectors[:1]}, "name": "internalname", "step": 9}, tmp_path / "myneg.pt")
    torch.save({"string_to_param": {"*": vectors[1:]}, "name": "internalname2"}, tmp_path / "other.pt")
    pipe = load_pipeline(tiny_models["sd"], {"canny": tiny_models["canny"]}, device="cpu", allow_pickle=True,
                         embeddings=[tmp_path / "myneg.pt", f"{tmp_path / 'other.pt'}:<override>"])
    vocab = pipe.tokenizer.get_vocab()
    assert "myneg" in vocab and "<override>" in vocab
    assert "internalname" not in vocab and "internalname2" not in vocab
    table = pipe.text_encoder.get_input_embeddings().weight
    assert torch.equal(table[vocab["myneg"]], vectors[0]) and torch.equal(table[vocab["<override>"]], vectors[1])


# ----------------------------------------------------------------------------- repeated --controlnet
@pytest.mark.parametrize("option", ["--controlnet", "--controlnet-scale"])
def test_repeated_controlnet_kind_is_refused(tiny_models, samples, tmp_path, option):
    first, second = ((f"canny={tiny_models['canny']}", f"canny={tiny_models['pose']}") if option == "--controlnet"
                     else ("canny=0.5", "canny=2"))
    res = CliRunner().invoke(cli, ["translate", str(samples / "humanoid_walk_ground.mp4"), "-o",
                                   str(tmp_path / "out.mp4"), "--model", str(tiny_models["sd"]), "--size", "32",
                                   "--steps", "1", "--no-progress", option, first, option, second])
    _one_line_error(res, f"{option} canny=... is given twice", exit_code=2)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- offline: every missing model, at once
def _assert_lists_every_default_model(message: str) -> None:
    """A short first line, then `vidreal download` and one indented command per missing model, each
    fetching into a folder (--local-dir) and naming the flag that then points at it."""
    first, *commands = message.splitlines()
    assert first.startswith("cannot load 3 models: not in the Hugging Face cache") and len(first) < 200, first
    assert commands[0].startswith("  vidreal download") and len(commands) == 4, message
    for repo, flag in [(DEFAULT_MODEL, "--model "), *((cn, f"--controlnet {kind}=") for kind, cn in DEFAULT_CONTROLNETS.items())]:
        line = next(line for line in commands if line.startswith(f"  hf download {repo} "))
        local = f"weights/{repo.split('/')[-1]}"
        assert f"--local-dir {local}  # then {flag}{local}" in line, line
        # the safety checker is excluded from the SD download only
        assert ("--exclude 'safety_checker/*'" in line) == (repo == DEFAULT_MODEL)


def test_offline_lists_every_missing_model_with_its_command(empty_hub, samples, tmp_path):
    with pytest.raises(ModelError) as info:
        load_pipeline(device="cpu")  # the default hub ids
    _assert_lists_every_default_model(str(info.value))
    assert "cannot load 3 models" in str(info.value) and str(empty_hub) in str(info.value)
    # the main job, as README gives it: one line, nothing written
    res = CliRunner().invoke(cli, ["translate", str(samples / "humanoid_punch_ground.mp4"), "-o",
                                   str(tmp_path / "out" / "punch.mp4"), "--no-progress"])
    assert res.exit_code == 1 and res.output.startswith("error: cannot load 3 models"), res.output
    _assert_lists_every_default_model(res.output.strip()[len("error: "):])
    assert not (tmp_path / "out" / "punch.mp4").exists()


def test_unreachable_hub_fails_at_once_listing_every_missing_model(empty_hub, monkeypatch):
    from huggingface_hub import constants

    # not offline by switch, but no hub answers (a closed local port): no retries, one error
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ModelError) as info:
        load_pipeline(device="cpu")
    _assert_lists_every_default_model(str(info.value))
    assert "unreachable (http://127.0.0.1:9)" in str(info.value)


# ----------------------------------------------------------------------------- OpenPose annotator pickles
def test_openpose_annotator_pickles_need_allow_pickle(tmp_path, samples):
    from vidreal.conditions import make_detector
    from vidreal.conditions.openpose import WEIGHT_FILES

    for name in WEIGHT_FILES:  # real pickles (torch.save), not OpenPose weights
        torch.save({"not_a_layer": torch.zeros(1)}, tmp_path / name)
    with pytest.raises(ModelError, match="pass --allow-pickle if you trust them") as info:
        make_detector("openpose", model=tmp_path).load()
    assert "torch.load" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ModelError, match="cannot load OpenPose weights"):  # consent given: the files were read
        make_detector("openpose", model=tmp_path, allow_pickle=True).load()

    image = samples / "objects"
    first = sorted(p for p in image.rglob("*") if p.suffix in (".png", ".jpg"))[0]
    args = ["conditions", str(first), "-o", str(tmp_path / "out.png"), "--kind", "openpose", "--no-progress"]
    res = CliRunner().invoke(cli, args)
    _one_line_error(res, "--allow-pickle")
    res = CliRunner().invoke(cli, [*args, "--allow-pickle"])
    assert "--allow-pickle" not in res.output and "lllyasviel/Annotators" in res.output  # next: the weights


@pytest.mark.parametrize("verb,flag,value,rest", [
    (["classify", "train"], "--lr", "nan", ["--train", "nowhere", "--val", "nowhere", "-o", "run"]),
    (["classify", "train"], "--backbone-lr", "inf", ["--train", "nowhere", "--val", "nowhere", "-o", "run"]),
    (["batch"], "--gpus-per-worker", "inf", ["nowhere", "out"]),
])
def test_non_finite_flags_of_other_verbs_refused_first(tmp_path, monkeypatch, verb, flag, value, rest):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, [*verb, flag, value, *rest])
    _one_line_error(res, f"{flag} must be a finite number, got {value}", exit_code=2)
    assert list(tmp_path.iterdir()) == []
    res = CliRunner().invoke(cli, [*verb, flag, "fast", *rest])
    assert res.exit_code == 2  # not a number at all: still Click's usage error

"""The options of a run (vidreal/options.py): checked once, by one function per rule, for the config
and the Translator API alike; the config hash counts only the options in effect; scheduler aliases."""
from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from vidreal import checks, samplers
from vidreal.cli import cli
from vidreal.config import load_config
from vidreal.errors import ConfigError
from vidreal.options import TranslateOptions

PROMPT = "a person in the style of sks person"


# ----------------------------------------------------------------------------- the config hash
def test_default_config_keeps_the_hash_old_manifests_hold():
    assert load_config().fingerprint() == "a82a4bfbe9d29071"  # the hash of the default config before options.py


@pytest.mark.parametrize("base, change", [
    (dict(), dict(flow_band=[0.1, 0.9])),  # fuses only in flow mode
    (dict(guidance=1.0), dict(guess_mode=True)),  # guess mode only under guidance
    (dict(guidance=1.0), dict(negative_prompt="blurry")),  # no unconditional half without guidance
    (dict(), dict(keyframe_every=1)),  # every frame denoised: as no keyframes
    (dict(), dict(keyframe_max_gap=4, keyframe_threshold=0.5)),  # only for keyframe_every auto
    (dict(), dict(flow_method="farneback", flow_size=128)),  # no flow estimated without keyframes or flow mode
    (dict(), dict(control_start={"canny": 0.0, "pose": 0.0}, control_end={"canny": 1.0, "pose": 1.0})),
    (dict(), dict(controlnet_scale={"canny": 1.0, "pose": 1.0})),  # the default scale
    (dict(codec="ffv1"), dict(crf=30)),  # ffv1 takes no crf
    (dict(), dict(kv_cache="cpu", deepcache_interval=1)),  # where memory lives; approximations off
])
def test_options_with_no_effect_leave_the_hash_unchanged(base, change):
    assert load_config(**base, **change).fingerprint() == load_config(**base).fingerprint()


@pytest.mark.parametrize("base, change", [
    (dict(consistency="flow"), dict(flow_band=[0.1, 0.9])),
    (dict(), dict(guess_mode=True)),
    (dict(), dict(negative_prompt="blurry")),
    (dict(keyframe_every=4), dict(flow_method="farneback")),
    (dict(consistency="flow"), dict(flow_size=128)),
    (dict(keyframe_every="auto"), dict(keyframe_max_gap=4)),
    (dict(), dict(control_start={"pose": 0.2})),
    (dict(), dict(control_start=0.2)),
    (dict(), dict(crf=30)),
    (dict(scheduler="ddim"), dict(eta=0.5)),
])
def test_options_in_effect_change_the_hash(base, change):
    assert load_config(**base, **change).fingerprint() != load_config(**base).fingerprint()


def test_equal_settings_hash_alike():
    assert load_config(control_start={"canny": 0.2, "pose": 0.2}).fingerprint() == \
        load_config(control_start=0.2).fingerprint()
    assert load_config(guidance=9).fingerprint() == load_config(guidance=9.0).fingerprint()
    alias = load_config(scheduler="DPMSolverMultistepScheduler")
    assert alias.scheduler == "dpm++2m" and alias.fingerprint() == load_config(scheduler="dpm++2m").fingerprint()


def test_in_effect_names_only_what_changes_the_output():
    plain = TranslateOptions(guidance=1.0, guess_mode=True, flow_band=(0.1, 0.9), eta=None, kv_cache="cpu")
    assert {"guess_mode", "negative_prompt", "flow_band", "kv_cache", "keyframe_every", "refine", "flow_method",
            "eta", "deepcache_interval"}.isdisjoint(plain.in_effect())
    keyed = TranslateOptions(keyframe_every=4, refine=0.3, consistency="flow", scheduler="ddim", eta=0.2)
    assert {"keyframe_every", "refine", "flow_band", "flow_method", "flow_size", "eta", "negative_prompt",
            "guess_mode"} <= set(keyed.in_effect())


# ----------------------------------------------------------------------------- one check per rule
@pytest.mark.parametrize("value", [True, False, 0, -1, 2.0, "3", None])
def test_positive_integer_refuses_bools_and_the_rest(value):
    with pytest.raises(ConfigError, match=r"^n must be a positive integer, got"):
        checks.positive_int("n", value)
    assert checks.positive_int("n", np.int64(3)) == 3


def test_one_of_says_did_you_mean():
    with pytest.raises(ConfigError, match=r"kv_cache must be one of device, cpu, off, got 'cpu2'; did you mean 'cpu'\?"):
        TranslateOptions(kv_cache="cpu2")


@pytest.mark.parametrize("options, message", [
    (dict(chunk_size=True), "chunk_size must be a positive integer, got True"),
    (dict(steps=100000), r"steps must be an integer in 1..1000, got 100000"),
    (dict(negative_prompt=["blurry", "lowres"]), "negative_prompt must be a string or null"),
    (dict(keyframe_every=True), "keyframe_every must be a positive integer or null"),
    (dict(keyframe_every="sometimes"), 'keyframe_every must be a positive integer or null \\(or "auto"\\)'),
    (dict(flow_method="raft-large"), "flow_method must be one of .*; did you mean 'raft-small'"),
    (dict(flow_size=0), "flow_size must be an integer >= 16 or null"),
    (dict(keyframe_threshold=2), r"keyframe_threshold must be a number in \[0, 1\]"),
    (dict(guess_mode="yes"), "guess_mode must be true or false"),
    (dict(scheduler="euler", eta=0.5), "eta applies to the ddim, tcd schedulers, not euler"),
    (dict(seed=1.5), "seed must be an integer >= 0"),
])
def test_bad_options_are_one_config_error_for_config_and_api_alike(options, message):
    with pytest.raises(ConfigError, match=message):
        load_config(**options)
    with pytest.raises(ConfigError, match=message):
        TranslateOptions(**options)


@pytest.mark.parametrize("options, message", [
    (dict(controlnet_scale={"depth": 0.5}), r"controlnet_scale names \['depth'\] not among controlnets"),
    (dict(control_start={"depth": 0.1}), r"control_start names \['depth'\] not among controlnets"),
    (dict(control_start={"pose": 0.9}, control_end={"pose": 0.1}), r"control_start \(0.9\) must be < control_end"),
])
def test_controlnet_names_and_timing_checked_by_one_function(translator, options, message):
    """The config and the Translator refuse them with the same ConfigError (one was a ValueError)."""
    with pytest.raises(ConfigError, match=message):
        load_config(**options)
    frame = np.zeros((1, 32, 32, 3), np.uint8)
    with pytest.raises(ConfigError, match=message):
        translator(frame, {"canny": frame, "pose": frame}, PROMPT, num_inference_steps=1, progress=False, **options)


def test_overrides_use_designs_names_and_unknown_ones_are_refused():
    options = TranslateOptions().replace(num_inference_steps=4, guidance_scale=2.0)
    assert (options.steps, options.guidance) == (4, 2.0)
    with pytest.raises(ConfigError, match="unknown translation option 'num_steps'; did you mean"):
        TranslateOptions().replace(num_steps=4)


def test_options_passed_whole_equal_the_same_overrides(translator):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    conds = {k: rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8) for k in ("canny", "pose")}
    options = TranslateOptions(steps=2, guidance=5.0, seed=4, chunk_size=2, negative_prompt="lowres")
    whole = translator(frames, conds, PROMPT, options, progress=False)
    named = translator(frames, conds, PROMPT, num_inference_steps=2, guidance_scale=5.0, seed=4, chunk_size=2,
                       negative_prompt="lowres", progress=False)
    assert np.array_equal(whole, named)
    streamed = np.concatenate(list(translator.stream([(frames, conds)], PROMPT, options, progress=False)))
    assert np.array_equal(whole, streamed)
    assert not np.array_equal(whole, translator(frames, conds, PROMPT, options.replace(seed=5), progress=False))


# ----------------------------------------------------------------------------- scheduler names users bring
@pytest.mark.parametrize("name, ours", [
    ("DPMSolverMultistepScheduler", "dpm++2m"), ("EulerAncestralDiscreteScheduler", "euler-a"),
    ("EulerDiscreteScheduler", "euler"), ("DDIMScheduler", "ddim"), ("UniPCMultistepScheduler", "unipc"),
    ("LCMScheduler", "lcm"), ("dpmpp_2m", "dpm++2m"), ("euler_ancestral", "euler-a"), ("euler", "euler"),
    ("ddim", "ddim"), ("uni_pc", "unipc"), ("lcm", "lcm"), ("dpmpp_2m_karras", "dpm++2m-karras"),
    ("dpmpp_2m_sde", "dpm++sde"), ("Euler a", "euler-a"), ("DPM++ 2M Karras", "dpm++2m-karras"),
])
def test_scheduler_aliases_resolve_to_vidreals_names(name, ours):
    assert samplers.resolve(name) == ours
    assert load_config(scheduler=name).scheduler == ours


def test_scheduler_alias_builds_the_same_diffusers_class():
    from diffusers import PNDMScheduler

    from vidreal.pipeline.schedulers import make_scheduler

    model = PNDMScheduler()
    for alias, name in samplers.ALIASES.items():
        built, expected = make_scheduler(alias, model), make_scheduler(name, model)
        assert type(built) is type(expected) and dict(built.config) == dict(expected.config), alias


@pytest.mark.parametrize("name, close", [("dpmpp_3m", "dpmpp_2m"), ("euler_a", "euler-a"), ("dpm++3m", "dpm++2m")])
def test_unknown_scheduler_says_did_you_mean(name, close):
    with pytest.raises(ConfigError, match=re.escape(f"unknown scheduler {name!r}; did you mean {close!r}? valid: pndm")):
        load_config(scheduler=name)


def test_config_imports_no_pipeline_and_no_torch():
    """The scheduler-name table lives below both (vidreal/samplers.py): the config checks a name
    without importing the pipeline (which imports the config)."""
    code = ("import sys; from vidreal.config import load_config; load_config(scheduler='euler_ancestral', eta=None); "
            "print(sorted(m for m in sys.modules if m.startswith('vidreal.pipeline') or m == 'torch'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------------------- the CLI: before anything loads
def _usage_error(tmp_path, samples, *args, verb="translate"):
    """Run a verb on a model that does not exist: an error about the value shows it came first."""
    inputs = [str(samples / "humanoid_walk_ground.mp4"), "-o", str(tmp_path / "out" / "o.mp4")] \
        if verb == "translate" else [str(samples), str(tmp_path / "out")]
    res = CliRunner().invoke(cli, [verb, *inputs, "--model", str(tmp_path / "no-such-model"), "--no-progress", *args])
    line = _usage_error_line(res)
    assert not (tmp_path / "out").exists()  # nothing written
    return line


def _usage_error_line(res) -> str:
    """The one ``error: ...`` line of a usage error (exit 2)."""
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


@pytest.mark.parametrize("verb", ["translate", "batch"])
def test_cli_crf_out_of_range_is_a_usage_error(tmp_path, samples, verb):
    assert "crf must be an integer in 0..51, got 99" in _usage_error(tmp_path, samples, "--crf", "99", verb=verb)


def test_cli_steps_above_the_training_timesteps(tmp_path, samples):
    assert "steps must be an integer in 1..1000" in _usage_error(tmp_path, samples, "--steps", "100000")


@pytest.mark.parametrize("text, message", [
    ("chunk_size: true\n", "chunk_size must be a positive integer, got True"),
    ("negative_prompt: [blurry, lowres]\n", "negative_prompt must be a string"),
    ("scheduler: dpmpp_3m\n", "did you mean 'dpmpp_2m'"),
    ("codec: no-such-codec\n", "unknown video codec 'no-such-codec'"),
])
def test_cli_bad_preset_values(tmp_path, samples, text, message):
    preset = tmp_path / "p.yaml"
    preset.write_text(text)
    assert message in _usage_error(tmp_path, samples, "--config", str(preset))


def test_cli_binary_config_file_is_one_line(tmp_path, samples):
    preset = tmp_path / "p.yaml"
    preset.write_bytes(bytes(range(256)) * 4)
    assert "the config file is not UTF-8 text" in _usage_error(tmp_path, samples, "--config", str(preset))


def test_cli_config_file_over_1_mb_is_refused_unread(tmp_path, samples):
    preset = tmp_path / "p.yaml"
    preset.write_text("# " + "x" * (1 << 20) + "\nsteps: 2\n")
    assert "the config file is over 1 MB" in _usage_error(tmp_path, samples, "--config", str(preset))


# ----------------------------------------------------------------------------- non-finite numbers
@pytest.mark.parametrize("flag", [["--guidance", "nan"], ["--guidance", "inf"], ["--lora-scale", "-inf"],
                                  ["--controlnet-scale", "canny=nan"]])
def test_non_finite_flags_refused_before_any_model_loads(samples, tmp_path, flag):
    assert "must be a finite number" in _usage_error(tmp_path, samples, *flag)


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


@pytest.mark.parametrize("verb,flag,value,rest", [
    (["classify", "train"], "--lr", "nan", ["--train", "nowhere", "--val", "nowhere", "-o", "run"]),
    (["classify", "train"], "--backbone-lr", "inf", ["--train", "nowhere", "--val", "nowhere", "-o", "run"]),
    (["batch"], "--gpus-per-worker", "inf", ["nowhere", "out"]),
])
def test_non_finite_flags_of_other_verbs_refused_first(tmp_path, monkeypatch, verb, flag, value, rest):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, [*verb, flag, value, *rest])
    assert f"{flag} must be a finite number, got {value}" in _usage_error_line(res)
    assert list(tmp_path.iterdir()) == []
    res = CliRunner().invoke(cli, [*verb, flag, "fast", *rest])
    assert res.exit_code == 2  # not a number at all: still Click's usage error


# ----------------------------------------------------------------------------- repeated --controlnet
@pytest.mark.parametrize("option", ["--controlnet", "--controlnet-scale"])
def test_repeated_controlnet_kind_is_refused(tiny_models, samples, tmp_path, option):
    first, second = ((f"canny={tiny_models['canny']}", f"canny={tiny_models['pose']}") if option == "--controlnet"
                     else ("canny=0.5", "canny=2"))
    res = CliRunner().invoke(cli, ["translate", str(samples / "humanoid_walk_ground.mp4"), "-o",
                                   str(tmp_path / "out.mp4"), "--model", str(tiny_models["sd"]), "--size", "32",
                                   "--steps", "1", "--no-progress", option, first, option, second])
    assert f"{option} canny=... is given twice" in _usage_error_line(res)
    assert list(tmp_path.iterdir()) == []

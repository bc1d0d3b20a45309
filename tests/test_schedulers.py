"""Schedulers by name, eta, and per-frame generators (deterministic, chunk-invariant), on tiny models."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from vidreal.cli import cli
from vidreal.config import load_config
from vidreal.errors import ConfigError
from vidreal.pipeline.schedulers import SCHEDULER_NAMES, make_scheduler

PROMPT = "a person in the style of sks person"
KW = dict(num_inference_steps=2, guidance_scale=7.0, seed=5, progress=False, size=None)


def diff(a, b) -> int:
    return int(np.abs(a.astype(int) - b).max())


def test_every_scheduler_name_runs_and_builds_its_class(translator, clip):
    frames, conds = clip
    one = (frames[:1], {k: v[:1] for k, v in conds.items()})
    default = translator(*one, PROMPT, **KW)
    changed = 0
    for name in SCHEDULER_NAMES:
        scheduler = make_scheduler(name, translator.pipe.scheduler)
        # built from the model's config: same training betas
        assert scheduler.config.beta_schedule == translator.pipe.scheduler.config.beta_schedule
        out = translator(*one, PROMPT, scheduler=name, **KW)
        assert out.shape == (1, 32, 32, 3) and out.dtype == np.uint8
        assert out.std() > 1  # a real image, not a constant
        changed += diff(out, default) > 1
    assert type(make_scheduler("euler-a", translator.pipe.scheduler)).__name__ == "EulerAncestralDiscreteScheduler"
    assert make_scheduler("dpm++2m-karras", translator.pipe.scheduler).config.use_karras_sigmas
    assert changed >= len(SCHEDULER_NAMES) - 2  # pndm (= the default) and perhaps one close sampler


def test_default_scheduler_leaves_outputs_unchanged(translator, clip):
    frames, conds = clip
    assert type(make_scheduler(None, translator.pipe.scheduler)) is type(translator.pipe.scheduler)
    default = translator(frames, conds, PROMPT, **KW)
    assert np.array_equal(default, translator(frames, conds, PROMPT, scheduler="pndm", **KW))
    # and frame 0 is still the stock diffusers pipeline's image (PNDM, the model's own scheduler)
    images = [torch.from_numpy(conds[k][:1]).permute(0, 3, 1, 2).float() / 255 for k in ("canny", "pose")]
    stock = translator.pipe(PROMPT, image=images, num_inference_steps=2, guidance_scale=7.0,
                            generator=torch.Generator("cpu").manual_seed(5), output_type="np", height=32,
                            width=32).images
    assert diff(default[:1], (stock * 255).round().astype(np.uint8)) <= 1


@pytest.mark.parametrize("name", ["euler-a", "dpm++sde"])
def test_stochastic_schedulers_are_deterministic_and_chunk_invariant(translator, clip, name):
    frames, conds = clip
    torch.manual_seed(123)  # the global RNG must not matter
    first = translator(frames, conds, PROMPT, scheduler=name, chunk_size=4, **KW)
    torch.manual_seed(999)
    again = translator(frames, conds, PROMPT, scheduler=name, chunk_size=4, **KW)
    chunked = translator(frames, conds, PROMPT, scheduler=name, chunk_size=2, **KW)
    assert diff(first, again) == 0
    assert diff(first, chunked) <= 1
    per_frame = translator(frames[:3], {k: v[:3] for k, v in conds.items()}, PROMPT, scheduler=name,
                           consistency="per-frame", chunk_size=1, **KW)
    assert diff(per_frame, first[:3]) > 1  # per-frame noise differs from shared noise...
    assert diff(per_frame[:1], first[:1]) <= 1  # ...except frame 0, seeded alike (batch-size float noise)


def test_one_frame_euler_a_equals_stock_diffusers(translator, clip):
    """The frame's generator draws its latent, then the scheduler's noise: as the stock pipeline's."""
    frames, conds = clip
    ours = translator(frames[:1], {k: v[:1] for k, v in conds.items()}, PROMPT, scheduler="euler-a", **KW)
    pipe = translator.pipe
    original = pipe.scheduler
    pipe.scheduler = make_scheduler("euler-a", original)
    try:
        images = [torch.from_numpy(conds[k][:1]).permute(0, 3, 1, 2).float() / 255 for k in ("canny", "pose")]
        stock = pipe(PROMPT, image=images, num_inference_steps=2, guidance_scale=7.0,
                     generator=torch.Generator("cpu").manual_seed(5), output_type="np", height=32, width=32).images
    finally:
        pipe.scheduler = original
    assert diff(ours, (stock * 255).round().astype(np.uint8)) <= 1


def test_eta_changes_ddim_and_is_refused_where_it_does_not_apply(translator, clip):
    frames, conds = clip
    two = (frames[:2], {k: v[:2] for k, v in conds.items()})
    plain = translator(*two, PROMPT, scheduler="ddim", **KW)
    assert np.array_equal(plain, translator(*two, PROMPT, scheduler="ddim", eta=0.0, **KW))
    noisy = translator(*two, PROMPT, scheduler="ddim", eta=1.0, **KW)
    assert diff(plain, noisy) > 1
    assert np.array_equal(noisy, translator(*two, PROMPT, scheduler="ddim", eta=1.0, **KW))  # seeded, too
    with pytest.raises(ConfigError, match="eta applies to"):
        translator(*two, PROMPT, scheduler="euler", eta=0.5, **KW)


def test_unknown_scheduler_lists_the_valid_names(translator, clip):
    frames, conds = clip
    with pytest.raises(ConfigError, match="unknown scheduler 'dpm\\+\\+3m'.*euler-a.*tcd"):
        translator(frames[:1], {k: v[:1] for k, v in conds.items()}, PROMPT, scheduler="dpm++3m", **KW)
    with pytest.raises(ConfigError, match="unknown scheduler"):
        load_config(scheduler="heun2")
    with pytest.raises(ConfigError, match="eta must be"):
        load_config(eta=2.0)


def test_cli_scheduler_flag_recorded_and_bad_name_one_line(tiny_models, samples, tmp_path):
    base = ["--model", str(tiny_models["sd"]), "--controlnet", f"canny={tiny_models['canny']}",
            "--controlnet", f"pose={tiny_models['pose']}", "--size", "32", "--steps", "2", "--no-progress"]
    image = sorted((samples / "objects").rglob("*.png"))[0]
    out = tmp_path / "out.png"
    res = CliRunner().invoke(cli, ["translate", str(image), "-o", str(out), *base, "--scheduler", "ddim",
                                   "--eta", "0.5"])
    assert res.exit_code == 0, res.output
    record = yaml.safe_load((tmp_path / "out.png.vidreal.yaml").read_text())
    assert record["scheduler"] == "ddim" and record["eta"] == 0.5
    bad = CliRunner().invoke(cli, ["translate", str(image), "-o", str(tmp_path / "bad.png"), *base,
                                   "--scheduler", "nope"])
    assert bad.exit_code == 2
    lines = [line for line in bad.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown scheduler 'nope'") and "euler-a" in lines[0]
    assert not (tmp_path / "bad.png").exists()

"""Click options shared by the verbs that translate (``translate``, ``batch``).

Every option defaults to None so that only flags the user typed override the preset.
"""
from __future__ import annotations

import functools

import click

from vidreal.config import CONSISTENCY_MODES, TranslateConfig, load_config
from vidreal.errors import ConfigError
from vidreal.pipeline.schedulers import SCHEDULER_NAMES


def _pairs(values, what: str, cast=str) -> dict | None:
    if not values:
        return None
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ConfigError(f"{what} must look like NAME=VALUE, got {item!r}")
        try:
            out[name] = cast(value)
        except ValueError:
            raise ConfigError(f"{what} {item!r}: {value!r} is not a number") from None
    return out


def translate_options(func):
    """Add the translation flags; the command receives ``config`` (a TranslateConfig)."""
    opts = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML preset (e.g. configs/rocog.yaml)."),
        click.option("--model", help="SD 1.5 weights: hub id, diffusers folder, or .safetensors file."),
        click.option("--model-config", help="Component configs for a single-file --model (hub id or folder)."),
        click.option("--controlnet", "controlnets", multiple=True, metavar="KIND=WEIGHTS",
                     help="ControlNet per condition kind, e.g. canny=lllyasviel/control_v11p_sd15_canny. Replaces the preset's set."),
        click.option("--controlnet-scale", "controlnet_scale", multiple=True, metavar="KIND=F", help="Conditioning scale per ControlNet."),
        click.option("--prompt", help="Prompt; may use {class_name} (parent folder) and {stem}."),
        click.option("--negative-prompt", help="Negative prompt."),
        click.option("--steps", type=int, help="Denoising steps (default 20)."),
        click.option("--guidance", type=float, help="Classifier-free guidance scale (default 9)."),
        click.option("--seed", type=int, help="Random seed (default 0)."),
        click.option("--chunk-size", type=int, help="Frames denoised together (memory; output unchanged)."),
        click.option("--consistency", type=click.Choice(CONSISTENCY_MODES), help="Temporal consistency mode (default cross-frame)."),
        click.option("--size", type=int, help="Working resolution, short side (default 512)."),
        click.option("--device", help="cuda, cuda:1, mps or cpu (default: auto)."),
        click.option("--dtype", type=click.Choice(["auto", "fp16", "bf16", "fp32"]), help="Model dtype (default: auto)."),
        click.option("--compile/--no-compile", "compile", default=None,
                     help="torch.compile the UNet and ControlNets: faster on GPU after a 1-2 min first call (long clips, batches)."),
        click.option("--embedding", "embeddings", multiple=True, metavar="FILE[:TOKEN]", help="Textual Inversion embedding (repeatable)."),
        click.option("--lora", help="LoRA weights (file or folder)."),
        click.option("--lora-scale", type=float, help="LoRA strength (default 1.0)."),
        click.option("--allow-pickle", is_flag=True, default=None, help="Allow .ckpt/.bin/.pt weights (runs pickled code)."),
        click.option("--canny-low", type=int, help="Canny low threshold (default 100)."),
        click.option("--canny-high", type=int, help="Canny high threshold (default 200)."),
        click.option("--codec", help="Video codec for outputs (default libx264)."),
        click.option("--crf", type=int, help="Video quality, lower is better (default 18)."),
        click.option("--prompts-file", type=click.Path(dir_okay=False), help="Per-item prompts (from `vidreal caption`)."),
        click.option("--scheduler", metavar="NAME",
                     help=f"Sampler: {', '.join(SCHEDULER_NAMES)} (default: the model's own, PNDM for SD 1.5)."),
        click.option("--eta", type=float, help="DDIM / TCD eta in [0, 1] (default: the scheduler's)."),
    ]

    @functools.wraps(func)
    def wrapper(*args, config_path=None, **kwargs):
        given = {name: kwargs.pop(name) for name in list(kwargs) if name in TranslateConfig.__dataclass_fields__}
        given["controlnets"] = _pairs(given.get("controlnets"), "--controlnet")
        given["controlnet_scale"] = _pairs(given.get("controlnet_scale"), "--controlnet-scale", float)
        given["embeddings"] = list(given["embeddings"]) or None
        if given.get("dtype") == "auto":
            given["dtype"] = None
        kwargs["config"] = load_config(config_path, **given)
        return func(*args, **kwargs)

    for opt in reversed(opts):
        wrapper = opt(wrapper)
    return wrapper

"""Click options shared by the verbs that translate (``translate``, ``batch``).

Every option defaults to None so that only flags the user typed override the preset.
"""
from __future__ import annotations

import functools
import inspect
import math

import click
import yaml

from vidreal.cli.common import option, show_default, usage
from vidreal.config import (CONDITION_ALIASES, CONSISTENCY_MODES, KV_CACHE, REMOVED, TranslateConfig,
                            load_config)
from vidreal.errors import ConfigError
from vidreal.options import FLOW_METHODS
from vidreal.samplers import SCHEDULER_NAMES


class FiniteFloat(click.FloatRange):
    """A float flag (optionally bounded, as ``click.FloatRange``) that refuses ``nan`` and ``inf``
    as a usage error, as a non-finite config value is refused. Unbounded, --help shows it as FLOAT."""

    def __init__(self, min=None, max=None, **kwargs):
        super().__init__(min, max, **kwargs)
        if min is None and max is None:
            self.name = "float"  # not "FLOAT RANGE [x<=None]"

    def _describe_range(self) -> str:
        return "" if self.min is None and self.max is None else super()._describe_range()

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            name = param.opts[0] if param is not None and param.opts else "value"
            raise click.UsageError(f"{name} must be a finite number, got {value}", ctx)
        return super().convert(number, param, ctx)


class KeyframeEvery(click.ParamType):
    """``--keyframe-every``: a positive integer K, or ``auto`` (the range is checked with the config)."""

    name = "K|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "auto":
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is neither an integer nor 'auto'", param, ctx)


def _pairs(values, what: str, cast=str) -> dict | None:
    if not values:
        return None
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ConfigError(f"{what} must look like NAME=VALUE, got {item!r}")
        if name in out:
            raise ConfigError(f"{what} {name}=... is given twice; give each kind once")
        try:
            out[name] = cast(value)
        except ValueError:
            raise ConfigError(f"{what} {item!r}: {value!r} is not a number") from None
    return out


def condition_options(values) -> dict | None:
    """``("canny.low_threshold=50", ...)`` -> ``{"canny": {"low_threshold": 50}}``; values read as YAML
    scalars (50 -> int, true -> bool, text stays text)."""
    if not values:
        return None
    out: dict = {}
    for item in values:
        key, sep, value = item.partition("=")
        kind, dot, option = key.partition(".")
        if not sep or not dot or not kind or not option:
            raise ConfigError(f"--condition must look like KIND.OPTION=VALUE, got {item!r}")
        try:
            parsed = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            parsed = value
        out.setdefault(kind, {})[option] = parsed
    return out


def _timing(values, what: str):
    """``("0.2",)`` -> 0.2; ``("canny=0.2", "pose=0.1")`` -> {kind: float}; () -> None."""
    if not values:
        return None
    if len(values) == 1 and "=" not in values[0]:
        try:
            return float(values[0])
        except ValueError:
            raise ConfigError(f"{what} must be a number or KIND=NUMBER, got {values[0]!r}") from None
    return _pairs(values, what, float)


def _loras(values):
    """``--lora`` values -> the config's ``lora``: None (not given), one spec as typed, or a list."""
    if not values:
        return None
    return values[0] if len(values) == 1 else list(values)


SHOWN_DEFAULTS = {"device": "auto", "dtype": "auto", "output_fps": "the input's",
                  "audio": "audio"}  # config None means auto-detect

CANNY_OPTIONS = [  # deprecated spellings of --condition canny.low_threshold=N / canny.high_threshold=N: not in --help
    option("--canny-low", type=click.IntRange(0, 255), hidden=True, help="Canny low threshold."),
    option("--canny-high", type=click.IntRange(0, 255), hidden=True, help="Canny high threshold."),
]


SELECTION_OPTIONS = [
    option("--start", metavar="FRAME|SECONDS", show_default="0",
           help="First frame kept: a frame index (0 is the first) or seconds, e.g. 2.5s."),
    option("--end", metavar="FRAME|SECONDS", show_default="the clip's end",
           help="Stop before this frame or time (exclusive: --start 0 --end 24 keeps frames 0 to 23)."),
    option("--every", type=int, metavar="N", show_default="1",
           help="Keep every N-th frame from --start; output fps = input fps / N (audio kept for the span)."),
    option("--max-frames", type=int, metavar="N", show_default="all",
           help="Keep at most N frames (after --start, --end, --every)."),
]


def selection_options(func):
    """``--start``/``--end``/``--every``/``--max-frames`` (``vidreal.selection``), the same in every
    verb that reads clips; the command receives ``start``, ``end``, ``every``, ``max_frames``."""
    for opt in reversed(SELECTION_OPTIONS):
        func = opt(func)
    return func


def canny_options(func):
    """``--canny-low``/``--canny-high`` (INTEGER 0-255, hidden: the old spellings of ``--condition
    canny.low_threshold=N``), the same in every verb that has them."""
    for opt in reversed(CANNY_OPTIONS):
        func = opt(func)
    return func


def _config(config_path, given: dict) -> TranslateConfig:
    """The preset at ``config_path`` with the translation flags ``given`` (as Click parsed them) over it."""
    given["controlnets"] = _pairs(given.get("controlnets"), "--controlnet")
    given["controlnet_scale"] = _pairs(given.get("controlnet_scale"), "--controlnet-scale", float)
    given["embeddings"] = list(given["embeddings"]) or None
    given["lora"] = _loras(given.get("lora"))
    given["conditions"] = condition_options(given.get("conditions"))
    for name in ("control_start", "control_end"):
        given[name] = _timing(given.get(name), "--" + name.replace("_", "-"))
    given["flow_band"] = list(given["flow_band"]) if given.get("flow_band") else None
    if given.get("dtype") == "auto":
        given["dtype"] = None
    return load_config(config_path, **given)


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
        click.option("--steps", type=int, help="Denoising steps."),
        click.option("--guidance", type=float, help="Classifier-free guidance scale."),
        click.option("--seed", type=int, help="Random seed."),
        click.option("--chunk-size", type=int, help="Frames denoised together (memory; output unchanged)."),
        click.option("--consistency", type=click.Choice(CONSISTENCY_MODES),
                     help="Temporal consistency mode; memory: anchor + previous frame; "
                          "flow: memory + flow-guided fusion."),
        click.option("--keyframe-every", type=KeyframeEvery(),
                     help="Denoise every K-th frame (and the last); build the rest along the source's flow. "
                          "auto: a keyframe where the source changes enough (motion, occlusion, a cut)."),
        click.option("--keyframe-max-gap", type=int, metavar="N",
                     help="With --keyframe-every auto: at most N frames from one keyframe to the next."),
        click.option("--keyframe-threshold", type=FiniteFloat(0, 1), metavar="F",
                     help="With --keyframe-every auto: how much the source must change (0..1) for a new keyframe; "
                          "lower = more keyframes."),
        click.option("--flow-method", type=click.Choice(FLOW_METHODS),
                     help="Source flow for propagation and fusion: dis (CPU pool), dis-fast (~2.5x faster, coarser), "
                          "farneback, or raft / raft-small (learned, on the translator's device; torchvision weights)."),
        click.option("--flow-size", type=int, metavar="PX",
                     help="Short side flows are estimated at (e.g. 256: ~4x less flow work; default: the working size)."),
        click.option("--refine", type=float, metavar="S", help="img2img strength 0..1 over propagated frames (needs --keyframe-every)."),
        click.option("--flow-band", type=float, nargs=2, metavar="START END",
                     help="Fractions of the denoising steps where --consistency flow fuses."),
        click.option("--kv-cache", type=click.Choice(KV_CACHE),
                     help="Where the frame memory lives (cpu bounds device memory; off: cross-frame re-denoises the anchor)."),
        click.option("--size", type=int, help="Working resolution, short side."),
        click.option("--device", help="cuda, cuda:1, mps or cpu."),
        click.option("--dtype", type=click.Choice(["auto", "fp16", "bf16", "fp32"]), help="Model dtype."),
        click.option("--compile/--no-compile", "compile", default=None,
                     help="torch.compile the UNet and ControlNets (CUDA graphs on a GPU): faster after a ~1 min first "
                          "call; default auto: on for CUDA batches and clips of more than a few chunks."),
        click.option("--vae", metavar="PATH",
                     help="Replace the model's VAE: an AutoencoderKL or AutoencoderTiny (TAESD: ~10x faster "
                          "decoding, an approximation), as a hub id, folder or .safetensors file."),
        click.option("--embedding", "embeddings", multiple=True, metavar="FILE[:TOKEN]", help="Textual Inversion embedding (repeatable)."),
        click.option("--lora", "lora", multiple=True, metavar="FILE[:SCALE]",
                     help="LoRA weights (file, folder or hub id), fused at SCALE (repeatable: several LoRAs, "
                          "each its own scale), e.g. latent-consistency/lcm-lora-sdv1-5 (configs/fast.yaml)."),
        click.option("--lora-scale", type=FiniteFloat(), help="Scale of every --lora given without :SCALE."),
        click.option("--allow-pickle", is_flag=True, default=None, help="Allow .ckpt/.bin/.pt weights (runs pickled code)."),
        click.option("--condition", "conditions", multiple=True, metavar="KIND.OPTION=VALUE",
                     help="A condition detector's option (repeatable), e.g. canny.low_threshold=50, "
                          "openpose.model=./annotators; merged over the preset's conditions: section."),
        *CANNY_OPTIONS,
        *SELECTION_OPTIONS,
        click.option("--codec", help="Video codec for outputs."),
        click.option("--crf", type=int, help="Video quality, lower is better."),
        click.option("--encoder-preset", "encoder_preset", metavar="NAME",
                     help="x264/x265 speed preset, ultrafast ... veryslow: veryfast takes a third of medium's CPU "
                          "for a file about the same size at the same crf (medium is ffmpeg's own)."),
        click.option("--pix-fmt", "pix_fmt", metavar="NAME",
                     help="Pixel format of video outputs, one the codec takes: yuv420p, yuv422p, yuv444p (libx264), "
                          "rgb24 (libx264rgb), ...; default: the codec's usual (an odd size makes libx264's yuv444p)."),
        click.option("--fps", "output_fps", metavar="RATE",
                     help="Force the output's frame rate, e.g. 30, 29.97 (= 30000/1001) or 30000/1001: the same frames "
                          "with new timing (none added or dropped; the audio is copied as it is)."),
        click.option("--audio/--no-audio", "audio", default=None, help="Copy the input's audio into the output."),
        click.option("--prompts-file", type=click.Path(dir_okay=False), help="Per-item prompts (from `vidreal caption`)."),
        click.option("--control-start", "control_start", multiple=True, metavar="F|KIND=F",
                     help="Fraction of the denoising steps where the ControlNets start acting; per kind with KIND=F."),
        click.option("--control-end", "control_end", multiple=True, metavar="F|KIND=F",
                     help="Fraction where they stop: lower = more realism, less structure; per kind with KIND=F."),
        click.option("--guess-mode/--no-guess-mode", "guess_mode", default=None,
                     help="ControlNets see only the conditional half under guidance (diffusers' guess mode)."),
        click.option("--scheduler", metavar="NAME",
                     help=f"Sampler: {', '.join(SCHEDULER_NAMES)} (or a diffusers class / ComfyUI name, e.g. dpmpp_2m); "
                          "default: the model's own (PNDM for SD 1.5)."),
        click.option("--eta", type=float, help="DDIM / TCD eta, 0 to 1; default: the scheduler's."),
        click.option("--deepcache-interval", type=click.IntRange(min=0), metavar="N",
                     help="Approximation: the full UNet every N steps, its deep blocks reused between (0/1: off); "
                          "1.17x at N=3 on an H200 (the ControlNets still run every step)."),
        # removed options: kept (hidden) to fail with a line naming their replacement
        click.option("--levers", "levers", hidden=True),
        click.option("--tome-ratio", "tome_ratio", hidden=True),
    ]

    wants_path = "config_path" in inspect.signature(func).parameters

    @functools.wraps(func)
    def wrapper(*args, config_path=None, **kwargs):
        removed = [name for name in REMOVED if kwargs.pop(name, None) is not None]
        given = {name: kwargs.pop(name) for name in list(kwargs)
                 if name in TranslateConfig.__dataclass_fields__ or name in CONDITION_ALIASES}
        with usage():  # a wrong flag or preset value: exit 2 before any input is read
            if removed:  # a removed flag: one line naming its replacement
                raise ConfigError(REMOVED[removed[0]].replace(removed[0], "--" + removed[0].replace("_", "-"), 1))
            kwargs["config"] = _config(config_path, given)
        if wants_path:  # the verb reads its own section of the file (batch:)
            kwargs["config_path"] = config_path
        return func(*args, **kwargs)

    for opt in reversed(opts):
        wrapper = opt(wrapper)
    for param in wrapper.__click_params__:  # defaults shown one way, from the config itself
        default = SHOWN_DEFAULTS.get(param.name, getattr(TranslateConfig, param.name, None))
        if param.show_default is None and default not in (None, "") and not isinstance(default, (bool, dict, list)):
            show_default(param, str(default))
    return wrapper

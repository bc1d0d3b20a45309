"""Typed translation config: defaults < YAML preset (``--config``) < explicit overrides (CLI flags).

A preset is a YAML mapping of ``TranslateConfig`` fields. Other verbs may keep their own settings
in a section of the same file (``classify:``, ``batch:``, ``personalize:``); those sections are
left to their verbs. Unknown keys are rejected with the closest valid name.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vidreal.errors import ConfigError

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_CONTROLNETS = {
    "canny": "lllyasviel/control_v11p_sd15_canny",
    "pose": "lllyasviel/control_v11p_sd15_openpose",
}
ROCOG_PROMPT = "a person in the style of sks person"
VISDA_PROMPT = "a {class_name} in the style of valid, best quality, extremely detailed, in the style of sks object"
NEGATIVE_PROMPT = (
    "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, "
    "worst quality, low quality"
)
CONSISTENCY_MODES = ("per-frame", "shared-noise", "cross-frame")
SECTIONS = ("classify", "batch", "personalize", "result", "vidreal_version")  # not translation keys; ignored here


@dataclass
class TranslateConfig:
    """Everything that decides a translation. Field comments mirror configs/default.yaml."""

    model: str = DEFAULT_MODEL  # hub id, diffusers folder, or single .safetensors checkpoint
    model_config: str | None = None  # component configs for a single-file model (hub id or folder)
    controlnets: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_CONTROLNETS))  # condition kind -> weights
    controlnet_scale: dict[str, float] = field(default_factory=dict)  # kind -> conditioning scale (default 1.0)
    prompt: str = ROCOG_PROMPT  # may use {class_name} and {stem} of the input file
    negative_prompt: str = NEGATIVE_PROMPT
    steps: int = 20
    guidance: float = 9.0
    seed: int = 0
    chunk_size: int = 8  # frames denoised together (memory knob; output does not depend on it)
    consistency: str = "cross-frame"  # per-frame | shared-noise | cross-frame
    size: int | None = 512  # working resolution (short side); None keeps the input size
    device: str | None = None  # None = auto (cuda > mps > cpu)
    dtype: str | None = None  # None = auto (fp16 on GPU, fp32 on CPU)
    compile: bool = False  # torch.compile the UNet and ControlNets: faster on GPU after a slow first call
    embeddings: list[str] = field(default_factory=list)  # Textual Inversion files, FILE[:TOKEN]
    lora: str | None = None
    lora_scale: float = 1.0
    allow_pickle: bool = False  # load .ckpt/.bin/.pt weights (runs pickle code: trusted files only)
    canny_low: int = 100
    canny_high: int = 200
    codec: str = "libx264"
    crf: int = 18
    prompts_file: str | None = None  # per-item prompts (vidreal caption output); batch uses it
    # throughput: sampler choice
    scheduler: str | None = None  # pndm, ddim, euler, euler-a, dpm++2m(-karras), dpm++sde, unipc, lcm, tcd; None = the model's own
    eta: float | None = None  # DDIM / TCD eta (None: the scheduler's default)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        if self.consistency not in CONSISTENCY_MODES:
            raise ConfigError(f"consistency must be one of {', '.join(CONSISTENCY_MODES)}, got {self.consistency!r}")
        for name in ("steps", "chunk_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.size is not None and (not isinstance(self.size, int) or self.size < 8):
            raise ConfigError(f"size must be an integer >= 8 or null, got {self.size!r}")
        if not self.controlnets:
            raise ConfigError("at least one controlnet is needed (controlnets: {kind: weights})")
        unknown = set(self.controlnet_scale) - set(self.controlnets)
        if unknown:
            raise ConfigError(f"controlnet_scale names {sorted(unknown)} not among controlnets {list(self.controlnets)}")
        from vidreal.pipeline.schedulers import check_scheduler

        check_scheduler(self.scheduler)
        if self.eta is not None and (not isinstance(self.eta, (int, float)) or not 0 <= self.eta <= 1):
            raise ConfigError(f"eta must be a number in [0, 1] or null, got {self.eta!r}")
        if not 0 <= self.canny_low <= self.canny_high <= 255:
            raise ConfigError(f"need 0 <= canny_low <= canny_high <= 255, got {self.canny_low}, {self.canny_high}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """A short hash of everything that decides the output (where and how fast it runs does not)."""
        data = self.to_dict()
        data.pop("device")
        data.pop("compile")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def prompt_for(self, path: str | Path) -> str:
        """The prompt for one input file: ``{class_name}`` is its parent folder, ``{stem}`` its name."""
        path = Path(path)
        try:
            return self.prompt.format(class_name=path.parent.name, stem=path.stem)
        except (KeyError, IndexError) as exc:
            raise ConfigError(f"prompt template {self.prompt!r} uses an unknown field {exc}") from None


FIELDS = {f.name: f for f in dataclasses.fields(TranslateConfig)}


def _check_keys(keys, where: str) -> None:
    for key in keys:
        if key not in FIELDS:
            close = difflib.get_close_matches(key, FIELDS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(FIELDS)}"
            raise ConfigError(f"unknown config key {key!r}{hint}", where)


def read_preset(path: str | Path) -> dict[str, Any]:
    """The translation keys of a YAML preset (other verbs' sections removed)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {str(exc).splitlines()[0]}", path) from None
    if not isinstance(data, dict):
        raise ConfigError("a config file must hold a mapping of keys", path)
    data = {k: v for k, v in data.items() if k not in SECTIONS}
    _check_keys(data, str(path))
    return data


def load_config(path: str | Path | None = None, **overrides) -> TranslateConfig:
    """Defaults, then the preset at ``path``, then ``overrides`` whose value is not None."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(read_preset(path))
    given = {k: v for k, v in overrides.items() if v is not None}
    _check_keys(given, "overrides")
    values.update(given)
    try:
        return TranslateConfig(**values)
    except TypeError as exc:
        raise ConfigError(f"invalid config: {exc}") from None


def write_config(path: str | Path, config: TranslateConfig, extra: dict[str, Any] | None = None) -> Path:
    """Write the resolved config as YAML, atomically; ``extra`` (e.g. metrics) goes under ``result:``.

    The file is itself a valid preset: ``--config OUTPUT.vidreal.yaml`` reproduces the run.
    """
    from vidreal import __version__
    from vidreal.io import atomic_output

    data = {"vidreal_version": __version__, **config.to_dict()}
    if extra:
        data["result"] = extra
    with atomic_output(path) as tmp:
        Path(tmp).write_text(yaml.safe_dump(data, sort_keys=False))
    return Path(path)

"""Typed translation config: defaults < YAML preset (``--config``) < explicit overrides (CLI flags).

A preset is a YAML mapping of ``TranslateConfig`` fields. Other verbs keep their own settings in
a section of the same file, read (and checked) by that verb with the same precedence, defaults <
file < flags: ``batch:`` (``vidreal batch``, see :data:`BATCH_KEYS`), ``personalize:``
(``dreambooth:`` / ``textual_inversion:`` subsections for ``vidreal personalize``) and
``classify:`` (``vidreal classify train``). ``result:`` and ``vidreal_version`` are what a
record adds and are ignored. Unknown keys, in every section, are rejected with the closest
valid name.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vidreal import checks
from vidreal.errors import ConfigError
from vidreal.options import DEFAULT_FLOW_BAND, KV_CACHE, TranslateOptions  # noqa: F401 (names the CLI reads)
from vidreal.runtime import CONSISTENCY_MODES, check_keys, first_line  # noqa: F401

log = logging.getLogger(__name__)

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_CONTROLNETS = {
    "canny": "lllyasviel/control_v11p_sd15_canny",
    "pose": "lllyasviel/control_v11p_sd15_openpose",
}
ROCOG_PROMPT = "a person in the style of sks person"
NEGATIVE_PROMPT = (
    "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, "
    "worst quality, low quality"
)
MAX_CONFIG_BYTES = 1 << 20  # a preset is a few KB; YAML's pure-Python loader takes ~1 s per MB
DTYPES = ("auto", "fp16", "float16", "half", "bf16", "bfloat16", "fp32", "float32", "float")  # runtime.resolve_dtype
SECTIONS = ("classify", "batch", "personalize", "result", "vidreal_version")  # not translation keys; ignored here
# streams: `batch:` section keys = run_batch's settings (its keyword arguments but translator/progress).
BATCH_KEYS = ("pattern", "extensions", "list_file", "root", "executor", "workers", "gpus_per_worker", "ray_address",
              "overwrite", "overlap", "metrics", "min_edge_f1", "min_pose_pck", "keypoints", "sheet")
PERSONALIZE_METHODS = ("dreambooth", "textual_inversion")  # subsections of `personalize:`
# streams: deprecated flat condition keys -> (kind, option) in the `conditions:` section
CONDITION_ALIASES = {"canny_low": ("canny", "low_threshold"), "canny_high": ("canny", "high_threshold")}


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
    consistency: str = "cross-frame"  # per-frame | shared-noise | cross-frame | memory | flow
    size: int | None = 512  # working resolution (short side); None keeps the input size
    device: str | None = None  # None = auto (cuda > mps > cpu)
    dtype: str | None = None  # None = auto (fp16 on GPU, fp32 on CPU)
    compile: str = "auto"  # auto | on | off: torch.compile the UNet and ControlNets (CUDA graphs on a GPU); auto: on
    # for CUDA runs long enough to repay the first call (a batch, or a clip of more than a few chunks)
    vae: str | None = None  # replaces the model's VAE: an AutoencoderKL or AutoencoderTiny (TAESD), hub id/folder/file
    embeddings: list[str] = field(default_factory=list)  # Textual Inversion files, FILE[:TOKEN]
    lora: str | list | None = None  # LoRA(s): FILE[:SCALE], or a list of FILE[:SCALE] / {path: FILE, scale: S}
    lora_scale: float = 1.0  # scale of every LoRA that names none
    allow_pickle: bool = False  # load .ckpt/.bin/.pt weights (runs pickle code: trusted files only)
    conditions: dict[str, dict] = field(default_factory=dict)  # kind -> detector options, e.g. {canny: {low_threshold: 50}}
    codec: str = "libx264"
    crf: int = 18
    encoder_preset: str | None = checks.DEFAULT_PRESET  # x264/x265 speed preset (None: the codec's own, medium)
    pix_fmt: str | None = None  # encoder pixel format, one the codec takes (yuv420p, yuv444p, ...); None = the codec's usual
    output_fps: str | None = None  # force the output's rate ("30", "29.97", "30000/1001"): same frames, new timing
    audio: bool = True  # copy the input's audio into a video output
    input_fps: str | None = None  # rate of a frame-folder input (None: 24); files ignore it
    prompts_file: str | None = None  # per-item prompts (vidreal caption output); replaces prompt
    # ControlNet timing (structure): fractions of the denoising schedule where the ControlNets
    # act, one number for all or {kind: number}; guess mode (ControlNets on the conditional half only)
    control_start: float | dict[str, float] = 0.0
    control_end: float | dict[str, float] = 1.0
    guess_mode: bool = False
    # correspondence: keyframe propagation, frame memory, flow-guided fusion (see vidreal.options)
    keyframe_every: int | str | None = None  # K: denoise every K-th frame (and the last), propagate the rest; "auto"
    keyframe_max_gap: int = 16  # auto: at most this many frames from one keyframe to the next
    keyframe_threshold: float = 0.1  # auto: how much the source must change (0..1) for a new keyframe
    refine: float | None = None  # img2img strength over propagated frames, 0..1 (None/0: off)
    flow_band: list[float] = field(default_factory=lambda: list(DEFAULT_FLOW_BAND))  # steps where flow fuses
    flow_method: str = "dis"  # source flow for propagation and fusion: dis, dis-fast, farneback, raft, raft-small
    flow_size: int | None = None  # short side flows are estimated at (None: the working size)
    kv_cache: str = "device"  # frame memory: device | cpu | off (off: cross-frame re-denoises the anchor)
    # throughput: sampler choice
    scheduler: str | None = None  # pndm, ddim, euler, euler-a, dpm++2m(-karras), dpm++sde, unipc, lcm, tcd; None = the model's own
    eta: float | None = None  # DDIM / TCD eta (None: the scheduler's default)
    # frame selection (vidreal/selection.py): which frames are read, translated and written
    start: int | str | None = None  # first frame kept: a frame index or seconds ("2.5s"); None = 0
    end: int | str | None = None  # EXCLUSIVE end: a frame index or seconds; None = the clip's end
    every: int = 1  # keep every N-th frame from start; output fps = input fps / N
    max_frames: int | None = None  # keep at most this many frames
    # throughput: an opt-in approximation (changes the output)
    deepcache_interval: int = 0  # N: the full UNet every N steps, only its shallow blocks between (0/1: off)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Check every key's type and range, before anything loads; ConfigError naming the first bad value.
        The translation options are checked by :class:`vidreal.options.TranslateOptions` (the same
        checks the Translator API runs); an alias scheduler name becomes vidreal's."""
        for name, value in self.__dict__.items():  # nan, inf (YAML .nan/.inf, Click floats) in any key
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
        for name in ("model", "prompt"):
            checks.string(name, getattr(self, name))
        for name in ("model_config", "device", "prompts_file", "vae"):
            checks.string(name, getattr(self, name), none=True)
        if isinstance(self.dtype, str):
            checks.one_of("dtype", self.dtype.strip().lower().removeprefix("torch."), DTYPES)
        self.compile = check_compile(self.compile)
        checks.flag("allow_pickle", self.allow_pickle)
        if (not isinstance(self.controlnets, dict) or not self.controlnets
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in self.controlnets.items())):
            raise ConfigError(f"at least one controlnet is needed (controlnets: {{kind: weights}}), "
                              f"got {self.controlnets!r}")
        if not isinstance(self.embeddings, (list, tuple)) or not all(isinstance(e, (str, Path)) for e in self.embeddings):
            raise ConfigError(f"embeddings must be a list of FILE[:TOKEN], got {self.embeddings!r}")
        _check_codec(self.codec, self.crf, self.pix_fmt)
        checks.encoder_preset(self.codec, self.encoder_preset)
        for name in ("output_fps", "input_fps"):  # written one way: "30000/1001", "24"
            fps = checks.rate(name, getattr(self, name), none=True)
            setattr(self, name, None if fps is None else str(fps))
        checks.flag("audio", self.audio)
        options = TranslateOptions.from_config(self)
        options.per_kind(self.controlnets)  # the ControlNet kinds that scales and timings name
        self.scheduler = options.scheduler  # an alias (a diffusers class, a ComfyUI name): vidreal's name
        from vidreal import selection

        for key, value in selection.normalize(self.start, self.end, self.every, self.max_frames).items():
            setattr(self, key, value)
        lora_list(self.lora, self.lora_scale)
        from vidreal.conditions import check_options  # kinds and option names, before any model loads

        self.conditions = check_options(self.conditions, kinds=self.controlnets)

    def options(self) -> TranslateOptions:
        """The options of one translation run (``Translator.stream``'s)."""
        return TranslateOptions.from_config(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """A short hash of everything that decides the output (where and how fast it runs does not).

        Options not in effect (``TranslateOptions.in_effect``: e.g. ``flow_band`` outside flow mode,
        ``guess_mode`` without guidance) hash as their defaults, so changing them redoes nothing;
        keys added since (frame selection, approximations, flow method and size, auto keyframes)
        count only when set, so configs that do not use them keep the hash they always had.
        """
        data = self.to_dict()
        for key in ("device", "compile", "kv_cache"):  # where and how fast (up to rounding)
            data.pop(key)
        for key in UNSET_KEYS:  # at their defaults: the hash of configs before the keys existed
            if data[key] == _default(key):
                data.pop(key)
        from vidreal.selection import KEYS, is_active

        if not is_active(*(data[key] for key in KEYS)):  # every frame: the hash of configs before selection existed
            for key in KEYS:
                data.pop(key)
        effect = self.options().in_effect(list(self.controlnets))
        for name in OPTION_KEYS:
            if name in LATER_KEYS:
                if name in effect and effect[name] != FIELDS[name].default:
                    data[name] = effect[name]
                else:
                    data.pop(name)
            elif name in effect:
                data[name] = effect[name]
            else:
                data[name] = _default(name)
        if self.codec not in checks.CRF_CODECS:
            data["crf"] = _default("crf")  # the codec takes none
        if self.codec not in checks.PRESET_CODECS:
            data.pop("encoder_preset", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def prompt_for(self, path: str | Path) -> str:
        """The prompt for one input file: ``{class_name}`` is its parent folder, ``{stem}`` its name."""
        path = Path(path)
        try:
            return self.prompt.format(class_name=path.parent.name, stem=path.stem)
        except (KeyError, IndexError) as exc:
            raise ConfigError(f"prompt template {self.prompt!r} uses an unknown field {exc}") from None


COMPILE = ("auto", "on", "off")
# Options that were removed, with what replaces them: a config or flag naming one fails with this line.
REMOVED = {
    "tome_ratio": "tome_ratio was removed: it was slower (0.60x) on an H200; use deepcache_interval or compile",
    "levers": "levers was removed: fused-qkv and channels-last are applied by compile (they did not pay without it)",
}


def check_compile(value) -> str:
    """``compile`` as one of :data:`COMPILE` (true/false, as older records wrote it, are on/off)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value not in COMPILE:
        raise ConfigError(f"compile must be one of {', '.join(COMPILE)}, got {value!r}")
    return value


def check_removed(keys, where: str) -> None:
    """ConfigError naming the replacement of the first removed option among ``keys``."""
    for key in keys:
        if key in REMOVED:
            raise ConfigError(f"{where}: {REMOVED[key]}")


def parse_lora(spec, default_scale: float = 1.0) -> tuple[str, float]:
    """One LoRA spec -> (source, scale): ``"FILE[:SCALE]"`` (a file, folder or hub id), ``{path:, scale:}``
    or ``(path, scale)``. The split is on the last ``:`` when what follows is no path and the whole
    is not an existing file; SCALE must then be a finite number. ConfigError otherwise."""
    if isinstance(spec, dict):
        unknown = set(spec) - {"path", "scale"}
        if unknown or "path" not in spec:
            raise ConfigError(f"a LoRA entry must look like {{path: FILE, scale: S}}, got {spec!r}")
        path, scale = spec["path"], spec.get("scale", default_scale)
    elif isinstance(spec, (tuple, list)) and len(spec) == 2:
        path, scale = spec
    elif isinstance(spec, (str, Path)):
        path, scale = str(spec).strip(), default_scale
        if ":" in path and not Path(path).expanduser().exists():
            head, tail = path.rsplit(":", 1)
            if "/" not in tail and "\\" not in tail:
                try:
                    path, scale = head, float(tail)
                except ValueError:
                    raise ConfigError(f"bad scale {tail!r} in LoRA spec {spec!r}; expected FILE[:SCALE]") from None
    else:
        raise ConfigError(f"a LoRA must be FILE[:SCALE] or {{path: FILE, scale: S}}, got {spec!r}")
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise ConfigError(f"LoRA spec {spec!r} names no file; expected FILE[:SCALE]")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ConfigError(f"LoRA scale must be a finite number, got {scale!r} in {spec!r}")
    return str(path).strip(), float(scale)


def lora_list(lora, lora_scale: float = 1.0) -> list[tuple[str, float]]:
    """The LoRAs a config names, in order, as (source, scale): ``lora`` is None, one spec or a list
    of specs (see :func:`parse_lora`); ``lora_scale`` is the scale of every spec that gives none."""
    if isinstance(lora_scale, bool) or not isinstance(lora_scale, (int, float)) or not math.isfinite(lora_scale):
        raise ConfigError(f"lora_scale must be a finite number, got {lora_scale!r}")
    if lora is None:
        return []
    specs = lora if isinstance(lora, list) else [lora]
    return [parse_lora(spec, lora_scale) for spec in specs]


FIELDS = {f.name: f for f in dataclasses.fields(TranslateConfig)}
OPTION_KEYS = [name for name in FIELDS if name in TranslateOptions.__dataclass_fields__ and name != "kv_cache"]
# keys that did not exist when the first batches were hashed: they count only when set
LATER_KEYS = ("keyframe_max_gap", "keyframe_threshold", "flow_method", "flow_size", "deepcache_interval")
# other keys added since, that count only when not at their defaults
UNSET_KEYS = ("vae", "pix_fmt", "output_fps", "audio", "input_fps", "encoder_preset")


def _default(name: str):
    field_ = FIELDS[name]
    return field_.default_factory() if field_.default_factory is not dataclasses.MISSING else field_.default


def _check_codec(codec, crf, pix_fmt=None) -> None:
    """ConfigError unless ``codec`` names a video encoder here, ``crf`` is in its range and
    ``pix_fmt`` (None: the codec's usual) is a pixel format it encodes."""
    import av

    checks.string("codec", codec)
    try:
        encoder = av.codec.Codec(codec, "w")
    except Exception:  # av.codec.codec.UnknownCodecError, or a decoder only
        raise ConfigError(f"unknown video codec {codec!r}; e.g. libx264, libx264rgb, ffv1, mpeg4") from None
    checks.crf(codec, crf)
    checks.pix_fmt(codec, pix_fmt, [f.name for f in encoder.video_formats or ()])


def _check_keys(keys, where: str) -> None:
    check_removed(keys, where)
    check_keys(keys, [*FIELDS, *CONDITION_ALIASES, *SECTIONS], where)


def _read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", path)
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the config file: {first_line(exc)}", path) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"the config file is over {MAX_CONFIG_BYTES // 2**20} MB: not a preset", path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the config file is not UTF-8 text (byte {exc.start})", path) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {first_line(exc)}", path) from None
    if not isinstance(data, dict):
        raise ConfigError("a config file must hold a mapping of keys", path)
    return data


def read_preset(path: str | Path) -> dict[str, Any]:
    """The translation keys of a YAML preset (other verbs' sections removed; deprecated
    ``canny_low``/``canny_high`` folded into ``conditions``)."""
    data = _read_yaml(path)
    _check_keys(data, str(path))
    return _fold_aliases({k: v for k, v in data.items() if k not in SECTIONS}, str(path))


def read_section(path: str | Path | None, name: str, valid) -> dict[str, Any]:
    """The ``name:`` section of the YAML file at ``path`` ({} when ``path`` is None or the file has
    none); a key not in ``valid`` raises ConfigError with the closest valid name."""
    if path is None:
        return {}
    section = _read_yaml(path).get(name) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"the {name!r} section must be a mapping of keys", path)
    check_keys(section, valid, str(path), f"{name} setting")
    return dict(section)


def merge_settings(section: dict[str, Any], **flags) -> dict[str, Any]:
    """A section's settings overridden by the ``flags`` whose value is not None (defaults < file < flags)."""
    return {**section, **{k: v for k, v in flags.items() if v is not None}}


def _fold_aliases(values: dict[str, Any], where: str) -> dict[str, Any]:
    """Move the deprecated flat condition keys into ``conditions`` (a copy; they win over it)."""
    aliases = {key: values.pop(key) for key in list(values) if key in CONDITION_ALIASES}
    if not aliases:
        return values
    conditions = _copy_conditions(values.get("conditions"))
    for key, value in aliases.items():
        kind, option = CONDITION_ALIASES[key]
        log.warning("%s: %r is deprecated; use conditions: {%s: {%s: ...}}", where, key, kind, option)
        conditions.setdefault(kind, {})[option] = value
    values["conditions"] = conditions
    return values


def _copy_conditions(conditions) -> dict:
    if conditions is None:
        return {}
    if not isinstance(conditions, dict) or not all(isinstance(v, (dict, type(None))) for v in conditions.values()):
        raise ConfigError(f"conditions must be a mapping {{kind: {{option: value}}}}, got {conditions!r}")
    return {kind: dict(options or {}) for kind, options in conditions.items()}


def load_config(path: str | Path | None = None, **overrides) -> TranslateConfig:
    """Defaults, then the preset at ``path``, then ``overrides`` whose value is not None.

    ``conditions`` merge option by option (a flag's option replaces the preset's, the preset's
    other options stay); ``canny_low``/``canny_high`` are deprecated aliases of
    ``conditions: {canny: {low_threshold/high_threshold}}``.
    """
    values: dict[str, Any] = {}
    if path is not None:
        values.update(read_preset(path))
    given = {k: v for k, v in overrides.items() if v is not None}
    check_removed(given, "overrides")
    check_keys(given, [*FIELDS, *CONDITION_ALIASES], "overrides")
    given = _fold_aliases(given, "overrides")
    if "conditions" in given:
        merged = _copy_conditions(values.get("conditions"))
        for kind, options in _copy_conditions(given["conditions"]).items():
            merged.setdefault(kind, {}).update(options)
        given["conditions"] = merged
    values.update(given)
    try:
        return TranslateConfig(**values)
    except TypeError as exc:
        raise ConfigError(f"invalid config: {exc}") from None


def record_path(output: str | Path) -> Path:
    """Where the resolved config of ``output`` is written: ``OUTPUT.vidreal.yaml``."""
    output = Path(output)
    return output.with_name(output.name + ".vidreal.yaml")


def write_config(path: str | Path, config: TranslateConfig, extra: dict[str, Any] | None = None,
                 files=None) -> Path:
    """Write the resolved config as YAML, atomically; ``extra`` (e.g. metrics) goes under ``result:``.

    The file is itself a valid preset: ``--config OUTPUT.vidreal.yaml`` reproduces the run.
    ``files``: a ``vidreal.io.OutputFiles`` of the run this record belongs to; the record is then
    moved into place with that run's other files, or not at all. OutputError (one line) when it
    cannot be written (e.g. a full disk).
    """
    from vidreal import __version__
    from vidreal.io import OutputFiles

    data = {"vidreal_version": __version__, **config.to_dict()}
    if extra:
        data["result"] = extra
    text = yaml.safe_dump(data, sort_keys=False)
    if files is not None:
        return files.text(path, text)
    with OutputFiles() as own:
        own.text(path, text)
    return Path(path)

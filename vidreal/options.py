"""The options of one translation run: ``TranslateOptions``, frozen, checked once, passed whole.

    options = TranslateOptions.from_config(config)          # or TranslateOptions(steps=4, guidance=1.0)
    options = options.replace(num_inference_steps=10)       # DESIGN.md's names work as overrides
    scales, starts, ends = options.per_kind(["canny", "pose"])   # per ControlNet; checks the names
    options.in_effect()                                     # only the options that change the output

Every value is checked in ``__post_init__`` (one check function per rule, ``vidreal.checks``), so
``TranslateConfig`` and the ``Translator`` API refuse the same values with the same ConfigError.
Defaults are those of the Translator API (no negative prompt, the input's size); the config's
defaults come in through :meth:`TranslateOptions.from_config`. Torch-free.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from vidreal import checks, samplers
from vidreal.errors import ConfigError
from vidreal.runtime import CONSISTENCY_MODES, check_keys

DEFAULT_FLOW_BAND = (0.2, 0.8)
KV_CACHE = ("device", "cpu", "off")
FLOW_METHODS = ("dis", "dis-fast", "farneback", "raft", "raft-small")  # vidreal.flow.FLOW_METHODS
MAX_STEPS = 1000  # the scheduler's training timesteps (SD 1.5): more steps than that repeat timesteps
TIMING_DEFAULTS = {"control_start": 0.0, "control_end": 1.0}
ALIASES = {"num_inference_steps": "steps", "guidance_scale": "guidance"}  # Translator API names (DESIGN.md)


@dataclass(frozen=True)
class TranslateOptions:
    """Everything one translation run needs besides its frames, conditions and prompt.
    The fields are the TranslateConfig keys of the same names (configs/default.yaml)."""

    negative_prompt: str | None = None
    steps: int = 20
    guidance: float = 9.0
    controlnet_scale: float | dict | None = None  # one for all, or {kind: scale}; missing kinds 1.0
    seed: int = 0
    chunk_size: int = 8
    consistency: str = "cross-frame"
    size: int | None = None  # working resolution (short side); None: the input's
    control_start: float | dict = 0.0  # one for all, or {kind: fraction}
    control_end: float | dict = 1.0
    guess_mode: bool = False
    keyframe_every: int | str | None = None  # K, or "auto" (a keyframe where the source changes enough)
    keyframe_max_gap: int = 16  # auto: at most this many frames between keyframes
    keyframe_threshold: float = 0.1  # auto: the change (0..1) that makes a keyframe
    refine: float | None = None
    flow_band: tuple = DEFAULT_FLOW_BAND
    flow_method: str = "dis"
    flow_size: int | None = None  # short side flows are estimated at; None: the working size
    kv_cache: str = "device"
    scheduler: str | None = None  # vidreal's name (aliases are resolved)
    eta: float | None = None
    deepcache_interval: int = 0

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        put("negative_prompt", checks.string("negative_prompt", self.negative_prompt, none=True))
        put("steps", checks.positive_int("steps", self.steps, maximum=MAX_STEPS))
        put("guidance", checks.finite("guidance", self.guidance))
        put("controlnet_scale", _scales(self.controlnet_scale))
        put("seed", checks.positive_int("seed", self.seed, minimum=0))
        put("chunk_size", checks.positive_int("chunk_size", self.chunk_size))
        checks.one_of("consistency", self.consistency, CONSISTENCY_MODES)
        put("size", checks.positive_int("size", self.size, minimum=8, none=True))
        for name in TIMING_DEFAULTS:
            put(name, _timing(name, getattr(self, name)))
        if not isinstance(self.control_start, dict) and not isinstance(self.control_end, dict):
            _check_span(self.control_start, self.control_end)
        put("guess_mode", checks.flag("guess_mode", self.guess_mode))
        if self.keyframe_every != "auto":
            put("keyframe_every", checks.positive_int("keyframe_every", self.keyframe_every, none=True,
                                                      hint=' (or "auto")'))
        put("keyframe_max_gap", checks.positive_int("keyframe_max_gap", self.keyframe_max_gap))
        put("keyframe_threshold", checks.number("keyframe_threshold", self.keyframe_threshold, 0, 1))
        put("refine", checks.number("refine", self.refine, 0, 1, none=True))
        if self.refine and (self.keyframe_every or 1) == 1:
            raise ConfigError(f"refine {self.refine:g} needs keyframe_every > 1: it repairs propagated frames")
        put("flow_band", _flow_band(self.flow_band))
        checks.one_of("flow_method", self.flow_method, FLOW_METHODS)
        put("flow_size", checks.positive_int("flow_size", self.flow_size, minimum=16, none=True))
        checks.one_of("kv_cache", self.kv_cache, KV_CACHE)
        if self.kv_cache == "off" and (self.consistency in ("memory", "flow") or
                                       (self.refine and self.consistency == "cross-frame")):
            raise ConfigError(f"kv_cache off works with cross-frame without refine only; {self.consistency!r}"
                              f"{' with refine' if self.refine else ''} needs the frame memory (kv_cache device or cpu)")
        put("scheduler", samplers.resolve(self.scheduler))
        put("eta", checks.number("eta", self.eta, 0, 1, none=True))
        samplers.check_eta(self.eta, self.scheduler)
        put("deepcache_interval", checks.positive_int("deepcache_interval", self.deepcache_interval, minimum=0,
                                                      hint=" (0 or 1: off)"))

    @classmethod
    def from_config(cls, config) -> "TranslateOptions":
        """The options of a ``TranslateConfig`` (its fields of the same names)."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})

    def replace(self, **overrides) -> "TranslateOptions":
        """A copy with ``overrides`` (field names, or the API's ``num_inference_steps`` /
        ``guidance_scale``), checked; ConfigError naming an unknown option."""
        if not overrides:
            return self
        check_keys(overrides, [*OPTION_NAMES, *ALIASES], what="translation option")
        given = {ALIASES.get(k, k): v for k, v in overrides.items()}
        both = [k for k in ALIASES if k in overrides and ALIASES[k] in overrides]
        if both:
            raise ConfigError(f"{both[0]} and {ALIASES[both[0]]} are the same option: give one")
        return dataclasses.replace(self, **given)

    def per_kind(self, kinds) -> tuple[list[float], list[float], list[float]]:
        """(scales, starts, ends), one per ControlNet kind in ``kinds``; ConfigError for a kind
        they name that is not among ``kinds``, or a start not before its end."""
        kinds = list(kinds)
        scale = self.controlnet_scale
        scales = ([1.0 if scale is None else scale] * len(kinds) if not isinstance(scale, dict)
                  else _for_kinds("controlnet_scale", scale, kinds, 1.0))
        starts, ends = (_for_kinds(name, getattr(self, name), kinds, default)
                        for name, default in TIMING_DEFAULTS.items())
        for kind, start, end in zip(kinds, starts, ends):
            _check_span(start, end, kind if len(kinds) > 1 else None)
        return scales, starts, ends

    def in_effect(self, kinds=None) -> dict[str, Any]:
        """The options that change the output, each written one way (equal settings, equal dicts):
        ``negative_prompt`` and ``guess_mode`` only under guidance (> 1); ``keyframe_every`` only
        above 1, ``refine`` only when on, ``keyframe_max_gap``/``keyframe_threshold`` only for
        ``auto``; ``flow_band`` only in ``flow`` mode; ``flow_method``/``flow_size`` only where flows
        are estimated (keyframes, flow mode); ``eta`` only for schedulers that take it (or the
        model's own); the approximations only when on. Where the frame memory lives (``kv_cache``)
        never changes it; ``chunk_size`` changes it only by rounding, and counts. Per-kind values are resolved over ``kinds`` when given (ControlNet scales
        of 1.0 and timings equal for every kind are written as the plain defaults)."""
        guided = self.guidance > 1.0
        keyframes = self.keyframe_every not in (None, 1)
        out: dict[str, Any] = {name: getattr(self, name) for name in ("steps", "guidance", "seed", "chunk_size",
                                                                      "consistency", "size", "scheduler")}
        out["controlnet_scale"] = _scale_in_effect(self.controlnet_scale, kinds)
        for name, default in TIMING_DEFAULTS.items():
            out[name] = _timing_in_effect(getattr(self, name), default, kinds)
        if guided:
            out["negative_prompt"] = self.negative_prompt
            out["guess_mode"] = self.guess_mode
        if keyframes:
            out["keyframe_every"] = self.keyframe_every
            if self.refine:
                out["refine"] = self.refine
        if self.keyframe_every == "auto":
            out["keyframe_max_gap"] = self.keyframe_max_gap
            out["keyframe_threshold"] = self.keyframe_threshold
        if self.consistency == "flow":
            out["flow_band"] = list(self.flow_band)
        if keyframes or self.consistency == "flow":
            out["flow_method"] = self.flow_method
            out["flow_size"] = self.flow_size
        if self.eta is not None and (self.scheduler is None or self.scheduler in samplers.WITH_ETA):
            out["eta"] = self.eta
        if self.deepcache_interval >= 2:
            out["deepcache_interval"] = self.deepcache_interval
        return out


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(TranslateOptions))


def _scales(value):
    """controlnet_scale: None, one finite number, or {kind: finite number}."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {str(kind): checks.finite(f"controlnet_scale.{kind}", scale) for kind, scale in value.items()}
    return checks.finite("controlnet_scale", value)


def _timing(name, value):
    """control_start/end: a number, or {kind: number} (checked against each other per kind later)."""
    if isinstance(value, dict):
        return {str(kind): _fraction(name, number, value) for kind, number in value.items()}
    return _fraction(name, value, value)


def _fraction(name, number, given) -> float:
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise ConfigError(f"{name} must be a number or {{kind: number}}, got {given!r}")
    return checks.finite(name, number)


def _check_span(start, end, kind=None) -> None:
    if not 0 <= start < end <= 1:
        raise ConfigError(f"control_start ({start:g}) must be < control_end ({end:g}), both in [0, 1]"
                          + (f", for the {kind} ControlNet" if kind else ""))


def _for_kinds(name, value, kinds, default) -> list[float]:
    """A value for every kind: one number for all, or {kind: number} (missing kinds: ``default``)."""
    if not isinstance(value, dict):
        return [value] * len(kinds)
    unknown = set(value) - set(kinds)
    if unknown:
        raise ConfigError(f"{name} names {sorted(unknown)} not among controlnets {kinds}")
    return [value.get(kind, default) for kind in kinds]


def _flow_band(value) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"flow_band must be two numbers [start, end], got {value!r}") from None
    if isinstance(value, str) or not 0 <= lo <= hi <= 1:
        raise ConfigError(f"flow_band must satisfy 0 <= start <= end <= 1, got {value!r}")
    return lo, hi


def _scale_in_effect(value, kinds) -> dict | float:
    """{kind: scale} of the scales that are not 1.0 ({} when none is); a number stays a number
    when the kinds are not known."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        if kinds is None:
            return {} if value == 1.0 else value
        value = {kind: value for kind in kinds}
    return {kind: scale for kind, scale in value.items() if scale != 1.0}


def _timing_in_effect(value, default, kinds):
    """One number when every kind has the same, else {kind: number} of those not at ``default``."""
    if not isinstance(value, dict):
        return value
    per_kind = {kind: value.get(kind, default) for kind in kinds} if kinds is not None else dict(value)
    if kinds is not None and len(set(per_kind.values())) == 1:
        return next(iter(per_kind.values()))
    return {kind: number for kind, number in per_kind.items() if number != default} or default

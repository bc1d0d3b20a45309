"""Scheduler (sampler) names: vidreal's, the aliases users bring, and the diffusers class each builds.

Torch-free, so the config checks a name before anything loads; ``pipeline/schedulers.py`` builds
the scheduler from this table.

    resolve("DPMSolverMultistepScheduler")   # -> "dpm++2m"
    resolve("euler_ancestral")               # -> "euler-a" (ComfyUI)
    resolve("dpm++3m")                       # ConfigError: unknown scheduler ...; did you mean 'dpm++2m'?

vidreal's names follow the A1111/ComfyUI spellings users know. ``dpm++sde`` is diffusers' SDE variant
of DPM-Solver++ (multistep: A1111's "DPM++ 2M SDE", ComfyUI's ``dpmpp_2m_sde``); the single-step
"DPM++ SDE" (ComfyUI ``dpmpp_sde``) needs the extra ``torchsde`` package and is not offered.
"""
from __future__ import annotations

from vidreal.checks import did_you_mean
from vidreal.errors import ConfigError

# name -> (diffusers class name, overrides of the model's scheduler config)
SCHEDULERS: dict[str, tuple[str, dict]] = {
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpm++2m-karras": ("DPMSolverMultistepScheduler",
                       {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "dpm++sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
    "tcd": ("TCDScheduler", {}),
}
SCHEDULER_NAMES = tuple(SCHEDULERS)
WITH_ETA = ("ddim", "tcd")  # schedulers whose step takes eta

# names users bring (compared ignoring case) -> vidreal's name
ALIASES: dict[str, str] = {
    # diffusers classes (DPMSolverMultistepScheduler's defaults are DPM++ 2M)
    "pndmscheduler": "pndm", "ddimscheduler": "ddim", "ddpmscheduler": "ddpm", "eulerdiscretescheduler": "euler",
    "eulerancestraldiscretescheduler": "euler-a", "dpmsolvermultistepscheduler": "dpm++2m",
    "unipcmultistepscheduler": "unipc", "lcmscheduler": "lcm", "tcdscheduler": "tcd",
    # ComfyUI samplers (a _karras suffix: its karras scheduler)
    "euler_ancestral": "euler-a", "dpmpp_2m": "dpm++2m", "dpmpp_2m_karras": "dpm++2m-karras",
    "dpmpp_2m_sde": "dpm++sde", "uni_pc": "unipc",
    # A1111 sampler names
    "euler a": "euler-a", "dpm++ 2m": "dpm++2m", "dpm++ 2m karras": "dpm++2m-karras", "dpm++ 2m sde": "dpm++sde",
}


def resolve(name: str | None) -> str | None:
    """vidreal's name for ``name`` (one of :data:`SCHEDULER_NAMES`, or an alias in :data:`ALIASES`,
    any case); None stays None (the model's own). ConfigError listing the valid names, with the
    closest one, otherwise."""
    if name is None or name in SCHEDULERS:
        return name
    if isinstance(name, str):
        key = name.strip().lower()
        if key in SCHEDULERS or key in ALIASES:
            return ALIASES.get(key, key)
    hint = did_you_mean(name, [*SCHEDULER_NAMES, *ALIASES])
    raise ConfigError(f"unknown scheduler {name!r}{hint or ';'} valid: {', '.join(SCHEDULER_NAMES)} "
                      "(or null for the model's own; diffusers class and ComfyUI names are accepted too)")


def check_eta(eta, scheduler: str | None) -> None:
    """ConfigError when ``eta`` is given to a named scheduler (vidreal's name) whose step takes none."""
    if eta is not None and scheduler is not None and scheduler not in WITH_ETA:
        raise ConfigError(f"eta applies to the {', '.join(WITH_ETA)} schedulers, not {scheduler}")

"""Schedulers by name: a table name -> (diffusers class, config overrides), built ``from_config``.

    scheduler = make_scheduler("euler-a", pipe.scheduler)
    kwargs = step_kwargs(scheduler, generators, eta=None)   # what ``scheduler.step`` accepts

Every scheduler is built from the model's own scheduler config (betas, timestep spacing, offset,
prediction type), so a name changes only the sampling method; ``None`` (the default) rebuilds the
model's own class (PNDM for SD 1.5), which leaves outputs exactly as before.

Names follow the A1111/ComfyUI spellings users know. ``dpm++sde`` is diffusers' SDE variant of
DPM-Solver++ (multistep, A1111's "DPM++ 2M SDE"): the single-step "DPM++ SDE" needs the extra
``torchsde`` package. ``lcm`` and ``tcd`` are the schedulers of LCM-LoRA / Hyper-SD and TCD LoRAs
(4-8 steps, guidance ~1-2; see ``configs/fast.yaml``).

Stochastic schedulers (``euler-a``, ``dpm++sde``, ``ddpm``, ``lcm``, ``tcd``, ``ddim`` with
``eta > 0``) draw noise in ``step``: they get one generator per frame (``step_kwargs``), so the
result is deterministic and does not depend on how the clip is cut into batches.
"""
from __future__ import annotations

import inspect

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


def check_scheduler(name: str | None) -> str | None:
    """``name`` if it is None or in :data:`SCHEDULERS`; ConfigError listing the valid names otherwise."""
    if name is not None and name not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler {name!r}; valid: {', '.join(SCHEDULER_NAMES)} "
                          "(or null for the model's own)")
    return name


def make_scheduler(name: str | None, model_scheduler):
    """A fresh scheduler built from ``model_scheduler``'s config: the class ``name`` picks in
    :data:`SCHEDULERS` with its overrides, or (``None``) the model's own class unchanged."""
    import diffusers

    check_scheduler(name)
    if name is None:
        return model_scheduler.__class__.from_config(model_scheduler.config)
    cls_name, overrides = SCHEDULERS[name]
    return getattr(diffusers, cls_name).from_config(model_scheduler.config, **overrides)


def accepts_eta(scheduler) -> bool:
    """True when ``scheduler.step`` takes ``eta`` (DDIM, TCD)."""
    return "eta" in inspect.signature(scheduler.step).parameters


def step_kwargs(scheduler, generators, eta: float | None = None) -> dict:
    """Keyword arguments for ``scheduler.step``: the per-frame ``generators`` (a list, one
    ``torch.Generator`` per latent in the batch) where it draws noise, and ``eta`` where it applies.

    Raises ConfigError when ``eta`` is given to a scheduler without it.
    """
    params = inspect.signature(scheduler.step).parameters
    kwargs = {"generator": generators} if "generator" in params else {}
    if eta is not None:
        if "eta" not in params:
            with_eta = [n for n, (cls, _) in SCHEDULERS.items() if cls in ("DDIMScheduler", "TCDScheduler")]
            raise ConfigError(f"eta applies to the {', '.join(with_eta)} schedulers, not {type(scheduler).__name__}")
        kwargs["eta"] = float(eta)
    return kwargs

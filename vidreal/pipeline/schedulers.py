"""Schedulers by name, built ``from_config`` (the names and their diffusers classes: ``vidreal.samplers``).

    scheduler = make_scheduler("euler-a", pipe.scheduler)
    kwargs = step_kwargs(scheduler, generators, eta=None)   # what ``scheduler.step`` accepts

Every scheduler is built from the model's own scheduler config (betas, timestep spacing, offset,
prediction type), so a name changes only the sampling method; ``None`` (the default) rebuilds the
model's own class (PNDM for SD 1.5), which leaves outputs exactly as before. ``lcm`` and ``tcd``
are the schedulers of LCM-LoRA / Hyper-SD and TCD LoRAs (4-8 steps, guidance ~1-2; see
``configs/fast.yaml``).

Stochastic schedulers (``euler-a``, ``dpm++sde``, ``ddpm``, ``lcm``, ``tcd``, ``ddim`` with
``eta > 0``) draw noise in ``step``: they get one generator per frame (``step_kwargs``), so the
result is deterministic and does not depend on how the clip is cut into batches.
"""
from __future__ import annotations

import inspect

from vidreal.errors import ConfigError
from vidreal.samplers import SCHEDULER_NAMES, SCHEDULERS, WITH_ETA, resolve

__all__ = ["SCHEDULERS", "SCHEDULER_NAMES", "make_scheduler", "step_kwargs"]


def make_scheduler(name: str | None, model_scheduler):
    """A fresh scheduler built from ``model_scheduler``'s config: the class ``name`` (or the alias
    of one) picks in ``vidreal.samplers.SCHEDULERS``, with its overrides, or (``None``) the
    model's own class unchanged."""
    import diffusers

    name = resolve(name)
    if name is None:
        return model_scheduler.__class__.from_config(model_scheduler.config)
    cls_name, overrides = SCHEDULERS[name]
    return getattr(diffusers, cls_name).from_config(model_scheduler.config, **overrides)


def step_kwargs(scheduler, generators, eta: float | None = None) -> dict:
    """Keyword arguments for ``scheduler.step``: the per-frame ``generators`` (a list, one
    ``torch.Generator`` per latent in the batch) where it draws noise, and ``eta`` where it applies.

    Raises ConfigError when ``eta`` is given to a scheduler without it.
    """
    params = inspect.signature(scheduler.step).parameters
    kwargs = {"generator": generators} if "generator" in params else {}
    if eta is not None:
        if "eta" not in params:
            raise ConfigError(f"eta applies to the {', '.join(WITH_ETA)} schedulers, not {type(scheduler).__name__}")
        kwargs["eta"] = float(eta)
    return kwargs

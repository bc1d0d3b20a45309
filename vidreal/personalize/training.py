"""The optimisation loop shared by DreamBooth and Textual Inversion.

* reproducible randomness: every random draw of (micro-)step ``k`` comes from
  :func:`step_generator` ``(seed, k)``;
* :func:`diffusion_loss`: the one denoising-loss step both methods train with (VAE latents,
  noise, timesteps, the UNet's prediction against its target, optional prior preservation);
* accelerate: :func:`make_accelerator`, :func:`make_optimizer` and :func:`run_training`
  (gradient accumulation, clipping, progress bar with the loss, periodic checkpoints).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidreal.errors import ConfigError
from vidreal.personalize import checkpoints

log = logging.getLogger(__name__)

MIXED_PRECISIONS = ("auto", "no", "fp16", "bf16")
WEIGHT_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def check_positive(**values) -> None:
    """ConfigError for the first value that is not a positive finite number (int where given an int)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"{name} must be positive, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")


def step_seed(seed: int, step: int) -> int:
    """A seed for the random draws of (micro-)step ``step`` of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0]) >> 1


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator for step ``step``; draw on the CPU, then move, so devices agree."""
    return torch.Generator("cpu").manual_seed(step_seed(seed, step))


def resolve_mixed_precision(mixed_precision: str, device: str | None) -> str:
    """"auto" -> bf16 on a GPU that has it, else fp16 on GPU, "no" on CPU/MPS."""
    if mixed_precision not in MIXED_PRECISIONS:
        raise ConfigError(f"mixed_precision must be one of {', '.join(MIXED_PRECISIONS)}, got {mixed_precision!r}")
    on_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if mixed_precision == "auto":
        if not on_cuda:
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if mixed_precision != "no" and not on_cuda:
        raise ConfigError(f"mixed_precision {mixed_precision!r} needs a CUDA device; use 'no' on {device or 'cpu'}")
    return mixed_precision


def make_accelerator(device: str | None, mixed_precision: str):
    """An ``accelerate.Accelerator`` on ``device`` (None = auto) with ``mixed_precision``.

    Gradient accumulation is done by :func:`run_training` itself (so resuming never depends on
    accelerate's internal micro-step counter). One process may train several times (tests, a
    notebook): a single-process state left by an earlier run with other settings is reset.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if device is not None and device.startswith("cuda:"):
        torch.cuda.set_device(torch.device(device))
    cpu = device == "cpu"
    try:
        return Accelerator(mixed_precision=mixed_precision, cpu=cpu)
    except ValueError as exc:
        if "already been initialized" not in str(exc) or AcceleratorState().num_processes != 1:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(mixed_precision=mixed_precision, cpu=cpu)


def make_optimizer(params, lr: float, device: torch.device, use_8bit: bool = True,
                   weight_decay: float = 1e-2):
    """8-bit AdamW (bitsandbytes) on CUDA when installed, else torch AdamW; the choice is logged.

    Returns (optimizer, name).
    """
    if use_8bit and device.type == "cuda":
        try:
            import bitsandbytes as bnb

            log.info("optimizer: 8-bit AdamW (bitsandbytes)")
            return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay), "adamw-8bit"
        except ImportError:
            log.info("optimizer: torch AdamW (bitsandbytes is not installed: pip install bitsandbytes for 8-bit Adam)")
    else:
        why = "8-bit Adam off" if not use_8bit else f"8-bit Adam needs CUDA, training on {device.type}"
        log.info("optimizer: torch AdamW (%s)", why)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay), "adamw"


def diffusion_loss(vae, unet, noise_scheduler, pixels: torch.Tensor, hidden: torch.Tensor,
                   generator: torch.Generator, prior_loss_weight: float | None = None) -> torch.Tensor:
    """One denoising-loss step: float32 scalar ``mse(unet prediction, target)``.

    pixels: (B, 3, R, R) in [-1, 1] on the training device, in the VAE's dtype; hidden: the text
    encoder's (B, L, D) states for the same images. The latent sample, the noise and the
    timesteps are drawn, in that order, from the CPU ``generator`` (so resumed runs repeat
    them); the target is the noise, or the velocity for ``v_prediction`` schedulers. With
    ``prior_loss_weight`` the batch is ``[instance half | class half]`` and the class half's loss
    is added with that weight (DreamBooth's prior preservation).
    """
    device = pixels.device
    with torch.no_grad():
        dist = vae.encode(pixels).latent_dist
        eps = torch.randn(dist.mean.shape, generator=generator).to(device, dist.mean.dtype)
        latents = (dist.mean + dist.std * eps) * vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=generator).to(device, latents.dtype)
    n_train = noise_scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, n_train, (latents.shape[0],), generator=generator).to(device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    pred = unet(noisy, timesteps, hidden).sample
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    if prior_loss_weight is None:
        return F.mse_loss(pred.float(), target.float())
    pred, pred_prior = pred.chunk(2)
    target, target_prior = target.chunk(2)
    return (F.mse_loss(pred.float(), target.float())
            + prior_loss_weight * F.mse_loss(pred_prior.float(), target_prior.float()))


def run_training(accelerator, step_fn: Callable[[int], torch.Tensor], params: Iterable[torch.Tensor],
                 optimizer, *, steps: int, start_step: int = 0, accumulation: int = 1,
                 max_grad_norm: float | None = 1.0, after_step: Callable[[], None] | None = None,
                 out: Path, checkpoint_every: int | None = None, keep_checkpoints: int | None = 2,
                 progress: bool = True, desc: str = "training") -> list[float]:
    """Optimizer steps ``start_step .. steps-1``; returns each step's loss (float).

    ``step_fn(k)`` computes the loss of micro-step ``k = step * accumulation + i`` (all its
    randomness derives from ``k``); gradients of ``accumulation`` micro-steps are summed (loss
    divided by ``accumulation``) before each optimizer step. ``after_step()`` runs after each
    optimizer step (Textual Inversion restores frozen embedding rows there). A checkpoint is
    saved after every ``checkpoint_every``-th step.
    """
    from vidreal.progress import bar as tqdm  # tqdm on a terminal, plain lines in a log, off under -q

    params = list(params)
    losses: list[float] = []
    bar = tqdm(total=steps, initial=start_step, desc=desc, disable=not progress, unit="step")
    try:
        for step in range(start_step, steps):
            total = 0.0
            for micro in range(accumulation):
                with accelerator.autocast():
                    loss = step_fn(step * accumulation + micro)
                accelerator.backward(loss / accumulation)
                total += float(loss.detach()) / accumulation
            if max_grad_norm:
                accelerator.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if after_step is not None:
                after_step()
            if not np.isfinite(total):
                log.warning("step %d: loss is %s", step + 1, total)
            losses.append(total)
            bar.set_postfix(loss=f"{total:.4f}")
            bar.update(1)
            if checkpoint_every and (step + 1) % checkpoint_every == 0:
                checkpoints.save_checkpoint(accelerator, out, step + 1, keep_checkpoints)
    finally:
        bar.close()
    return losses


def free_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

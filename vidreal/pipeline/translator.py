"""Temporally consistent MultiControlNet translation of a clip: ``Translator``.

Reads like diffusers' ``StableDiffusionControlNetPipeline.__call__`` (whose components it uses), with
three changes that keep a clip consistent over time:

* shared latent noise: every frame starts from the one latent diffusers would draw for a single
  image with ``torch.Generator("cpu").manual_seed(seed)`` (``per-frame`` mode draws frame i with
  ``seed + i`` instead, so frame 0 is the same in every mode);
* cross-frame attention (``cross-frame`` mode): UNet self-attention reads keys/values from the
  anchor frame (frame 0), see ``attention.py``;
* chunked denoising: frames go through in chunks of ``chunk_size``; in ``cross-frame`` mode every
  chunk after the first carries the anchor along (its output is dropped), so each frame attends to
  the same anchor and the result does not depend on ``chunk_size``, while memory depends on
  ``chunk_size`` only.

Hence a one-frame call equals the stock pipeline's output for the same components and inputs.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext

import numpy as np
import torch
from tqdm.auto import tqdm

from vidreal.errors import InputError, ModelError
from vidreal.io import resize_frames
from vidreal.pipeline.attention import FrameLayout, cross_frame_attention
from vidreal.pipeline.schedulers import make_scheduler, step_kwargs

log = logging.getLogger("vidreal")

CONSISTENCY_MODES = ("per-frame", "shared-noise", "cross-frame")


class Translator:
    """SD 1.5 + N ControlNets, translating uint8 (T, H, W, 3) RGB frames.

    Build it with :meth:`from_pretrained`; ``pipe`` is the underlying diffusers
    ``StableDiffusionControlNetPipeline`` and ``controlnet_names`` the condition kind each
    ControlNet reads, in order.
    """

    def __init__(self, pipe, controlnet_names):
        self.pipe = pipe
        self.controlnet_names = list(controlnet_names)
        n_nets = len(getattr(pipe.controlnet, "nets", [pipe.controlnet]))
        if n_nets != len(self.controlnet_names):
            raise ValueError(f"{n_nets} ControlNets but {len(self.controlnet_names)} names {self.controlnet_names}")

    @classmethod
    def from_pretrained(cls, model=None, controlnets=None, device=None, dtype=None, embeddings=(), lora=None,
                        lora_scale=1.0, allow_pickle=False, model_config=None) -> "Translator":
        """Load SD 1.5 (hub id, diffusers folder or single ``.safetensors``) and ControlNets.

        ``controlnets`` maps a condition kind (``canny``, ``pose``, ...) to its weights; the
        defaults are SD 1.5 with the canny and openpose ControlNets from the hub.
        """
        from vidreal.config import DEFAULT_CONTROLNETS, DEFAULT_MODEL
        from vidreal.pipeline.loading import load_pipeline

        controlnets = dict(controlnets or DEFAULT_CONTROLNETS)
        pipe = load_pipeline(model or DEFAULT_MODEL, controlnets, device=device, dtype=dtype, embeddings=embeddings,
                             lora=lora, lora_scale=lora_scale, allow_pickle=allow_pickle, model_config=model_config)
        return cls(pipe, list(controlnets))

    def compile(self) -> None:
        """``torch.compile`` the UNet's and the ControlNets' forward passes, in place.

        Each new batch shape (and consistency mode) compiles on its first call - a minute or two
        for SD 1.5 -, later calls run faster: 5.5 against 3.8 frames/s on an H200 (512 px, 20
        steps, 2 ControlNets, fp16; ``tools/bench_translate.py --tuning``). Worth it for long
        clips and batches. Outputs match the uncompiled ones up to rounding.
        """
        pipe = self.pipe
        for net in [pipe.unet, *getattr(pipe.controlnet, "nets", [pipe.controlnet])]:
            net.forward = torch.compile(net.forward)

    # ---------------------------------------------------------------- helpers
    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    @property
    def size_multiple(self) -> int:
        """Working sizes must be multiples of this: the VAE's factor times the UNet's downsampling."""
        unet_factor = 2 ** (len(self.pipe.unet.config.block_out_channels) - 1)
        return self.pipe.vae_scale_factor * unet_factor

    def working_size(self, height: int, width: int, size: int | None = 512) -> tuple[int, int]:
        """(h, w) to denoise at: short side ``size`` (None: the input's), aspect kept, rounded."""
        m = self.size_multiple
        scale = 1.0 if size is None else size / min(height, width)
        return (max(m, round(height * scale / m) * m), max(m, round(width * scale / m) * m))

    def check_inputs(self, frames, conditions, consistency, chunk_size):
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise InputError(f"frames must be uint8 (T, H, W, 3), got {getattr(frames, 'dtype', type(frames))} "
                             f"{getattr(frames, 'shape', '')}")
        if len(frames) == 0:
            raise InputError("frames is empty (T == 0)")
        missing = [name for name in self.controlnet_names if name not in conditions]
        if missing:
            raise InputError(f"conditions lack {missing}; the ControlNets read {self.controlnet_names}")
        for name in self.controlnet_names:
            cond = conditions[name]
            if cond.dtype != np.uint8 or cond.shape[:1] != frames.shape[:1] or cond.ndim != 4 or cond.shape[-1] != 3:
                raise InputError(f"condition {name!r} must be uint8 ({len(frames)}, H, W, 3), got {cond.dtype} {cond.shape}")
        if consistency not in CONSISTENCY_MODES:
            raise ValueError(f"consistency must be one of {CONSISTENCY_MODES}, got {consistency!r}")
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")

    def _to_tensor(self, images: np.ndarray, size: tuple[int, int], dtype) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> float (N, 3, h, w) in [0, 1] on the device (as diffusers' control images)."""
        images = resize_frames(images, *size)
        tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
        return tensor.to(self.device, dtype)

    def _initial_latents(self, shape, seeds, dtype) -> tuple[torch.Tensor, list[torch.Generator]]:
        """(len(seeds), C, h, w) noise and one generator per latent.

        Each latent is drawn exactly as diffusers draws one image's latent with
        ``generator=torch.Generator("cpu").manual_seed(seed)``; its generator, left where that draw
        left it, then feeds the scheduler's noise for that frame (as the stock pipeline passes its
        generator on to ``scheduler.step``), so stochastic schedulers are seeded per frame.
        """
        from diffusers.utils.torch_utils import randn_tensor

        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        latents = [randn_tensor((1, *shape), generator=g, device=self.device, dtype=dtype) for g in generators]
        return torch.cat(latents), generators

    # ---------------------------------------------------------------- main
    @torch.no_grad()
    def __call__(self, frames, conditions, prompt, negative_prompt=None, num_inference_steps=20, guidance_scale=9.0,
                 controlnet_scale=None, seed=0, chunk_size=8, consistency="cross-frame", size=None, progress=True,
                 scheduler=None, eta=None):
        """Translate a clip held in memory.

        Args:
            frames: uint8 (T, H, W, 3) RGB.
            conditions: {kind: uint8 (T, H', W', 3)} for every ControlNet kind; resized to the working size.
            controlnet_scale: float, or {kind: float}; default 1.0 each.
            size: working resolution (short side); None denoises at the input size (rounded).
            scheduler: a name of ``schedulers.SCHEDULERS`` (``euler-a``, ``dpm++2m-karras``, ``lcm``...);
                None keeps the model's own (PNDM for SD 1.5). eta: DDIM/TCD's eta (None: theirs).
        Returns:
            uint8 (T, H, W, 3) RGB at the input's size.
        """
        self.check_inputs(frames, conditions, consistency, chunk_size)
        pieces = [(frames[i:i + chunk_size], {k: v[i:i + chunk_size] for k, v in conditions.items()})
                  for i in range(0, len(frames), chunk_size)]
        return np.concatenate(list(self.stream(
            pieces, prompt, negative_prompt, num_inference_steps, guidance_scale, controlnet_scale, seed,
            chunk_size, consistency, size, progress, n_frames=len(frames), scheduler=scheduler, eta=eta)))

    @torch.no_grad()
    def stream(self, pieces, prompt, negative_prompt=None, num_inference_steps=20, guidance_scale=9.0,
               controlnet_scale=None, seed=0, chunk_size=8, consistency="cross-frame", size=None, progress=True,
               n_frames=None, scheduler=None, eta=None):
        """Translate a clip that arrives in pieces; yields uint8 (n, H, W, 3) outputs in frame order.

        ``pieces`` yields ``(frames uint8 (n, H, W, 3), {kind: uint8 (n, H', W', 3)})`` of any
        lengths. They are regrouped into denoising batches of ``chunk_size`` frames (a carried
        anchor included), so memory depends on ``chunk_size``, never on the clip's length, and the
        output does not depend on how the clip was cut. ``n_frames`` (if known) sizes the progress bar.
        """
        pipe = self.pipe
        cfg = guidance_scale > 1.0 and pipe.unet.config.time_cond_proj_dim is None
        scales = _scales(controlnet_scale, self.controlnet_names)
        carry_anchor = consistency == "cross-frame"
        run = dict(pos=None, neg=None, cfg=cfg, guidance_scale=guidance_scale, scales=scales,
                   steps=num_inference_steps, seed=seed, per_frame=consistency == "per-frame",
                   scheduler=scheduler, eta=eta)
        step_kwargs(make_scheduler(scheduler, pipe.scheduler), None, eta)  # a bad name or eta fails here

        # 1. Encode the prompt once for the whole clip
        run["pos"], run["neg"] = pipe.encode_prompt(prompt, self.device, 1, cfg, negative_prompt)
        attention = cross_frame_attention(pipe.unet, FrameLayout(groups=2 if cfg else 1)) if carry_anchor \
            else nullcontext()
        bar = tqdm(total=n_frames, desc="translating", unit="frame", disable=not progress, leave=False)

        shape = work = anchor = None
        received = 0  # frames seen so far: the next frame's index
        pending = []  # (frame index, [control tensor (1, 3, h, w) per ControlNet]) awaiting a batch
        with bar, attention:
            for frames, conditions in pieces:
                # 2. Check each piece; the first one fixes the clip's size and the working size
                self.check_inputs(frames, conditions, consistency, chunk_size)
                if shape is None:
                    shape = frames.shape[1:3]
                    work = self.working_size(*shape, size)
                    f = pipe.vae_scale_factor
                    run["latent_shape"] = (pipe.unet.config.in_channels, work[0] // f, work[1] // f)
                elif frames.shape[1:3] != shape:
                    raise InputError(f"frame size changed mid-clip from {shape} to {frames.shape[1:3]}")
                # 3. Control images at the working size, one tensor per ControlNet
                controls = [self._to_tensor(conditions[k], work, pipe.controlnet.dtype) for k in self.controlnet_names]
                pending += [(received + j, [c[j:j + 1] for c in controls]) for j in range(len(frames))]
                received += len(frames)
                # 4. Denoise batches as they fill up (the anchor rides along after the first)
                while len(pending) >= _batch_size(chunk_size, anchor, carry_anchor):
                    anchor, out = self._next_batch(pending, anchor, chunk_size, carry_anchor, run, shape, bar)
                    yield out
            if shape is None:
                raise InputError("the clip has no frames")
            while pending:
                anchor, out = self._next_batch(pending, anchor, chunk_size, carry_anchor, run, shape, bar)
                yield out

    def _next_batch(self, pending, anchor, chunk_size, carry_anchor, run, shape, bar):
        """Pop, denoise and decode the next batch; returns (anchor, uint8 (n, H, W, 3) frames)."""
        n = _batch_size(chunk_size, anchor, carry_anchor)
        batch, pending[:] = pending[:n], pending[n:]
        anchor = anchor or batch[0]
        carried = carry_anchor and batch[0][0] != anchor[0]
        frames = ([anchor] if carried else []) + batch
        seeds = [run["seed"] + i for i, _ in frames] if run["per_frame"] else [run["seed"]] * len(frames)
        latents, generators = self._initial_latents(run["latent_shape"], seeds, run["pos"].dtype)
        controls = [torch.cat([c[k] for _, c in frames]) for k in range(len(run["scales"]))]
        bar.set_postfix_str(f"frames {batch[0][0]}-{batch[-1][0]}")
        latents = self._denoise(latents, controls, run["pos"], run["neg"], run["cfg"], run["guidance_scale"],
                                run["scales"], run["steps"], bar, run["scheduler"], run["eta"], generators)
        images = resize_frames(self._decode(latents[1:] if carried else latents), *shape)
        bar.update(len(batch))
        return anchor, images

    def _denoise(self, latents, controls, pos, neg, cfg, guidance_scale, scales, steps, bar, scheduler_name=None,
                 eta=None, generators=None):
        """The diffusers ControlNet denoising loop on one chunk of frames (batch = frames);
        ``generators``: one per latent, for the noise stochastic schedulers draw in ``step``."""
        pipe = self.pipe
        n = latents.shape[0]
        scheduler = make_scheduler(scheduler_name, pipe.scheduler)
        step_extra = step_kwargs(scheduler, generators, eta)
        scheduler.set_timesteps(steps, device=self.device)
        latents = latents * scheduler.init_noise_sigma
        embeds = torch.cat([neg.expand(n, -1, -1), pos.expand(n, -1, -1)]) if cfg else pos.expand(n, -1, -1)
        images = [torch.cat([c, c]) if cfg else c for c in controls]
        multi = len(images) > 1
        for t in scheduler.timesteps:
            model_input = torch.cat([latents] * 2) if cfg else latents
            model_input = scheduler.scale_model_input(model_input, t)
            down, mid = pipe.controlnet(
                model_input, t, encoder_hidden_states=embeds,
                controlnet_cond=images if multi else images[0],
                conditioning_scale=scales if multi else scales[0],
                guess_mode=False, return_dict=False,
            )
            noise = pipe.unet(model_input, t, encoder_hidden_states=embeds, down_block_additional_residuals=down,
                              mid_block_additional_residual=mid, return_dict=False)[0]
            if cfg:
                uncond, text = noise.chunk(2)
                noise = uncond + guidance_scale * (text - uncond)
            latents = scheduler.step(noise, t, latents, **step_extra, return_dict=False)[0]
        return latents

    def _decode(self, latents) -> np.ndarray:
        """Latents -> uint8 (N, h, w, 3), as the pipeline's ``output_type="np"`` then rounded."""
        vae = self.pipe.vae
        image = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
        if torch.isnan(image).any():
            raise ModelError(f"the model produced NaN (black) frames in {image.dtype}; "
                             "rerun with --dtype bf16 or --dtype fp32")
        image = (image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()
        return (image * 255).round().astype(np.uint8)


def _batch_size(chunk_size, anchor, carry_anchor) -> int:
    """Frames taken per batch: later batches leave room for the carried anchor."""
    return chunk_size if anchor is None or not carry_anchor else max(chunk_size - 1, 1)


def _scales(controlnet_scale, names) -> list[float]:
    if controlnet_scale is None:
        return [1.0] * len(names)
    if isinstance(controlnet_scale, (int, float)):
        return [float(controlnet_scale)] * len(names)
    unknown = set(controlnet_scale) - set(names)
    if unknown:
        raise ValueError(f"controlnet_scale names {sorted(unknown)} are not ControlNets {names}")
    return [float(controlnet_scale.get(name, 1.0)) for name in names]

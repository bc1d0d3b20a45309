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
from contextlib import closing, nullcontext
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from vidreal import progress as progress_bars
from vidreal.config import DEFAULT_FLOW_BAND, check_correspondence
from vidreal.errors import ConfigError, InputError, ModelError
from vidreal.io import resize_frames
from vidreal.config import check_approximations, check_levers
from vidreal.pipeline.approx import DeepCache, TokenMerge
from vidreal.pipeline.attention import FrameMemory, cross_frame_attention
from vidreal.keyframes import KeyframeChooser
from vidreal.pipeline.fusion import FlowFusion
from vidreal.pipeline.schedulers import make_scheduler, step_kwargs
from vidreal.pipeline.warp import Correspondence, propagate
from vidreal.stages import timed
from vidreal.runtime import CONSISTENCY_MODES, check_finite, check_frames

log = logging.getLogger(__name__)

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
        import diffusers.utils.logging  # noqa: F401 (loading imports them anyway): their bars follow vidreal's
        import transformers.utils.logging  # noqa: F401

        from vidreal.pipeline.loading import load_pipeline

        progress_bars.sync_libraries()

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

    def use_levers(self, levers) -> None:
        """Apply exact-path speed levers (names of ``vidreal.config.LEVERS``), in place; outputs stay
        those of the plain path up to float rounding (<= 1 level in uint8).

        ``fused-qkv``: each attention's query/key/value (self-attention) or key/value (text
        cross-attention) projections become one matrix product (diffusers' ``fuse_projections``)
        in the UNet, the ControlNets and the VAE; the frame attention processors read the fused
        weights. ``channels-last``: the UNet, ControlNets and VAE in channels_last memory format.
        Apply them after LoRAs are fused (loading does that) and before ``compile``.
        """
        from diffusers.models.attention_processor import Attention, FusedAttnProcessor2_0

        pipe = self.pipe
        nets = [pipe.unet, *getattr(pipe.controlnet, "nets", [pipe.controlnet]), pipe.vae]
        levers = check_levers(list(levers))
        if "fused-qkv" in levers:
            for net in nets:
                attentions = [m for m in net.modules() if isinstance(m, Attention)]
                if attentions and not any(getattr(m, "fused_projections", False) for m in attentions):
                    for module in attentions:
                        module.fuse_projections()
                    net.set_attn_processor(FusedAttnProcessor2_0())
        if "channels-last" in levers:
            for net in nets:
                net.to(memory_format=torch.channels_last)
        if levers:
            log.info("speed levers: %s", ", ".join(levers))

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
        check_frames(frames)
        missing = [name for name in self.controlnet_names if name not in conditions]
        if missing:
            raise InputError(f"conditions lack {missing}; the ControlNets read {self.controlnet_names}")
        for name in self.controlnet_names:
            cond = conditions[name]
            if cond.dtype != np.uint8 or cond.shape[:1] != frames.shape[:1] or cond.ndim != 4 or cond.shape[-1] != 3:
                raise InputError(f"condition {name!r} must be uint8 ({len(frames)}, H, W, 3), got {cond.dtype} {cond.shape}")
        if consistency not in CONSISTENCY_MODES:
            raise ConfigError(f"consistency must be one of {', '.join(CONSISTENCY_MODES)}, got {consistency!r}")
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")

    def _to_tensor(self, images: np.ndarray, size: tuple[int, int], dtype) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> float (N, 3, h, w) in [0, 1] on the device (as diffusers' control images)."""
        images = resize_frames(images, *size)
        # contiguous, as diffusers' own control images are: strided inputs change the convolutions'
        # rounding, and a one-frame translation would no longer equal the stock pipeline exactly
        tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().float().div_(255.0)
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
                 keyframe_every=None, refine=None, flow_band=DEFAULT_FLOW_BAND, kv_cache="device", stats=None,
                 control_start=0.0, control_end=1.0, guess_mode=False, scheduler=None, eta=None,
                 deepcache_interval=0, tome_ratio=0.0, keyframe_max_gap=16, keyframe_threshold=0.15, flow_method="dis",
                 flow_size=None):
        """Translate a clip held in memory.

        Args:
            frames: uint8 (T, H, W, 3) RGB.
            conditions: {kind: uint8 (T, H', W', 3)} for every ControlNet kind; resized to the working size.
            controlnet_scale: float, or {kind: float}; default 1.0 each.
            size: working resolution (short side); None denoises at the input size (rounded).
            keyframe_every, refine, flow_band, kv_cache, stats: see :meth:`stream`.
            control_start, control_end: float, or {kind: float}: the fraction of the denoising steps
                where each ControlNet starts and stops acting (diffusers' ``control_guidance_start/end``).
            guess_mode: the ControlNets see only the conditional half under guidance (diffusers' guess mode).
            scheduler: a name of ``schedulers.SCHEDULERS`` (``euler-a``, ``dpm++2m-karras``, ``lcm``...);
                None keeps the model's own (PNDM for SD 1.5). eta: DDIM/TCD's eta (None: theirs).
            deepcache_interval, tome_ratio: opt-in approximations (``approx.py``), see :meth:`stream`.
        Returns:
            uint8 (T, H, W, 3) RGB at the input's size.
        """
        self.check_inputs(frames, conditions, consistency, chunk_size)
        pieces = [(frames[i:i + chunk_size], {k: v[i:i + chunk_size] for k, v in conditions.items()})
                  for i in range(0, len(frames), chunk_size)]
        return np.concatenate(list(self.stream(
            pieces, prompt, negative_prompt, num_inference_steps, guidance_scale, controlnet_scale, seed,
            chunk_size, consistency, size, progress, n_frames=len(frames), keyframe_every=keyframe_every,
            refine=refine, flow_band=flow_band, kv_cache=kv_cache, stats=stats, control_start=control_start,
            control_end=control_end, guess_mode=guess_mode, scheduler=scheduler, eta=eta,
            deepcache_interval=deepcache_interval, tome_ratio=tome_ratio, keyframe_max_gap=keyframe_max_gap,
            keyframe_threshold=keyframe_threshold, flow_method=flow_method, flow_size=flow_size)))

    @torch.no_grad()
    def stream(self, pieces, prompt, negative_prompt=None, num_inference_steps=20, guidance_scale=9.0,
               controlnet_scale=None, seed=0, chunk_size=8, consistency="cross-frame", size=None, progress=True,
               n_frames=None, keyframe_every=None, refine=None, flow_band=DEFAULT_FLOW_BAND, kv_cache="device",
               stats=None, control_start=0.0, control_end=1.0, guess_mode=False, scheduler=None, eta=None,
               deepcache_interval=0, tome_ratio=0.0, keyframe_max_gap=16, keyframe_threshold=0.15, flow_method="dis",
               flow_size=None):
        """Translate a clip that arrives in pieces; yields uint8 (n, H, W, 3) outputs in frame order.

        ``pieces`` yields ``(frames uint8 (n, H, W, 3), {kind: uint8 (n, H', W', 3)})`` of any
        lengths. They are regrouped into denoising batches of ``chunk_size`` frames, so memory
        depends on ``chunk_size``, never on the clip's length, and the output does not depend on
        how the clip was cut. ``n_frames`` (if known) sizes the progress bar.

        Correspondence options (the config keys of the same names):
            consistency: also ``memory`` (each frame attends to the anchor and its previous frame)
                and ``flow`` (memory + flow-guided fusion of predicted latents in ``flow_band``).
            keyframe_every: K; denoise frames 0, K, 2K, ... and the last, build the others from their
                two keyframes along the source flow (``vidreal.propagate``). None (or 1): every frame.
                Frames wait for their right keyframe: at most ``chunk_size * K`` frames are held, and a
                batch's frames are propagated (in a worker pool, with the source flows computed there as
                the frames arrive) while the next batch denoises. ``"auto"``: a keyframe where the source
                changes enough (``vidreal.keyframes``). Pieces may carry the choice made ahead:
                ``(frames, conditions, keys)`` with bool ``keys`` (n,); then only keyframes' conditions are read.
            refine: S in [0, 1]; an img2img pass of strength S over propagated frames (None/0: off).
            flow_band: (start, end) fractions of the denoising steps where ``flow`` fuses.
            kv_cache: where the frame memory lives: ``device``, ``cpu`` (host memory), or ``off``
                (``cross-frame`` only: the anchor is re-denoised in every batch, as before the memory).
            stats: an optional dict, filled with ``keyframes`` (indices), ``propagated``,
                ``unseen_fraction`` (mean share of propagated pixels no keyframe saw) and
                ``frame_memory_bytes`` (peak size of the frame memory and fusion cache).

        Opt-in approximations (off by default; they change the output, not its shape):
            deepcache_interval: N >= 2 runs the full UNet every N-th step and only its shallow
                blocks between, on the deep features kept from the last full step (0 or 1: off).
            tome_ratio: r in (0, 0.75] merges the fraction r of self-attention key/value tokens (0: off).
        """
        check_correspondence(consistency, None if keyframe_every == "auto" else keyframe_every,
                             None if keyframe_every == "auto" else refine, flow_band, kv_cache)
        check_approximations(deepcache_interval, tome_ratio)
        pipe = self.pipe
        guidance_scale = check_finite("guidance_scale", guidance_scale)
        cfg = guidance_scale > 1.0 and pipe.unet.config.time_cond_proj_dim is None
        scales = _scales(controlnet_scale, self.controlnet_names)
        control_schedule(scales, control_start, control_end, 1, self.controlnet_names)  # validates
        step_kwargs(make_scheduler(scheduler, pipe.scheduler), None, eta)  # a bad name or eta fails here
        attend = {"cross-frame": "anchor", "memory": "anchor+previous", "flow": "anchor+previous"}.get(consistency)
        memory = None if attend is None else FrameMemory(attend, None if kv_cache == "off" else kv_cache,
                                                         groups=2 if cfg else 1)
        if consistency == "flow" and pipe.scheduler.config.get("prediction_type", "epsilon") != "epsilon":
            raise ConfigError("consistency 'flow' needs an epsilon-prediction model")
        run = _Run(cfg=cfg, guidance_scale=guidance_scale, scales=scales, control=(control_start, control_end),
                   guess=bool(guess_mode) and cfg, scheduler=scheduler, eta=eta,
                   deepcache=deepcache_interval if deepcache_interval >= 2 else 0, tome=float(tome_ratio),
                   steps=num_inference_steps, seed=seed, per_frame=consistency == "per-frame", chunk_size=chunk_size,
                   chooser=KeyframeChooser(keyframe_every, keyframe_max_gap, keyframe_threshold),
                   refine=refine or 0.0, memory=memory, fusion=FlowFusion(flow_band) if consistency == "flow" else None,
                   correspondence=None,
                   carry=memory is not None and memory.store is None)

        # 1. Encode the prompt once for the whole clip
        run.pos, run.neg = pipe.encode_prompt(prompt, self.device, 1, cfg, negative_prompt)
        if stats is not None:
            stats["keyframes"] = run.keyframes  # filled as batches are denoised
        bar = progress_bars.DenoiseProgress(n_frames, enabled=progress)  # moves at every denoising step

        shape = None
        received = 0  # frames seen so far: the next frame's index
        keys, held = [], []  # frames to denoise; frames waiting for their right keyframe
        pending = []  # the latest batch's outputs while its frames are propagated (a Future)
        if run.chooser.active or run.fusion is not None:  # (RAFT weights are checked here, before any frame)
            run.correspondence = Correspondence(flow_method, flow_size, device=self.device)
        with bar, closing(run.correspondence) if run.correspondence else nullcontext():
            for piece in pieces:
                frames, conditions, ahead = piece if len(piece) == 3 else (*piece, None)
                # 2. Check each piece; the first one fixes the clip's size and the working size
                self.check_inputs(frames, conditions, consistency, chunk_size)
                if shape is None:
                    shape = frames.shape[1:3]
                    run.work = self.working_size(*shape, size)
                    f = pipe.vae_scale_factor
                    run.latent_shape = (pipe.unet.config.in_channels, run.work[0] // f, run.work[1] // f)
                elif frames.shape[1:3] != shape:
                    raise InputError(f"frame size changed mid-clip from {shape} to {frames.shape[1:3]}")
                # 3. Source frames at the working size; keyframes (chosen ahead, or here) get their
                # control images, the frames between them their source flows (computed ahead)
                small = resize_frames(frames, *run.work)
                chosen = run.chooser.choose(small) if ahead is None else np.asarray(ahead, dtype=bool)
                for j in range(len(frames)):
                    frame = _Frame(received + j, small[j], None)
                    if chosen[j] or (ahead is None and j == len(frames) - 1):  # (the last may be the clip's last)
                        frame.controls = [resize_frames(conditions[k][j:j + 1], *run.work)[0]
                                          for k in self.controlnet_names]
                    if chosen[j]:
                        self._keyframe_arrived(run, frame, held)
                    (keys if chosen[j] else held).append(frame)
                received += len(frames)
                # 4. Denoise batches of keyframes as they fill up, then the frames between them
                while len(keys) >= self._batch_size(run):
                    yield from self._in_order(pending, self._keyframe_batch(run, keys, held, shape, bar))
            if shape is None:
                raise InputError("the clip has no frames")
            if held and held[-1].index == received - 1:  # the last frame is always a keyframe
                last = held.pop()
                if last.controls is None:
                    raise InputError(f"frame {last.index}, the clip's last, is a keyframe: it needs its conditions")
                self._keyframe_arrived(run, last, held)
                keys.append(last)
            while keys:
                yield from self._in_order(pending, self._keyframe_batch(run, keys, held, shape, bar))
            yield from self._in_order(pending, None)
        if stats is not None:
            stats.update(keyframes=run.keyframes, propagated=len(run.unseen), frame_memory_bytes=run.peak_bytes,
                         unseen_fraction=float(np.mean(run.unseen)) if run.unseen else 0.0)

    def _batch_size(self, run) -> int:
        """Keyframes taken per batch: with the anchor carried (no frame memory), later batches leave it room."""
        return max(run.chunk_size - 1, 1) if run.carry and run.anchor is not None else run.chunk_size

    def _keyframe_arrived(self, run, frame, held) -> None:
        """A keyframe arrived: queue the source flows of the frames since the previous keyframe (their
        propagation) and, in flow mode, of the pair of keyframes (the fusion link), in the pool."""
        previous, run.arrived = run.arrived, frame
        if previous is None or run.correspondence is None:
            return
        gap = [f for f in held if f.index > previous.index]
        links = run.correspondence.gap((previous.index, previous.source), (frame.index, frame.source),
                                       [(f.index, f.source) for f in gap])
        for f, link in zip(gap, links):
            f.link = link
        if run.fusion is not None:
            frame.link = run.correspondence.fusion(frame.source, previous.source, run.latent_shape[1:], run.pos.dtype)

    def _keyframe_batch(self, run, keys, held, shape, bar):
        """Denoise the next batch of keyframes, build (and refine) the frames up to the last of them.

        Returns those frames, uint8 (n, H, W, 3) in order, or (frames to propagate, no refine) a
        Future of them: the propagation runs in the stream's flow pool while the next batch denoises.
        """
        batch, keys[:] = keys[:self._batch_size(run)], keys[self._batch_size(run):]
        run.anchor = run.anchor or batch[0]
        for frame in batch:  # flow mode: the fusion links onto the previous keyframes, computed ahead
            frame.link = frame.link and frame.link.result()
        bar.start_batch(batch[0].index, len(batch))
        outputs = dict(zip([f.index for f in batch], self._denoise_frames(run, batch, bar)))
        gaps = []  # (frames between two keyframes, left output, right output)
        for frame in batch:
            gap = [f for f in held if f.index < frame.index]
            del held[:len(gap)]
            if gap:
                gaps.append((gap, run.left[1], outputs[frame.index]))
            run.left = (frame, outputs[frame.index])
        run.keyframes += [f.index for f in batch]
        run.peak_bytes = max(run.peak_bytes, (run.memory.nbytes if run.memory else 0) +
                             (run.fusion.nbytes if run.fusion else 0))
        bar.update(len(batch) + sum(len(gap) for gap, _, _ in gaps))

        def finish() -> np.ndarray:
            propagated = []
            for gap, left, right in gaps:
                with timed(None):  # waiting for the flows (counted in "flow")
                    links = [f.link.result() for f in gap]
                with timed("propagation", frames=len(gap)):
                    propagated += zip(gap, propagate(links, left, right, self.device))
                run.unseen += [link.unseen for link in links]
            if run.refine and propagated:
                for i in range(0, len(propagated), run.chunk_size):
                    part = propagated[i:i + run.chunk_size]
                    images = self._denoise_frames(run, [f for f, _ in part], bar,
                                                  start=np.stack([im for _, im in part]))
                    propagated[i:i + run.chunk_size] = [(f, im) for (f, _), im in zip(part, images)]
            outputs.update({f.index: image for f, image in propagated})
            return resize_frames(np.stack([outputs[i] for i in sorted(outputs)]), *shape)
        return run.correspondence.submit(finish) if gaps and not run.refine else finish()

    @staticmethod
    def _in_order(pending: list, result):
        """Yield what a batch gave in order: a Future (propagation under way) waits until the next
        batch is denoised, or the stream ends (``result`` None)."""
        if pending:
            yield pending.pop().result()
        if isinstance(result, np.ndarray):
            yield result
        elif result is not None:
            pending.append(result)

    def _denoise_frames(self, run, batch, bar, start=None) -> np.ndarray:
        """Denoise and decode frames (``start``: uint8 (n, h, w, 3) images to refine, img2img);
        returns uint8 (n, h, w, 3) at the working size."""
        carried = run.carry and batch[0].index != run.anchor.index
        frames = ([run.anchor] if carried else []) + batch
        seeds = [run.seed + f.index for f in frames] if run.per_frame else [run.seed] * len(frames)
        latents, generators = self._initial_latents(run.latent_shape, seeds, run.pos.dtype)
        dtype = self.pipe.controlnet.dtype
        controls = [self._to_tensor(np.stack([f.controls[k] for f in frames]), run.work, dtype)
                    for k in range(len(run.scales))]
        memory, fusion = run.memory, run.fusion
        if start is not None:  # a refine pass reads the anchor's memory, writes nothing, fuses nothing
            memory = memory and replace(memory, attend="anchor", anchor_in_batch=False, record=False)
            fusion, start = None, (self._encode(start), run.refine)
        elif memory is not None:
            memory.anchor_in_batch = frames[0].index == run.anchor.index
        if fusion is not None:
            fusion.links = [f.link for f in frames]
        latents = self._denoise(latents, controls, run.pos, run.neg, run.cfg, run.guidance_scale, run.scales,
                                run.steps, bar, memory=memory, fusion=fusion, start=start, control=run.control,
                                guess=run.guess, scheduler_name=run.scheduler, eta=run.eta, generators=generators,
                                deepcache=run.deepcache, tome=run.tome)
        return self._decode(latents[1:] if carried else latents)

    def _denoise(self, latents, controls, pos, neg, cfg, guidance_scale, scales, steps, bar, memory=None,
                 fusion=None, start=None, control=(0.0, 1.0), guess=False, scheduler_name=None, eta=None,
                 generators=None, deepcache=0, tome=0.0):
        """The diffusers ControlNet denoising loop on one batch of frames (batch = frames).

        memory: the stream's FrameMemory (cross-frame attention installed for this call only), or None.
        fusion: the stream's FlowFusion, or None. start: (image latents, strength) for img2img, or None.
        control: (start, end) of each ControlNet, turned into per-step scales over the scheduler's
        timesteps (``control_schedule``). guess: the ControlNets run on the conditional half only,
        the unconditional half gets zero residuals. scheduler_name, eta: the sampler (None: the model's
        own); generators: one per latent, for the noise stochastic schedulers draw in ``step``.
        deepcache: DeepCache interval (0: off); tome: ToMe ratio (0: off), see ``approx.py``.
        """
        pipe = self.pipe
        n = latents.shape[0]
        scheduler = make_scheduler(scheduler_name, pipe.scheduler)
        step_extra = step_kwargs(scheduler, generators, eta)
        scheduler.set_timesteps(steps, device=self.device)
        first = 0
        if start is None:
            latents = latents * scheduler.init_noise_sigma
        else:  # as diffusers' img2img: skip the first (1 - strength) of the schedule, noise the image to there
            first = (steps - min(int(steps * start[1]), steps)) * scheduler.order
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(first)
            latents = scheduler.add_noise(start[0], latents, scheduler.timesteps[first:first + 1])
        embeds = torch.cat([neg.expand(n, -1, -1), pos.expand(n, -1, -1)]) if cfg else pos.expand(n, -1, -1)
        images = [torch.cat([c, c]) if cfg and not guess else c for c in controls]
        scales = control_schedule(scales, *control, len(scheduler.timesteps), self.controlnet_names)
        multi = len(images) > 1
        merge = TokenMerge(tome, tuple(latents.shape[-2:])) if tome > 0 else None
        attention = nullcontext() if memory is None and merge is None else cross_frame_attention(pipe.unet, memory,
                                                                                               merge)
        cache = DeepCache(pipe.unet, deepcache) if deepcache else None
        bar.start_steps(len(scheduler.timesteps) - first, shown=steps - first // scheduler.order)
        with attention:
            for i, t in enumerate(scheduler.timesteps[first:], start=first):
                if memory is not None:
                    memory.step = i
                model_input = torch.cat([latents] * 2) if cfg else latents
                model_input = scheduler.scale_model_input(model_input, t)
                control_input, control_embeds = (model_input[n:], embeds[n:]) if guess else (model_input, embeds)
                down, mid = pipe.controlnet(
                    control_input, t, encoder_hidden_states=control_embeds,
                    controlnet_cond=images if multi else images[0],
                    conditioning_scale=scales[i] if multi else scales[i][0],
                    guess_mode=guess, return_dict=False,
                )
                if guess:
                    down = [torch.cat([torch.zeros_like(d), d]) for d in down]
                    mid = torch.cat([torch.zeros_like(mid), mid])
                if cache is not None:
                    noise = cache(i - first, model_input, t, embeds, down, mid)
                else:
                    noise = pipe.unet(model_input, t, encoder_hidden_states=embeds,
                                      down_block_additional_residuals=down, mid_block_additional_residual=mid,
                                      return_dict=False)[0]
                if cfg:
                    uncond, text = noise.chunk(2)
                    noise = uncond + guidance_scale * (text - uncond)
                if fusion is not None and fusion.active(i, len(scheduler.timesteps)):
                    noise = fusion(noise, model_input[:n], t, i, scheduler.alphas_cumprod)
                latents = scheduler.step(noise, t, latents, **step_extra, return_dict=False)[0]
                bar.step()  # progress, and Ctrl-C stops here
        return latents

    def _encode(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (N, h, w, 3) -> scaled latents (N, C, h/f, w/f): the VAE posterior's mode."""
        vae = self.pipe.vae
        x = torch.from_numpy(images).permute(0, 3, 1, 2).to(self.device, vae.dtype) / 127.5 - 1.0
        return vae.encode(x).latent_dist.mode() * vae.config.scaling_factor

    def _decode(self, latents) -> np.ndarray:
        """Latents -> uint8 (N, h, w, 3), as the pipeline's ``output_type="np"`` then rounded."""
        vae = self.pipe.vae
        image = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
        if torch.isnan(image).any():
            raise ModelError(f"the model produced NaN (black) frames in {image.dtype}; "
                             "rerun with --dtype bf16 or --dtype fp32")
        image = (image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()
        return (image * 255).round().astype(np.uint8)


def _per_kind(name, value, names) -> list[float]:
    """A float for every ControlNet, or {kind: float} (missing kinds keep the default)."""
    default = {"control_start": 0.0, "control_end": 1.0}[name]
    if isinstance(value, dict):
        unknown = set(value) - set(names)
        if unknown:
            raise ConfigError(f"{name} names {sorted(unknown)} are not ControlNets {names}")
        return [check_finite(name, value.get(kind, default)) for kind in names]
    return [check_finite(name, value)] * len(names)


def control_schedule(scales, control_start, control_end, steps, names) -> list[list[float]]:
    """Per denoising step, each ControlNet's conditioning scale: ``scales[k]`` while the step lies
    in [start, end] of the schedule, else 0 - diffusers' ``controlnet_keep`` for
    ``control_guidance_start/end``. ConfigError unless 0 <= start < end <= 1 for every kind."""
    starts = _per_kind("control_start", control_start, names)
    ends = _per_kind("control_end", control_end, names)
    for kind, start, end in zip(names, starts, ends):
        if not 0.0 <= start < end <= 1.0:
            raise ConfigError(f"control_start ({start:g}) must be < control_end ({end:g}), both in [0, 1], "
                              f"for the {kind} ControlNet")
    return [[scale * (1.0 - float(i / steps < start or (i + 1) / steps > end))
             for scale, start, end in zip(scales, starts, ends)] for i in range(steps)]


def _scales(controlnet_scale, names) -> list[float]:
    if controlnet_scale is None:
        return [1.0] * len(names)
    if isinstance(controlnet_scale, (int, float)):
        return [check_finite("controlnet_scale", controlnet_scale)] * len(names)
    unknown = set(controlnet_scale) - set(names)
    if unknown:
        raise ValueError(f"controlnet_scale names {sorted(unknown)} are not ControlNets {names}")
    return [check_finite(f"controlnet_scale[{name!r}]", controlnet_scale.get(name, 1.0)) for name in names]


@dataclass
class _Frame:
    """One frame on its way through ``stream``: index, uint8 (h, w, 3) source and controls at the working size."""

    index: int
    source: np.ndarray
    controls: list
    link: object = None  # Future (then result) of its correspondence: a propagated frame's ``warp.Link``;
    # a keyframe's fusion link (grid, weight) onto the previous keyframe (flow mode)


@dataclass
class _Run:
    """Everything one ``stream`` call carries between batches (nothing of it lives on the Translator)."""

    cfg: bool
    guidance_scale: float
    scales: list
    steps: int
    seed: int
    per_frame: bool
    chunk_size: int
    chooser: KeyframeChooser  # which frames are keyframes (unless chosen ahead, by the pieces)
    refine: float
    memory: FrameMemory | None
    fusion: FlowFusion | None
    correspondence: Correspondence | None  # source flows, computed ahead (keyframes or flow mode)
    carry: bool  # no frame memory: every batch carries the anchor (cross-frame with kv_cache off)
    control: tuple = (0.0, 1.0)  # (control_start, control_end) as given: a float or {kind: float} each
    guess: bool = False  # guess mode under guidance
    scheduler: str | None = None  # sampler name (None: the model's own)
    eta: float | None = None
    deepcache: int = 0  # DeepCache interval (0: off)
    tome: float = 0.0  # ToMe ratio (0: off)
    pos: torch.Tensor | None = None
    neg: torch.Tensor | None = None
    work: tuple | None = None
    latent_shape: tuple | None = None
    anchor: _Frame | None = None
    left: tuple | None = None  # (frame, uint8 output at the working size) of the latest keyframe
    arrived: _Frame | None = None  # the latest keyframe received (its flows are queued)
    keyframes: list = field(default_factory=list)
    unseen: list = field(default_factory=list)
    peak_bytes: int = 0

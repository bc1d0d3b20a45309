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
from vidreal.errors import ConfigError, InputError, ModelError
from vidreal.io import resize_frames
from vidreal.options import TranslateOptions
from vidreal.keyframes import KeyframeChooser
from vidreal.pipeline.approx import DeepCache
from vidreal.pipeline.attention import FrameMemory, cross_frame_attention, layer_shapes
from vidreal.pipeline.fusion import FlowFusion
from vidreal.pipeline.schedulers import make_scheduler, step_kwargs
from vidreal.pipeline.warp import Correspondence, propagate
from vidreal.runtime import check_frames
from vidreal.stages import timed

log = logging.getLogger(__name__)

AUTO_COMPILE_CHUNKS = 4  # compile "auto": a CUDA clip of more than this many chunks repays the first call

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
        self.compile_setting = "off"  # auto | on | off, see use_compile
        self.long_runs = False  # auto compiles for every run (a batch's worker reuses the translator)
        self.compiled = False  # the UNet and ControlNets are compiled (once per translator)
        self.pad_batches = False  # pad a shorter last batch to chunk_size (static shapes: no recompilation)


    @classmethod
    def from_pretrained(cls, model=None, controlnets=None, device=None, dtype=None, embeddings=(), lora=None,
                        lora_scale=1.0, allow_pickle=False, model_config=None, vae=None) -> "Translator":
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
                             lora=lora, lora_scale=lora_scale, allow_pickle=allow_pickle, model_config=model_config,
                             vae=vae)
        return cls(pipe, list(controlnets))

    def use_compile(self, setting="auto", long_runs: bool = False) -> None:
        """``on``: compile now; ``auto``: compile at the start of a CUDA run that repays the first call
        (``long_runs``, e.g. a batch, or a clip of more than ``AUTO_COMPILE_CHUNKS`` chunks); ``off``:
        never (a translator compiled once stays compiled)."""
        from vidreal.config import check_compile

        self.compile_setting = check_compile(setting)
        self.long_runs = long_runs
        if self.compile_setting == "on":
            self.compile()

    def _auto_compile(self, n_frames, chunk_size) -> None:
        long = self.long_runs or (n_frames or 0) > AUTO_COMPILE_CHUNKS * chunk_size
        if self.compile_setting == "auto" and not self.compiled and self.device.type == "cuda" and long:
            self.compile()

    def compile(self, backend: str = "inductor") -> None:
        """``torch.compile`` the UNet's and the ControlNets' forward passes, in place, once.

        On CUDA with CUDA graphs (``mode="reduce-overhead"``): 62.6 against 99.1 ms per denoising
        step of UNet + 2 ControlNets on an H200 (1.58x; SD 1.5, 512 px, batch 16, fp16), after a first
        call of ~70 s per batch shape. Elsewhere inductor's default mode (CPU: tests). Fused q/k/v
        projections and channels-last memory are applied first (alone they did not pay: 0.97x).
        Batches are then padded to ``chunk_size`` (static shapes), and each denoising step starts a
        new CUDA graph step (``_denoise``). Outputs match the uncompiled ones up to rounding.
        ``backend``: torch.compile's (tests use ``aot_eager``, which compiles in seconds).
        """
        if self.compiled:
            return
        from diffusers.models.attention_processor import Attention, FusedAttnProcessor2_0

        pipe = self.pipe
        nets = [pipe.unet, *getattr(pipe.controlnet, "nets", [pipe.controlnet])]
        for net in nets:
            attentions = [m for m in net.modules() if isinstance(m, Attention)]
            if attentions and not any(getattr(m, "fused_projections", False) for m in attentions):
                for module in attentions:
                    module.fuse_projections()
                net.set_attn_processor(FusedAttnProcessor2_0())
            net.to(memory_format=torch.channels_last)
        mode = "reduce-overhead" if self.device.type == "cuda" and backend == "inductor" else None
        for net in nets:
            net.forward = torch.compile(net.forward, mode=mode, backend=backend)
        self.compiled = True
        self.pad_batches = True
        log.info("compiled the UNet and ControlNets (%s)", mode or "inductor default")

    @staticmethod
    def compilations() -> int:
        """Graphs torch.compile has made in this process (a recompilation adds one)."""
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])

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

    def check_inputs(self, frames, conditions):
        check_frames(frames)
        missing = [name for name in self.controlnet_names if name not in conditions]
        if missing:
            raise InputError(f"conditions lack {missing}; the ControlNets read {self.controlnet_names}")
        for name in self.controlnet_names:
            cond = conditions[name]
            if cond.dtype != np.uint8 or cond.shape[:1] != frames.shape[:1] or cond.ndim != 4 or cond.shape[-1] != 3:
                raise InputError(f"condition {name!r} must be uint8 ({len(frames)}, H, W, 3), got {cond.dtype} {cond.shape}")

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
    def __call__(self, frames, conditions, prompt, options: TranslateOptions | None = None, *, progress=True,
                 stats=None, **overrides):
        """Translate a clip held in memory.

        Args:
            frames: uint8 (T, H, W, 3) RGB.
            conditions: {kind: uint8 (T, H', W', 3)} for every ControlNet kind; resized to the working size.
            prompt: the text prompt.
            options: a :class:`vidreal.options.TranslateOptions` (its defaults when None).
            overrides: options by name, over ``options``: ``negative_prompt``, ``num_inference_steps``
                (or ``steps``), ``guidance_scale`` (or ``guidance``), ``controlnet_scale`` (float or
                {kind: float}; default 1.0 each), ``seed``, ``chunk_size``, ``consistency``, ``size``
                (working short side; None: the input's), ``control_start``/``control_end`` (float or
                {kind: float}: the fraction of the steps where each ControlNet acts),
                ``guess_mode``, ``scheduler`` (a name of ``vidreal.samplers``; None: the model's own),
                ``eta``, the correspondence options and the approximations (see :meth:`stream`).
            progress, stats: see :meth:`stream`.
        Returns:
            uint8 (T, H, W, 3) RGB at the input's size.
        """
        options = (options or TranslateOptions()).replace(**overrides)
        self.check_inputs(frames, conditions)
        chunk = options.chunk_size
        pieces = [(frames[i:i + chunk], {k: v[i:i + chunk] for k, v in conditions.items()})
                  for i in range(0, len(frames), chunk)]
        return np.concatenate(list(self.stream(pieces, prompt, options, progress=progress, n_frames=len(frames),
                                               stats=stats)))

    @torch.no_grad()
    def stream(self, pieces, prompt, options: TranslateOptions | None = None, *, progress=True, n_frames=None,
               stats=None, **overrides):
        """Translate a clip that arrives in pieces; yields uint8 (n, H, W, 3) outputs in frame order.

        ``pieces`` yields ``(frames uint8 (n, H, W, 3), {kind: uint8 (n, H', W', 3)})`` of any
        lengths. They are regrouped into denoising batches of ``chunk_size`` frames, so memory
        depends on ``chunk_size``, never on the clip's length, and the output does not depend on
        how the clip was cut. ``n_frames`` (if known) sizes the progress bar. ``options``
        (``overrides`` as in :meth:`__call__`) are checked before anything runs.

        Correspondence options (the config keys of the same names):
            consistency: also ``memory`` (each frame attends to the anchor and its previous frame)
                and ``flow`` (memory + flow-guided fusion of predicted latents in ``flow_band``).
            keyframe_every: K; denoise frames 0, K, 2K, ... and the last, build the others from their
                two keyframes along the source flow (``pipeline.warp``). None (or 1): every frame.
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
                blocks between, on the deep features kept from the last full step (0 or 1: off);
                1.17x at N=3 on an H200.
        """
        options = (options or TranslateOptions()).replace(**overrides)
        consistency = options.consistency
        self._auto_compile(n_frames, options.chunk_size)
        pipe = self.pipe
        cfg = options.guidance > 1.0 and pipe.unet.config.time_cond_proj_dim is None
        scales, starts, ends = options.per_kind(self.controlnet_names)
        step_kwargs(make_scheduler(options.scheduler, pipe.scheduler), None, options.eta)  # eta on the model's own
        attend = {"cross-frame": "anchor", "memory": "anchor+previous", "flow": "anchor+previous"}.get(consistency)
        kv_cache = options.kv_cache
        memory = None if attend is None else FrameMemory(attend, None if kv_cache == "off" else kv_cache,
                                                         groups=2 if cfg else 1)
        if consistency == "flow" and pipe.scheduler.config.get("prediction_type", "epsilon") != "epsilon":
            raise ConfigError("consistency 'flow' needs an epsilon-prediction model")
        run = _Run(options=options, cfg=cfg, scales=scales, control=(starts, ends), guess=options.guess_mode and cfg,
                   per_frame=consistency == "per-frame",
                   chooser=KeyframeChooser(options.keyframe_every, options.keyframe_max_gap, options.keyframe_threshold),
                   memory=memory, fusion=FlowFusion(options.flow_band) if consistency == "flow" else None,
                   correspondence=None, carry=memory is not None and memory.store is None)

        # 1. Encode the prompt once for the whole clip
        run.pos, run.neg = pipe.encode_prompt(prompt, self.device, 1, cfg, options.negative_prompt)
        if stats is not None:
            stats["keyframes"] = run.keyframes  # filled as batches are denoised
        bar = progress_bars.DenoiseProgress(n_frames, enabled=progress)  # moves at every denoising step

        shape = None
        received = 0  # frames seen so far: the next frame's index
        keys, held = [], []  # frames to denoise; frames waiting for their right keyframe
        pending = []  # the latest batch's outputs while its frames are propagated (a Future)
        if run.chooser.active or run.fusion is not None:  # (RAFT weights are checked here, before any frame)
            run.correspondence = Correspondence(options.flow_method, options.flow_size, device=self.device)
        with bar, closing(run.correspondence) if run.correspondence else nullcontext():
            for piece in pieces:
                frames, conditions, ahead = piece if len(piece) == 3 else (*piece, None)
                # 2. Check each piece; the first one fixes the clip's size and the working size
                self.check_inputs(frames, conditions)
                if shape is None:
                    shape = frames.shape[1:3]
                    run.work = self.working_size(*shape, options.size)
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
                    # (the last may be the clip's last; refine denoises the propagated frames too)
                    if chosen[j] or options.refine or (ahead is None and j == len(frames) - 1):
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

    def _padded(self, frames: list, size: int) -> list:
        """``frames`` repeated at the end up to ``size`` when batches are padded (a compiled
        translator: static shapes). Padding changes no real frame's output: frames attend to the
        anchor and to earlier frames only, flow fusion reads earlier frames only, and only a stream's
        last batch is short, so nothing reads the padding's memory entries; its outputs are dropped."""
        if not self.pad_batches or len(frames) >= size:
            return frames
        return frames + [frames[-1]] * (size - len(frames))

    def _batch_size(self, run) -> int:
        """Keyframes taken per batch: with the anchor carried (no frame memory), later batches leave it room."""
        chunk_size = run.options.chunk_size
        return max(chunk_size - 1, 1) if run.carry and run.anchor is not None else chunk_size

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
            chunk_size = run.options.chunk_size
            if run.options.refine and propagated:
                for i in range(0, len(propagated), chunk_size):
                    part = propagated[i:i + chunk_size]
                    images = self._denoise_frames(run, [f for f, _ in part], bar,
                                                  start=np.stack([im for _, im in part]))
                    propagated[i:i + chunk_size] = [(f, im) for (f, _), im in zip(part, images)]
            outputs.update({f.index: image for f, image in propagated})
            return resize_frames(np.stack([outputs[i] for i in sorted(outputs)]), *shape)
        return run.correspondence.submit(finish) if gaps and not run.options.refine else finish()

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
        real = len(frames)
        frames = self._padded(frames, run.options.chunk_size)
        seed = run.options.seed
        seeds = [seed + f.index for f in frames] if run.per_frame else [seed] * len(frames)
        latents, generators = self._initial_latents(run.latent_shape, seeds, run.pos.dtype)
        dtype = self.pipe.controlnet.dtype
        controls = [self._to_tensor(np.stack([f.controls[k] for f in frames]), run.work, dtype)
                    for k in range(len(run.scales))]
        memory, fusion = run.memory, run.fusion
        if start is not None:  # a refine pass reads the anchor's memory, writes nothing, fuses nothing
            memory = memory and replace(memory, attend="anchor", anchor_in_batch=False, record=False)
            fusion, start = None, (self._encode(start), run.options.refine)
        elif memory is not None:
            memory.anchor_in_batch = frames[0].index == run.anchor.index
        if fusion is not None:
            fusion.links = [f.link for f in frames]
        latents = self._denoise(latents, controls, run, bar, memory=memory, fusion=fusion, start=start,
                                generators=generators)
        return self._decode(latents[1 if carried else 0:real])

    def _denoise(self, latents, controls, run, bar, memory=None, fusion=None, start=None, generators=None):
        """The diffusers ControlNet denoising loop on one batch of frames (batch = frames).

        run: the stream's ``_Run`` (its options, prompt embeddings, guidance, ControlNet scales and
        timing: per-step scales over the scheduler's timesteps, ``control_schedule``; under guess
        mode the ControlNets run on the conditional half only, the unconditional half gets zero
        residuals). memory: the stream's FrameMemory (cross-frame attention installed for this call
        only), or None. fusion: the stream's FlowFusion, or None. start: (image latents, strength)
        for img2img, or None. generators: one per latent, for the noise stochastic schedulers draw
        in ``step``. DeepCache (``approx.py``) follows the options. Compiled with CUDA graphs, each step
        starts a new graph step and the ControlNets' residuals are copied: their graphs' outputs are
        overwritten when the graphs run again.
        """
        pipe = self.pipe
        options, pos, neg, cfg, guess = run.options, run.pos, run.neg, run.cfg, run.guess
        steps, guidance_scale = options.steps, options.guidance
        deepcache = options.deepcache_interval if options.deepcache_interval >= 2 else 0
        n = latents.shape[0]
        scheduler = make_scheduler(options.scheduler, pipe.scheduler)
        step_extra = step_kwargs(scheduler, generators, options.eta)
        scheduler.set_timesteps(steps, device=self.device)
        first = 0
        if start is None:
            latents = latents * scheduler.init_noise_sigma
        else:  # as diffusers' img2img: skip the first (1 - strength) of the schedule, noise the image to there
            # (at least one step: a strength below 1 / steps would otherwise denoise nothing)
            first = (steps - min(max(int(steps * start[1]), 1), steps)) * scheduler.order
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(first)
            latents = scheduler.add_noise(start[0], latents, scheduler.timesteps[first:first + 1])
        embeds = torch.cat([neg.expand(n, -1, -1), pos.expand(n, -1, -1)]) if cfg else pos.expand(n, -1, -1)
        images = [torch.cat([c, c]) if cfg and not guess else c for c in controls]
        scales = control_schedule(run.scales, *run.control, len(scheduler.timesteps))
        multi = len(images) > 1
        attention = nullcontext() if memory is None else cross_frame_attention(pipe.unet, memory)
        if memory is not None and not memory.shapes:
            memory.shapes = layer_shapes(pipe.unet, tuple(latents.shape[-2:]))
        graphs = self.compiled and self.device.type == "cuda"
        cache = DeepCache(pipe.unet, deepcache) if deepcache else None
        bar.start_steps(len(scheduler.timesteps) - first, shown=steps - first // scheduler.order)
        with attention:
            for i, t in enumerate(scheduler.timesteps[first:], start=first):
                if graphs:
                    torch.compiler.cudagraph_mark_step_begin()
                if memory is not None:
                    memory.begin_step(i, self.device, pipe.unet.dtype)
                model_input = torch.cat([latents] * 2) if cfg else latents
                model_input = scheduler.scale_model_input(model_input, t)
                control_input, control_embeds = (model_input[n:], embeds[n:]) if guess else (model_input, embeds)
                down, mid = pipe.controlnet(
                    control_input, t, encoder_hidden_states=control_embeds,
                    controlnet_cond=images if multi else images[0],
                    conditioning_scale=scales[i] if multi else scales[i][0],
                    guess_mode=guess, return_dict=False,
                )
                if graphs:
                    down, mid = [d.clone() for d in down], mid.clone()
                if guess:
                    down = [torch.cat([torch.zeros_like(d), d]) for d in down]
                    mid = torch.cat([torch.zeros_like(mid), mid])
                if cache is not None:
                    noise = cache(i - first, model_input, t, embeds, down, mid)
                else:
                    noise = pipe.unet(model_input, t, encoder_hidden_states=embeds,
                                      down_block_additional_residuals=down, mid_block_additional_residual=mid,
                                      return_dict=False)[0]
                if memory is not None:
                    memory.end_step()
                if graphs:
                    noise = noise.clone()
                if cfg:
                    uncond, text = noise.chunk(2)
                    noise = uncond + guidance_scale * (text - uncond)
                if fusion is not None and fusion.active(i, len(scheduler.timesteps)):
                    noise = fusion(noise, model_input[:n], t, i, scheduler.alphas_cumprod)
                latents = scheduler.step(noise, t, latents, **step_extra, return_dict=False)[0]
                bar.step()  # progress, and Ctrl-C stops here
        return latents

    def _encode(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (N, h, w, 3) -> scaled latents (N, C, h/f, w/f): the VAE posterior's mode (an
        AutoencoderTiny's latents, which have no distribution)."""
        vae = self.pipe.vae
        x = torch.from_numpy(images).permute(0, 3, 1, 2).to(self.device, vae.dtype) / 127.5 - 1.0
        encoded = vae.encode(x)
        latents = encoded.latents if hasattr(encoded, "latents") else encoded.latent_dist.mode()
        return latents * vae.config.scaling_factor

    def _decode(self, latents) -> np.ndarray:
        """Latents -> uint8 (N, h, w, 3), as the pipeline's ``output_type="np"`` then rounded."""
        vae = self.pipe.vae
        image = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
        if torch.isnan(image).any():
            raise ModelError(f"the model produced NaN (black) frames in {image.dtype}; "
                             "rerun with --dtype bf16 or --dtype fp32")
        image = (image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()
        return (image * 255).round().astype(np.uint8)


def control_schedule(scales, starts, ends, steps) -> list[list[float]]:
    """Per denoising step, each ControlNet's conditioning scale: ``scales[k]`` while the step lies
    in [starts[k], ends[k]] of the schedule, else 0 - diffusers' ``controlnet_keep`` for
    ``control_guidance_start/end`` (the values come from ``TranslateOptions.per_kind``)."""
    return [[scale * (1.0 - float(i / steps < start or (i + 1) / steps > end))
             for scale, start, end in zip(scales, starts, ends)] for i in range(steps)]


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

    options: TranslateOptions
    cfg: bool  # classifier-free guidance (guidance > 1, a model without guidance embedding)
    scales: list  # conditioning scale of each ControlNet
    per_frame: bool
    chooser: KeyframeChooser  # which frames are keyframes (unless chosen ahead, by the pieces)
    memory: FrameMemory | None
    fusion: FlowFusion | None
    correspondence: Correspondence | None  # source flows, computed ahead (keyframes or flow mode)
    carry: bool  # no frame memory: every batch carries the anchor (cross-frame with kv_cache off)
    control: tuple  # (starts, ends): each ControlNet's fractions of the schedule
    guess: bool = False  # guess mode under guidance
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

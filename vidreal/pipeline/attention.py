"""Cross-frame attention and the frame memory: UNet self-attention that reads other frames.

The UNet sees a batch laid out as ``groups`` equal halves, each a run of consecutive frames of the
sequence being denoised: ``[uncond frames | cond frames]`` under classifier-free guidance (2
groups), or just ``[frames]`` (1 group). Only self-attention (``attn1``) changes; text
cross-attention stays per frame. Two ways of attending (``FrameMemory.attend``):

* ``anchor``: every frame's keys/values come from the anchor (frame 0). The queries of a group are
  concatenated into one long sequence and attend to the anchor's keys/values in one call: the same
  result as expanding the anchor's K/V to every frame, without copying them.
* ``anchor+previous``: every frame attends to the anchor's tokens AND its previous frame's tokens
  (Rerender-A-Video's "first + previous"); frame 0's previous frame is itself.

The frame memory keeps, per denoising step and layer, the attention INPUT (hidden states, from which
``to_k``/``to_v`` rebuild the keys and values exactly; half the size of K and V) of the anchor and,
for ``anchor+previous``, of the last frame of the latest batch. So the anchor is denoised once (in
the first batch) instead of in every batch, and the previous frame of a batch's first frame comes
from the memory: the output does not depend on how frames are batched.

Size, per cached frame: UNet calls (the scheduler's timesteps: PNDM makes 21 of 20 steps) x groups x
sum over self-attention layers of tokens x channels values; SD 1.5 at 512x512, 20 steps, guidance:
23.1 M values per call, 485 M in all, 0.97 GB in fp16 (anchor), twice that with the previous frame. ``store="cpu"`` keeps it in host memory (moved to the device one layer at a time).

The processors also read fused projections (``Translator.compile`` fuses them: the keys and values
come from one matrix product with the key and value rows of ``attn.to_qkv``, the same weights).

Graph-safe (``torch.compile`` with CUDA graphs): inside the UNet the processors read the memory
only through ``FrameMemory.inputs`` (this step's entries, put there by :meth:`FrameMemory.begin_step`
before the UNet runs) and write only ``FrameMemory.outputs``, which :meth:`FrameMemory.end_step`
copies into the memory after the UNet ran, before the next step's graph can overwrite them. No
step index, dictionary of steps or host sync is read inside the UNet.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

ATTEND = ("anchor", "anchor+previous")


@dataclass
class FrameMemory:
    """Per-stream state of the frame attention; the translator sets the batch fields before each UNet call.

    attend: ``anchor`` or ``anchor+previous``. store: ``device``, ``cpu`` or None (no memory: every
    batch must then start with the anchor, today's carried-anchor layout).
    """

    attend: str = "anchor"
    store: str | None = "device"
    groups: int = 1  # batch halves (2 under classifier-free guidance)
    step: int = 0  # index into the scheduler's timesteps
    anchor_in_batch: bool = True  # the batch's first frame is the anchor (frame 0)
    record: bool = True  # write the memory (False for refine passes, which only read it)
    anchor: dict = field(default_factory=dict)  # (layer, step) -> hidden states (groups, tokens, C)
    last: dict = field(default_factory=dict)  # (layer, step) -> last frame's hidden states (groups, tokens, C)
    inputs: dict = field(default_factory=dict)  # (table, layer) -> this step's entry, on the device; "first": flag
    outputs: dict = field(default_factory=dict)  # (table, layer) -> what this UNet call writes
    shapes: dict = field(default_factory=dict)  # layer -> (tokens, C) of its attention input (layer_shapes)
    _constants: dict = field(default_factory=dict, repr=False)  # zeros and flags on the device, made once

    def __post_init__(self):
        if self.attend not in ATTEND:
            raise ValueError(f"attend must be one of {ATTEND}, got {self.attend!r}")

    @property
    def nbytes(self) -> int:
        """Bytes held by the memory now."""
        return sum(t.numel() * t.element_size() for d in (self.anchor, self.last) for t in d.values())

    def begin_step(self, step: int, device: torch.device, dtype: torch.dtype) -> None:
        """Before the UNet call of ``step``: put what the processors read into ``inputs``: the
        anchor's (and the previous frame's) entries of this step, or, when the batch holds the
        anchor, zeros of their shapes and a flag that makes the processors read the batch instead.
        Either way the UNet sees the same inputs, so a compiled UNet runs one graph for both."""
        self.step = step
        self.outputs = {}
        self.inputs = {"first": self._constant(("flag", self.anchor_in_batch), device,
                                               lambda: torch.tensor(self.anchor_in_batch, device=device))}
        tables = [("anchor", self.anchor)] + ([("last", self.last)] if self.attend == "anchor+previous" else [])
        for name, table in tables:
            if self.anchor_in_batch:
                # one zeros tensor per table and layer: inputs that alias would make another graph
                entries = {layer: self._constant(("zeros", name, layer, dtype), device, lambda layer=layer: torch.zeros(
                    self.groups, *self.shapes[layer], device=device, dtype=dtype)) for layer in self.shapes}
            else:
                entries = {layer: value for (layer, at), value in table.items() if at == step}
                if not entries:
                    raise RuntimeError(f"frame memory has no {name} entries at step {step}: "
                                       "the anchor must be denoised before the frames that read it")
            self.inputs.update({(name, layer): value.to(device, non_blocking=True) for layer, value in entries.items()})

    def _constant(self, key, device, make) -> torch.Tensor:
        key = (*key, str(device))
        if key not in self._constants:
            self._constants[key] = make()
        return self._constants[key]

    def end_step(self) -> None:
        """After the UNet call: copy what it wrote into the memory (copies: a compiled UNet's outputs
        are overwritten by its next run); the anchor only from the batch that holds it."""
        if self.record and self.store is not None:
            for (name, layer), value in self.outputs.items():
                if name == "anchor" and not self.anchor_in_batch:
                    continue
                table = self.anchor if name == "anchor" else self.last
                # contiguous: every entry is laid out alike, so a compiled UNet's guards hold
                value = value.clone(memory_format=torch.contiguous_format)
                table[layer, self.step] = value.to("cpu") if self.store == "cpu" else value
        self.outputs = {}
        self.inputs = {}

    def get(self, name: str, layer: str, like: torch.Tensor) -> torch.Tensor:
        return self.inputs[name, layer].to(like.dtype)


class CrossFrameAttnProcessor:
    """Self-attention whose keys/values come from the anchor (and the previous frame), see the module."""

    def __init__(self, memory: FrameMemory, name: str, fallback):
        self.memory = memory
        self.name = name  # the layer's key in the frame memory
        self.fallback = fallback  # the original processor, used for cross-attention calls

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is not None or attention_mask is not None:
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        memory = self.memory
        batch, tokens, _ = hidden_states.shape
        groups = memory.groups
        if batch % groups:
            raise ValueError(f"batch of {batch} cannot be split into {groups} frame groups")
        frames = batch // groups
        by_frame = hidden_states.view(groups, frames, tokens, -1)

        # (groups, tokens, C): the first frame of each group when the batch holds the anchor, else the memory's
        first = memory.inputs["first"]
        anchors = torch.where(first, by_frame[:, 0], memory.get("anchor", self.name, hidden_states))
        memory.outputs["anchor", self.name] = anchors

        query = attn.to_q(hidden_states)
        heads = attn.heads
        head_dim = query.shape[-1] // heads
        if memory.attend == "anchor":
            key, value = keys_values(attn, anchors)
            kv_tokens = key.shape[1]
            # (groups, heads, frames * tokens, d) queries against (groups, heads, kv tokens, d) keys/values
            query = query.view(groups, frames * tokens, heads, head_dim).transpose(1, 2)
            key = key.view(groups, kv_tokens, heads, head_dim).transpose(1, 2)
            value = value.view(groups, kv_tokens, heads, head_dim).transpose(1, 2)
        else:
            first_prev = torch.where(first, anchors, memory.get("last", self.name, hidden_states))[:, None]
            previous = torch.cat([first_prev, by_frame[:, :-1]], dim=1)  # (groups, frames, tokens, C)
            # the next batch's first frame attends to this one (only a stream's last batch is padded)
            memory.outputs["last", self.name] = by_frame[:, -1]
            previous = previous.reshape(batch, tokens, -1)  # (batch, previous tokens, C)
            own_k, own_v = keys_values(attn, anchors)  # (groups, anchor tokens, C)
            prev_k, prev_v = keys_values(attn, previous)

            def both(own, prev):  # (batch, heads, kv tokens, d): the anchor's tokens, then the previous frame's
                own = own[:, None].expand(groups, frames, *own.shape[1:]).reshape(batch, own.shape[1], -1)
                return torch.cat([own, prev], dim=1).view(batch, -1, heads, head_dim).transpose(1, 2)

            key, value = both(own_k, prev_k), both(own_v, prev_v)
            query = query.view(batch, tokens, heads, head_dim).transpose(1, 2)
        hidden_states = attend(attn, query, key, value, batch, tokens)

        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def attend(attn, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, batch: int, tokens: int) -> torch.Tensor:
    """Scaled dot-product attention of ``(..., heads, n, d)`` queries on keys/values (the layer's
    q/k norms first), back to ``(batch, tokens, heads * d)`` through the layer's output projection."""
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    hidden_states = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
    hidden_states = hidden_states.transpose(1, 2).reshape(batch, tokens, -1).to(query.dtype)
    return attn.to_out[1](attn.to_out[0](hidden_states))


def keys_values(attn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(attn.to_k(x), attn.to_v(x))``; with fused projections one product with ``to_qkv``'s key
    and value rows (the same weights, one kernel instead of two)."""
    if getattr(attn, "fused_projections", False) and getattr(attn, "to_qkv", None) is not None:
        inner = attn.to_q.out_features
        qkv = attn.to_qkv
        bias = None if qkv.bias is None else qkv.bias[inner:]
        return F.linear(x, qkv.weight[inner:], bias).chunk(2, dim=-1)
    return attn.to_k(x), attn.to_v(x)


def layer_shapes(unet: torch.nn.Module, latent_hw: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """{self-attention processor name: (tokens, channels) of its input} for a UNet2DConditionModel
    whose latent is ``latent_hw``: down block i works at level i, the mid block at the last level,
    up block i at level (levels - 1 - i); each level halves the size as stride-2 convolutions do."""
    levels = len(unet.down_blocks)
    sizes = [latent_hw]
    for _ in range(levels - 1):
        sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
    shapes = {}
    for name, module in unet.attn_processors.items():
        if not name.endswith("attn1.processor"):
            continue
        part, index = name.split(".")[0], name.split(".")[1]
        level = {"down_blocks": lambda: int(index), "mid_block": lambda: levels - 1,
                 "up_blocks": lambda: levels - 1 - int(index)}[part]()
        attn = unet.get_submodule(name.removesuffix(".processor"))
        h, w = sizes[level]
        shapes[name] = (h * w, attn.to_q.in_features)
    return shapes


@contextmanager
def cross_frame_attention(unet: torch.nn.Module, memory: FrameMemory):
    """Install CrossFrameAttnProcessor on the UNet's self-attention layers; always restore the originals.

    Use it around one denoising call, never for longer: two streams on one UNet each install their
    own memory for their own calls.
    """
    original = dict(unet.attn_processors)

    patched = {name: CrossFrameAttnProcessor(memory, name, proc) if name.endswith("attn1.processor") else proc
               for name, proc in original.items()}
    unet.set_attn_processor(patched)
    try:
        yield
    finally:
        unet.set_attn_processor(original)

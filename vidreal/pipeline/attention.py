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

Two more things the processors handle: fused projections (``fused-qkv`` lever: the keys and values
come from one matrix product with the key and value rows of ``attn.to_qkv``, the same weights) and
token merging (``tome_ratio``: keys and values from merged tokens, ``approx.TokenMerge``); without
frame attention, ``SelfAttnProcessor`` does the latter for per-frame self-attention.
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

    def __post_init__(self):
        if self.attend not in ATTEND:
            raise ValueError(f"attend must be one of {ATTEND}, got {self.attend!r}")

    @property
    def nbytes(self) -> int:
        """Bytes held by the memory now."""
        return sum(t.numel() * t.element_size() for d in (self.anchor, self.last) for t in d.values())

    def put(self, table: dict, layer: str, value: torch.Tensor) -> None:
        if self.record and self.store is not None:
            table[layer, self.step] = value.to("cpu", copy=True) if self.store == "cpu" else value.clone()

    def get(self, table: dict, layer: str, like: torch.Tensor) -> torch.Tensor:
        try:
            return table[layer, self.step].to(like.device, like.dtype)
        except KeyError:
            raise RuntimeError(f"frame memory has no entry for {layer} at step {self.step}: "
                               "the anchor must be denoised before the frames that read it") from None


class CrossFrameAttnProcessor:
    """Self-attention whose keys/values come from the anchor (and the previous frame), see the module."""

    def __init__(self, memory: FrameMemory, name: str, fallback, merge=None):
        self.memory = memory
        self.name = name  # the layer's key in the frame memory
        self.fallback = fallback  # the original processor, used for cross-attention calls
        self.merge = merge or (lambda x: x)  # approx.TokenMerge for ToMe: merges the key/value tokens

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

        if memory.anchor_in_batch:
            anchors = by_frame[:, 0]  # (groups, tokens, C): first frame of each group
            memory.put(memory.anchor, self.name, anchors)
        else:
            anchors = memory.get(memory.anchor, self.name, hidden_states)

        query = attn.to_q(hidden_states)
        heads = attn.heads
        head_dim = query.shape[-1] // heads
        if memory.attend == "anchor":
            key, value = keys_values(attn, self.merge(anchors))
            kv_tokens = key.shape[1]
            # (groups, heads, frames * tokens, d) queries against (groups, heads, kv tokens, d) keys/values
            query = query.view(groups, frames * tokens, heads, head_dim).transpose(1, 2)
            key = key.view(groups, kv_tokens, heads, head_dim).transpose(1, 2)
            value = value.view(groups, kv_tokens, heads, head_dim).transpose(1, 2)
        else:
            first_prev = anchors[:, None] if memory.anchor_in_batch else memory.get(memory.last, self.name,
                                                                                   hidden_states)[:, None]
            previous = torch.cat([first_prev, by_frame[:, :-1]], dim=1)  # (groups, frames, tokens, C)
            memory.put(memory.last, self.name, by_frame[:, -1])
            previous = self.merge(previous.reshape(batch, tokens, -1))  # (batch, previous tokens, C)
            own_k, own_v = keys_values(attn, self.merge(anchors))  # (groups, anchor tokens, C)
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


class SelfAttnProcessor:
    """Per-frame self-attention with keys/values from merged tokens (ToMe, no frame attention)."""

    def __init__(self, merge, fallback):
        self.merge = merge
        self.fallback = fallback

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3 \
                or attn.spatial_norm is not None or attn.group_norm is not None:
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        residual = hidden_states
        batch, tokens, _ = hidden_states.shape
        query = attn.to_q(hidden_states)
        heads = attn.heads
        head_dim = query.shape[-1] // heads
        key, value = keys_values(attn, self.merge(hidden_states))
        query = query.view(batch, tokens, heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, heads, head_dim).transpose(1, 2)
        hidden_states = attend(attn, query, key, value, batch, tokens)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextmanager
def cross_frame_attention(unet: torch.nn.Module, memory: FrameMemory | None, merge=None):
    """Install CrossFrameAttnProcessor (``memory`` given) or SelfAttnProcessor (``memory`` None, ToMe
    ``merge`` given) on the UNet's self-attention layers; always restore the originals.

    Use it around one denoising call, never for longer: two streams on one UNet each install their
    own memory for their own calls.
    """
    original = dict(unet.attn_processors)

    def swap(name, proc):
        if memory is not None:
            return CrossFrameAttnProcessor(memory, name, proc, merge)
        return SelfAttnProcessor(merge, proc) if merge is not None else proc

    patched = {name: swap(name, proc) if name.endswith("attn1.processor") else proc
               for name, proc in original.items()}
    unet.set_attn_processor(patched)
    try:
        yield
    finally:
        unet.set_attn_processor(original)

"""Cross-frame attention: every frame's UNet self-attention reads keys/values from the anchor frame.

The UNet sees a batch laid out as ``groups`` equal halves, each a run of frames whose first frame is
that half's anchor: ``[uncond frames | cond frames]`` under classifier-free guidance (2 groups), or
just ``[frames]`` (1 group). Only self-attention (``attn1``) changes; text cross-attention stays
per frame.

Because every frame of a group attends to the same keys/values, the group's queries are
concatenated into one long sequence and attend to the anchor's keys/values in one call: the same
result as expanding the anchor's K/V to every frame, without copying them, and K/V projections
run for the anchors only.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class FrameLayout:
    """How the current UNet batch is laid out; set by the caller before each UNet call."""

    groups: int = 1


class CrossFrameAttnProcessor:
    """Self-attention whose keys/values come from the first frame of each batch group."""

    def __init__(self, layout: FrameLayout, fallback):
        self.layout = layout
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

        batch, tokens, _ = hidden_states.shape
        groups = self.layout.groups
        if batch % groups:
            raise ValueError(f"batch of {batch} cannot be split into {groups} frame groups")
        frames = batch // groups

        query = attn.to_q(hidden_states)
        anchors = hidden_states[::frames]  # (groups, tokens, C): first frame of each group
        key = attn.to_k(anchors)
        value = attn.to_v(anchors)

        heads = attn.heads
        head_dim = key.shape[-1] // heads
        # (groups, heads, frames * tokens, d) queries against (groups, heads, tokens, d) keys/values
        query = query.view(groups, frames * tokens, heads, head_dim).transpose(1, 2)
        key = key.view(groups, tokens, heads, head_dim).transpose(1, 2)
        value = value.view(groups, tokens, heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        hidden_states = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, tokens, heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))

        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextmanager
def cross_frame_attention(unet: torch.nn.Module, layout: FrameLayout):
    """Install CrossFrameAttnProcessor on the UNet's self-attention layers; always restore the originals."""
    original = dict(unet.attn_processors)
    patched = {
        name: CrossFrameAttnProcessor(layout, proc) if name.endswith("attn1.processor") else proc
        for name, proc in original.items()
    }
    unet.set_attn_processor(patched)
    try:
        yield
    finally:
        unet.set_attn_processor(original)

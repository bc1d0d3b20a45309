"""Opt-in approximations of the UNet (off by default; they change the output): DeepCache and ToMe.

* DeepCache (``deepcache_interval`` N >= 2): the UNet's deep features change little from one
  denoising step to the next. Every N-th step runs the full UNet and keeps the input of its last
  up-block (everything the deep blocks computed); the steps between run only the shallow path -
  ``conv_in``, the first down block(s), that last up-block on the kept input, ``conv_out`` - and
  skip the rest (Ma et al., "DeepCache", 2023). The ControlNets still run every step: the shallow
  skips take their fresh residuals.
* ToMe (``tome_ratio`` r): self-attention attends to fewer keys/values. The tokens of each 2x2
  block but its first are matched to their most similar block-first token (cosine similarity of
  the attention input); the fraction r of all tokens that match best are averaged into their
  match (Bolya & Hoffman, "Token Merging for Fast Stable Diffusion", 2023, here on the keys and
  values only, so queries - and the output's shape - stay whole).

Both keep frame counts and shapes, and both are deterministic (no random partition), so the
output still does not depend on ``chunk_size``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


# ----------------------------------------------------------------------------- ToMe
@dataclass
class TokenMerge:
    """Merge settings for the self-attention processors: ratio r and the latent's (h, w)."""

    ratio: float
    latent_hw: tuple[int, int]

    def grid(self, tokens: int) -> tuple[int, int]:
        """(h, w) of a layer's token grid: the latent's size halved per UNet level, as convolutions
        of stride 2 round it; (1, tokens) when no level matches."""
        h, w = self.latent_hw
        for _ in range(8):
            if h * w == tokens:
                return h, w
            h, w = (h + 1) // 2, (w + 1) // 2
        return 1, tokens

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N - round(r N), C): merged tokens (see the module)."""
        return merge_tokens(x, self.ratio, self.grid(x.shape[1]))


def merge_tokens(x: torch.Tensor, ratio: float, grid: tuple[int, int]) -> torch.Tensor:
    """Bipartite token merging of x (B, N, C) laid out on ``grid`` (h, w), N = h * w.

    Destinations: the first token of every 2x2 block; sources: the others. Each source is matched
    to the destination most similar to it (cosine); the ``round(ratio * N)`` best-matched sources
    (at most all of them) are averaged into their destinations, the rest are kept.
    Returns (B, N - merged, C): kept sources, then destinations.
    """
    batch, tokens, channels = x.shape
    h, w = grid
    first = torch.zeros(h, w, dtype=torch.bool, device=x.device)
    first[::2, ::2] = True
    first = first.flatten()
    dst_idx, src_idx = first.nonzero()[:, 0], (~first).nonzero()[:, 0]
    merged = min(round(ratio * tokens), len(src_idx))
    if merged <= 0:
        return x
    src, dst = x[:, src_idx], x[:, dst_idx]
    a = src / src.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    b = dst / dst.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    score, match = (a @ b.transpose(1, 2)).max(dim=-1)  # (B, sources): best destination and its similarity
    order = score.argsort(dim=-1, descending=True, stable=True)
    gone, kept = order[:, :merged], order[:, merged:]

    def take(t, index):
        return t.gather(1, index[..., None].expand(-1, -1, channels))

    dst = dst.scatter_reduce(1, match.gather(1, gone)[..., None].expand(-1, -1, channels), take(src, gone),
                             reduce="mean", include_self=True)
    return torch.cat([take(src, kept), dst], dim=1)


# ----------------------------------------------------------------------------- DeepCache
class DeepCache:
    """DeepCache for one denoising call: ``unet(step, ...)`` runs the full or the shallow UNet.

    interval: N (>= 2); step ``i`` (counted from the call's first step) is full when ``i % N == 0``.
    """

    def __init__(self, unet, interval: int):
        if interval < 2:
            raise ValueError(f"DeepCache needs an interval >= 2, got {interval}")
        self.unet = unet
        self.interval = interval
        self.feature = None  # input of the last up-block at the latest full step
        last = unet.up_blocks[-1]
        self.n_skips = len(last.resnets)  # skip connections the last up-block reads: the first ones

    def full(self, i: int) -> bool:
        return self.feature is None or i % self.interval == 0

    def __call__(self, i, sample, t, encoder_hidden_states, down, mid):
        """The UNet's noise prediction (B, C, h, w) at step ``i`` with ControlNet residuals ``down``, ``mid``."""
        unet = self.unet
        if self.full(i):
            def keep(module, args, kwargs):
                self.feature = kwargs["hidden_states"]

            hook = unet.up_blocks[-1].register_forward_pre_hook(keep, with_kwargs=True)
            try:
                return unet(sample, t, encoder_hidden_states=encoder_hidden_states,
                            down_block_additional_residuals=down, mid_block_additional_residual=mid,
                            return_dict=False)[0]
            finally:
                hook.remove()
        return self.shallow(sample, t, encoder_hidden_states, down)

    def shallow(self, sample, t, encoder_hidden_states, down):
        """UNet2DConditionModel.forward (SD 1.5 kind: no class/added embeddings) on the shallow path only."""
        unet = self.unet
        emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=t), None)
        if unet.time_embed_act is not None:
            emb = unet.time_embed_act(emb)
        sample = unet.conv_in(sample)
        skips = [sample]
        for block in unet.down_blocks:
            if len(skips) >= self.n_skips:
                break
            if getattr(block, "has_cross_attention", False):
                sample, res = block(hidden_states=sample, temb=emb, encoder_hidden_states=encoder_hidden_states)
            else:
                sample, res = block(hidden_states=sample, temb=emb)
            skips += res
        skips = [s + r for s, r in zip(skips[:self.n_skips], down)]  # the ControlNets' residuals, as the UNet adds them
        last = unet.up_blocks[-1]
        if getattr(last, "has_cross_attention", False):
            sample = last(hidden_states=self.feature, temb=emb, res_hidden_states_tuple=tuple(skips),
                          encoder_hidden_states=encoder_hidden_states)
        else:
            sample = last(hidden_states=self.feature, temb=emb, res_hidden_states_tuple=tuple(skips))
        if unet.conv_norm_out is not None:
            sample = unet.conv_act(unet.conv_norm_out(sample))
        return unet.conv_out(sample)

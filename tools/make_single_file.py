#!/usr/bin/env python
"""Write a diffusers Stable Diffusion 1.x folder as one original-layout (LDM/CompVis) checkpoint.

    python tools/make_single_file.py SD_FOLDER OUT.safetensors

Personalised SD 1.5 models are mostly shared as one ``.safetensors`` file in the original
CompVis key layout (``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.transformer.*``). diffusers' ``from_single_file`` reads only that layout, so
tests (and users holding a diffusers folder) need this inverse of diffusers' converters
(``diffusers.loaders.single_file_utils.convert_ldm_*``). The mapping is derived from each
component's own config (number of blocks, ``layers_per_block``), so it works for the real
SD 1.5 architecture and for the tiny test models alike. The UNet and VAE keys round-trip exactly
through diffusers' converters; ``tests/test_loading.py`` checks that.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0",
           "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _sub(name: str, table: dict[str, str]) -> str:
    """Replace the first dotted prefix of `name` found in `table`."""
    for old, new in table.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old):]
    return name


def unet_prefix_map(config: dict) -> dict[str, str]:
    """diffusers UNet module prefix -> LDM prefix, for a UNet2DConditionModel config."""
    n = len(config["block_out_channels"])
    lpb = config["layers_per_block"]
    out = {}
    for i in range(n):
        for j in range(lpb):
            idx = i * (lpb + 1) + j + 1
            out[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{idx}.0"
            out[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{idx}.1"
        if i < n - 1:
            out[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{i * (lpb + 1) + lpb + 1}.0.op"
        has_attn = "CrossAttn" in config["up_block_types"][i]
        for j in range(lpb + 1):
            idx = i * (lpb + 1) + j
            out[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{idx}.0"
            out[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{idx}.1"
        if i < n - 1:
            out[f"up_blocks.{i}.upsamplers.0.conv"] = f"output_blocks.{i * (lpb + 1) + lpb}.{2 if has_attn else 1}.conv"
    out["mid_block.attentions.0"] = "middle_block.1"
    for j in range(2):
        out[f"mid_block.resnets.{j}"] = f"middle_block.{2 * j}"
    return out


def unet_to_ldm(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    blocks = unet_prefix_map(config)
    out = {}
    for key, value in state.items():
        new = _sub(key, _UNET_TOP)
        if new == key:
            prefix = next((p for p in blocks if key.startswith(p + ".")), None)
            if prefix is None:
                raise ValueError(f"unet key without an LDM name: {key}")
            rest = key[len(prefix) + 1:]
            if ".resnets." in prefix:
                rest = _sub(rest, _RESNET)
            new = blocks[prefix] + "." + rest
        out["model.diffusion_model." + new] = value
    return out


def vae_to_ldm(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    n = len(config["block_out_channels"])
    table = {}
    for i in range(n):
        table[f"encoder.down_blocks.{i}.resnets"] = f"encoder.down.{i}.block"
        table[f"encoder.down_blocks.{i}.downsamplers.0.conv"] = f"encoder.down.{i}.downsample.conv"
        table[f"decoder.up_blocks.{i}.resnets"] = f"decoder.up.{n - 1 - i}.block"
        table[f"decoder.up_blocks.{i}.upsamplers.0.conv"] = f"decoder.up.{n - 1 - i}.upsample.conv"
    for part in ("encoder", "decoder"):
        for j in range(2):
            table[f"{part}.mid_block.resnets.{j}"] = f"{part}.mid.block_{j + 1}"
        table[f"{part}.mid_block.attentions.0"] = f"{part}.mid.attn_1"
        table[f"{part}.conv_norm_out"] = f"{part}.norm_out"
    out = {}
    for key, value in state.items():
        new = _sub(key, table)
        if ".mid_block.attentions.0." in key:
            prefix, leaf = new.split(".attn_1.", 1)
            new = f"{prefix}.attn_1." + _sub(leaf, _VAE_ATTN)
            if value.ndim == 2:  # the original VAE attention uses 1x1 convolutions
                value = value[:, :, None, None]
        new = new.replace(".conv_shortcut.", ".nin_shortcut.")
        out["first_stage_model." + new] = value
    return out


def text_encoder_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        key = key if key.startswith("text_model.") else "text_model." + key
        out["cond_stage_model.transformer." + key] = value
    return out


def convert(sd_folder: str | Path) -> dict[str, torch.Tensor]:
    """Return the original-layout state dict of a diffusers SD 1.x folder (unet, vae, text_encoder)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    sd = Path(sd_folder)
    unet = UNet2DConditionModel.from_pretrained(sd, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(sd, subfolder="vae")
    text_encoder = CLIPTextModel.from_pretrained(sd / "text_encoder")
    state = {}
    state.update(unet_to_ldm(unet.state_dict(), dict(unet.config)))
    state.update(vae_to_ldm(vae.state_dict(), dict(vae.config)))
    state.update(text_encoder_to_ldm(text_encoder.state_dict()))
    return {k: v.detach().contiguous() for k, v in state.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sd_folder", help="a diffusers StableDiffusionPipeline folder")
    parser.add_argument("output", help="the .safetensors file to write")
    args = parser.parse_args()
    from safetensors.torch import save_file

    state = convert(args.sd_folder)
    save_file(state, args.output)
    print(f"{len(state)} tensors -> {args.output}")


if __name__ == "__main__":
    main()

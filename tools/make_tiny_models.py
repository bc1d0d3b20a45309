#!/usr/bin/env python
"""Build tiny, randomly initialised Stable Diffusion 1.5-architecture models, offline.

    python tools/make_tiny_models.py OUT_DIR

writes, in the layout users download from the hub:
    OUT_DIR/sd/                  model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/
    OUT_DIR/controlnet-canny/    config.json + diffusion_pytorch_model.safetensors
    OUT_DIR/controlnet-pose/     (same)
    OUT_DIR/taesd/               an AutoencoderTiny (TAESD's architecture) for ``--vae``
    OUT_DIR/vae-kl/              another AutoencoderKL (the model's VAE with other weights) for ``--vae``
so tests load them through exactly the code path real weights take (``from_pretrained``).

The models have SD 1.5's architecture (UNet with cross-attention blocks, a KL VAE, a CLIP text
encoder, PNDM scheduler) at toy width. The VAE has 2 blocks, so it downsamples by 2, not 8.
``ControlNetModel.from_unet`` zero-initialises the output convolutions; left that way the
conditions would have no effect at all, so they are re-initialised here.

    python tools/make_tiny_models.py OUT_DIR --full-size

writes the same layout with SD 1.5's real sizes (860M-parameter UNet, 8x VAE, 12-layer CLIP text
encoder, ControlNets of SD 1.5's shape) and random weights, saved in fp16: their outputs mean
nothing, but they run exactly as long and take exactly as much memory as the real weights, so
``tools/bench_translate.py`` can measure GPU speed where no weights can be downloaded.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

# Words that must be single tokens (prompts, TI initialisers, VisDA classes) in the tiny vocabulary.
WORDS = (
    "a an the of in and with on at by to person people object objects style sks valid best quality "
    "extremely detailed photo realistic real rendered longbody lowres bad anatomy hands missing "
    "fingers extra digit fewer digits cropped worst low aeroplane bicycle bus car horse knife "
    "motorcycle plant skateboard train truck man woman walking standing street gesture"
).split()


CONDITION_GAIN = 100.0
# Randomly initialised self-attention has near-uniform softmax weights, so every token reads the
# mean of the values and it hardly matters *whose* keys/values a frame attends to. Trained models
# attend sharply; a gain on the query/key projections restores that, so cross-frame attention has
# a visible effect on the tiny model (mean change ~3.5 levels against ~0.05 without it).
ATTENTION_SHARPNESS = 6.0


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def make_tokenizer():
    """A CLIP tokenizer with a byte-level base vocabulary plus merges making each of WORDS one token.

    Merges are added in rounds: each round tokenizes every word with the merges so far and appends
    merges that join its remaining pieces left to right (later merges rank lower, so they never
    undo earlier segmentations).
    """
    from transformers import CLIPTokenizer

    base = list(bytes_to_unicode().values())
    tokens = base + [c + "</w>" for c in base]
    merges: list[tuple[str, str]] = []
    specials = ["<|startoftext|>", "<|endoftext|>"]

    def build():
        vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens + specials))}
        return CLIPTokenizer(vocab=vocab, merges=list(merges), model_max_length=77)

    tok = build()
    for _ in range(10):
        split = {w: tok.convert_ids_to_tokens(tok(w, add_special_tokens=False).input_ids) for w in WORDS}
        todo = {w: pieces for w, pieces in split.items() if len(pieces) > 1}
        if not todo:
            return tok
        for pieces in todo.values():
            while len(pieces) > 1:
                pair = (pieces[0], pieces[1])
                if pair not in merges:
                    merges.append(pair)
                    tokens.append(pair[0] + pair[1])
                pieces = [pair[0] + pair[1]] + pieces[2:]
        tok = build()
    raise RuntimeError(f"tiny vocabulary: could not make single tokens of {sorted(todo)}")


def make_sd(out: Path, seed: int = 0) -> None:
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = make_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    with torch.no_grad():
        for name, module in unet.named_modules():
            if name.endswith("attn1"):
                module.to_q.weight.mul_(ATTENTION_SHARPNESS)
                module.to_k.weight.mul_(ATTENTION_SHARPNESS)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    # SD 1.5's own scheduler config.
    scheduler = PNDMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)


def make_sd_full(out: Path, seed: int = 0) -> None:
    """SD 1.5's architecture at full size (configs as published with the weights), random, fp16."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = make_tokenizer()
    torch.manual_seed(seed)
    # UNet2DConditionModel's defaults are SD 1.x's blocks; SD 1.5 differs in these three.
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    blocks = ("DownEncoderBlock2D",) * 4
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=blocks,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                        sample_size=512)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    scheduler = PNDMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", skip_prk_steps=True, set_alpha_to_one=False,
                              steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.to(torch.float16).save_pretrained(out, safe_serialization=True)


def make_controlnet(sd: Path, out: Path, seed: int, full_size: bool = False) -> None:
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(sd, subfolder="unet")
    if full_size:  # SD 1.5 ControlNets' own shape; zero convolutions re-initialised, no gains
        controlnet = ControlNetModel.from_unet(unet)
        torch.manual_seed(seed)
        for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            conv.reset_parameters()
        controlnet.to(torch.float16).save_pretrained(out, safe_serialization=True)
        return
    vae_factor = 2 ** (len(json.loads((sd / "vae" / "config.json").read_text())["block_out_channels"]) - 1)
    # The conditioning embedding must downsample image -> latent by the VAE's factor:
    # one stride-2 step per extra channel entry.
    channels = tuple(16 * 2**i for i in range(vae_factor.bit_length()))
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=channels)
    torch.manual_seed(seed)
    zeroed = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block,
              controlnet.controlnet_cond_embedding.conv_out]
    for conv in zeroed:
        conv.reset_parameters()
    # The tiny UNet's GroupNorms swamp a default-size conditioning signal (mean |change| 0.0003 in
    # [0, 1]); a gain of 100 on the embedding's output makes conditions steer about as much as the
    # prompt does (~0.02), so tests can tell conditions apart.
    with torch.no_grad():
        controlnet.controlnet_cond_embedding.conv_out.weight.mul_(CONDITION_GAIN)
    controlnet.save_pretrained(out, safe_serialization=True)


def make_taesd(sd: Path, out: Path, seed: int = 3, full_size: bool = False) -> None:
    """A random AutoencoderTiny: TAESD's own config at full size; at toy size as many blocks as the
    model's VAE (the same downsampling factor) and narrow channels."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    if full_size:
        AutoencoderTiny().to(torch.float16).save_pretrained(out, safe_serialization=True)
        return
    blocks = len(json.loads((sd / "vae" / "config.json").read_text())["block_out_channels"])
    AutoencoderTiny(encoder_block_out_channels=(16,) * blocks, decoder_block_out_channels=(16,) * blocks,
                    num_encoder_blocks=(1,) * blocks, num_decoder_blocks=(1,) * blocks,
                    latent_channels=4).save_pretrained(out, safe_serialization=True)


def make_vae_kl(sd: Path, out: Path, seed: int = 4) -> None:
    """The model's AutoencoderKL architecture with other random weights (a "fine-tuned" VAE)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    AutoencoderKL.from_config(AutoencoderKL.load_config(sd / "vae")).save_pretrained(out, safe_serialization=True)


def make_all(out_dir: str | Path, full_size: bool = False) -> dict[str, Path]:
    out = Path(out_dir)
    paths = {"sd": out / "sd", "canny": out / "controlnet-canny", "pose": out / "controlnet-pose",
             "taesd": out / "taesd"}
    (make_sd_full if full_size else make_sd)(paths["sd"])
    make_controlnet(paths["sd"], paths["canny"], seed=1, full_size=full_size)
    make_controlnet(paths["sd"], paths["pose"], seed=2, full_size=full_size)
    make_taesd(paths["sd"], paths["taesd"], full_size=full_size)
    if not full_size:
        paths["vae-kl"] = out / "vae-kl"
        make_vae_kl(paths["sd"], paths["vae-kl"])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to write sd/, controlnet-canny/, controlnet-pose/, taesd/ (vae-kl/) into")
    parser.add_argument("--full-size", action="store_true",
                        help="SD 1.5's real sizes with random fp16 weights (for GPU benchmarks; ~3.5 GB)")
    args = parser.parse_args()
    for name, path in make_all(args.out_dir, args.full_size).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()

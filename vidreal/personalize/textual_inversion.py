"""Textual Inversion: learn one new token embedding (e.g. ``<realism>``) for the target style.

The report's recipe (Chapter 2) is the default: placeholder ``<realism>``, initializer token
"valid", learnable property "object" (prompts like "a photo of a {}"), resolution 512, batch 1,
gradient accumulation 4, 3000 steps, lr 5e-4 scaled by batch x accumulation x processes,
constant, no warmup. Only the new token's row of the text encoder's embedding matrix changes:
every other row is put back after each optimizer step (as diffusers' ``textual_inversion.py``
does; AdamW's weight decay would otherwise move them).

Output folder: ``learned_embeds.safetensors`` = ``{placeholder: float32 (1, dim)}`` (diffusers'
format: ``pipe.load_textual_inversion(file, token=...)``, ``vidreal translate --embedding``; it
works on a DreamBooth model of the same base too), ``vidreal_personalize.yaml``,
``samples.png`` and ``checkpoints/step-N``.
"""
from __future__ import annotations

import logging
import time

import torch

from vidreal.checks import positive_int
from vidreal.config import DEFAULT_MODEL
from vidreal.errors import ConfigError
from vidreal.personalize.checkpoints import resume_step
from vidreal.personalize.data import check_images, find_images, load_image, sample_indices
from vidreal.personalize.models import check_model, check_resolution, load_component
from vidreal.personalize.outputs import (
    CONFIG_NAME, SAMPLES_NAME, TrainResult, generate_samples, prepare_output, save_grid, write_yaml,
)
from vidreal.personalize.training import (
    WEIGHT_DTYPES, check_positive, diffusion_loss, free_memory, make_accelerator, make_optimizer,
    resolve_mixed_precision, run_training, step_generator,
)
from vidreal.runtime import resolve_device

log = logging.getLogger(__name__)

EMBEDS_NAME = "learned_embeds.safetensors"

OBJECT_TEMPLATES = (
    "a photo of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}",
    "a photo of a clean {}", "a photo of a dirty {}", "a dark photo of the {}", "a photo of my {}",
    "a photo of the cool {}", "a close-up photo of a {}", "a bright photo of the {}",
    "a cropped photo of a {}", "a photo of the {}", "a good photo of the {}", "a photo of one {}",
    "a close-up photo of the {}", "a rendition of the {}", "a photo of the clean {}",
    "a rendition of a {}", "a photo of a nice {}", "a good photo of a {}", "a photo of the nice {}",
    "a photo of the small {}", "a photo of the weird {}", "a photo of the large {}",
    "a photo of a cool {}", "a photo of a small {}",
)
STYLE_TEMPLATES = (
    "a painting in the style of {}", "a rendering in the style of {}",
    "a cropped painting in the style of {}", "the painting in the style of {}",
    "a clean painting in the style of {}", "a dirty painting in the style of {}",
    "a dark painting in the style of {}", "a picture in the style of {}",
    "a cool painting in the style of {}", "a close-up painting in the style of {}",
    "a bright painting in the style of {}", "a good painting in the style of {}",
    "a rendition in the style of {}", "a nice painting in the style of {}",
    "a small painting in the style of {}", "a weird painting in the style of {}",
    "a large painting in the style of {}",
)
TEMPLATES = {"object": OBJECT_TEMPLATES, "style": STYLE_TEMPLATES}


def check_tokens(tokenizer, placeholder: str, initializer: str) -> int:
    """ConfigError unless ``placeholder`` is new to the vocabulary and ``initializer`` is exactly
    one known token; returns the initializer's token id."""
    if not placeholder or any(c.isspace() for c in placeholder):
        raise ConfigError(f"placeholder must be one word without spaces, got {placeholder!r}")
    pieces = tokenizer.tokenize(placeholder)
    vocab = tokenizer.get_vocab()
    if placeholder in vocab or (len(pieces) == 1 and pieces[0] in vocab):
        raise ConfigError(f"placeholder {placeholder!r} is already a token of the model's vocabulary; "
                          "pick a new word such as '<realism>'")
    ids = tokenizer.encode(initializer, add_special_tokens=False)
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise ConfigError(f"initializer {initializer!r} is {len(ids)} tokens {pieces}, it must be "
                          "exactly one token of the vocabulary (e.g. 'valid')")
    if ids[0] == tokenizer.unk_token_id:
        raise ConfigError(f"initializer {initializer!r} is not in the model's vocabulary")
    return ids[0]


def train_textual_inversion(train_dir, output, model: str = DEFAULT_MODEL, *,
                            placeholder: str = "<realism>", initializer: str = "valid",
                            learnable_property: str = "object", resolution: int = 512,
                            batch_size: int = 1, gradient_accumulation: int = 4, lr: float = 5e-4,
                            scale_lr: bool = True, steps: int = 3000, flip_p: float = 0.5,
                            gradient_checkpointing: bool = False, max_grad_norm: float | None = None,
                            mixed_precision: str = "auto", device: str | None = None, seed: int = 0,
                            checkpoint_every: int | None = 500, keep_checkpoints: int | None = 2,
                            resume: bool = False, num_samples: int = 4, sample_steps: int = 20,
                            progress: bool = True) -> TrainResult:
    """Learn an embedding for ``placeholder`` from the images of ``train_dir``; write it to
    ``output/learned_embeds.safetensors`` (``{placeholder: float32 (1, hidden)}``).

    train_dir: a folder of images (recursive) or a list of image files. model: a diffusers SD
    folder or hub id (a DreamBooth output works). initializer: one vocabulary token whose
    embedding is the starting point. learnable_property: "object" or "style" (prompt templates).
    steps counts optimizer steps, each over ``gradient_accumulation`` micro-batches of
    ``batch_size``; with ``scale_lr`` the rate used is ``lr * batch_size * gradient_accumulation
    * processes``. flip_p: probability of a horizontal flip per image. Other arguments as in
    :func:`vidreal.personalize.train_dreambooth`. Every input is checked before training.
    """
    t0 = time.perf_counter()
    # 1. Check inputs.
    if learnable_property not in TEMPLATES:
        raise ConfigError(f"learnable_property must be one of {', '.join(TEMPLATES)}, got {learnable_property!r}")
    check_positive(steps=steps, batch_size=batch_size, lr=lr, gradient_accumulation=gradient_accumulation,
                   sample_steps=sample_steps)
    for name, value in dict(steps=steps, batch_size=batch_size, gradient_accumulation=gradient_accumulation,
                            seed=seed, num_samples=num_samples).items():
        positive_int(name, value, minimum=0)
    if not 0 <= flip_p <= 1:
        raise ConfigError(f"flip_p must be in [0, 1], got {flip_p!r}")
    images = check_images(find_images(train_dir, "training images"), "training images")
    model = check_model(model)
    from transformers import AutoTokenizer

    tokenizer = load_component(AutoTokenizer, model, "tokenizer")
    init_id = check_tokens(tokenizer, placeholder, initializer)
    check_resolution(model, resolution)
    device = str(resolve_device(device))
    mixed_precision = resolve_mixed_precision(mixed_precision, device)
    out = prepare_output(output, EMBEDS_NAME, resume)

    # 2. Models: only the text encoder's input embeddings train (fp32); UNet and VAE are frozen.
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    from vidreal.io import atomic_output

    accelerator = make_accelerator(device, mixed_precision)
    dev = accelerator.device
    weight_dtype = WEIGHT_DTYPES[mixed_precision]
    log.info("Textual Inversion: %d images, device %s, mixed precision %s", len(images), dev, mixed_precision)
    text_encoder = load_component(CLIPTextModel, model, "text_encoder")
    vae = load_component(AutoencoderKL, model, "vae", dtype=weight_dtype)
    unet = load_component(UNet2DConditionModel, model, "unet", dtype=weight_dtype)
    noise_scheduler = load_component(DDPMScheduler, model, "scheduler")

    tokenizer.add_tokens([placeholder])
    token_id = tokenizer.convert_tokens_to_ids(placeholder)
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    embeddings = text_encoder.get_input_embeddings()
    with torch.no_grad():
        embeddings.weight[token_id] = embeddings.weight[init_id].clone()
    vae.requires_grad_(False).eval().to(dev)
    unet.requires_grad_(False).to(dev)
    text_encoder.requires_grad_(False)
    embeddings.requires_grad_(True)
    if gradient_checkpointing:
        unet.train()  # diffusers only checkpoints in training mode; nothing in SD's UNet drops out
        unet.enable_gradient_checkpointing()
        text_encoder.gradient_checkpointing_enable()
    text_encoder.train()
    effective_lr = lr * batch_size * gradient_accumulation * accelerator.num_processes if scale_lr else lr
    params = list(embeddings.parameters())
    optimizer, optimizer_name = make_optimizer(params, effective_lr, dev, use_8bit=False)
    text_encoder, optimizer = accelerator.prepare(text_encoder, optimizer)
    original = accelerator.unwrap_model(text_encoder).get_input_embeddings().weight.detach().clone()
    frozen = torch.ones(original.shape[0], dtype=torch.bool, device=original.device)
    frozen[token_id] = False

    start = resume_step(accelerator, out, resume, "was it written for another model or placeholder?")

    config = dict(
        method="textual-inversion", model=model, train_dir=str(train_dir), output=out,
        placeholder=placeholder, initializer=initializer, learnable_property=learnable_property,
        resolution=resolution, batch_size=batch_size, gradient_accumulation=gradient_accumulation,
        lr=lr, scale_lr=scale_lr, effective_lr=effective_lr, lr_schedule="constant", warmup_steps=0,
        steps=steps, flip_p=flip_p, gradient_checkpointing=gradient_checkpointing,
        optimizer=optimizer_name, max_grad_norm=max_grad_norm, mixed_precision=mixed_precision,
        device=str(dev), seed=seed, checkpoint_every=checkpoint_every,
        keep_checkpoints=keep_checkpoints, n_images=len(images),
    )
    write_yaml(out / CONFIG_NAME, config)

    # 3. Train.
    templates = TEMPLATES[learnable_property]

    def step_fn(k: int) -> torch.Tensor:
        g = step_generator(seed, k)
        flips = (torch.rand(batch_size, generator=g) < flip_p).tolist()
        which = torch.randint(len(templates), (batch_size,), generator=g).tolist()
        paths = [images[i] for i in sample_indices(seed, 0, len(images), k * batch_size, batch_size)]
        pixels = torch.stack([load_image(p, resolution, f) for p, f in zip(paths, flips)]).to(dev, weight_dtype)
        prompts = [templates[i].format(placeholder) for i in which]
        ids = tokenizer(prompts, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                        return_tensors="pt").input_ids.to(dev)
        hidden = text_encoder(ids)[0].to(weight_dtype)
        return diffusion_loss(vae, unet, noise_scheduler, pixels, hidden, g)

    def restore_rows() -> None:
        with torch.no_grad():
            weight = accelerator.unwrap_model(text_encoder).get_input_embeddings().weight
            weight[frozen] = original[frozen]

    losses = run_training(
        accelerator, step_fn, params, optimizer, steps=steps, start_step=start,
        accumulation=gradient_accumulation, max_grad_norm=max_grad_norm, after_step=restore_rows,
        out=out, checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints,
        progress=progress, desc="Textual Inversion")

    # 4. Save the embedding (diffusers' learned_embeds format).
    learned = accelerator.unwrap_model(text_encoder).get_input_embeddings().weight[token_id:token_id + 1]
    embeds = out / EMBEDS_NAME
    with atomic_output(embeds) as tmp:
        save_file({placeholder: learned.detach().float().cpu().contiguous()}, str(tmp))
    del optimizer, text_encoder, unet, vae
    accelerator.free_memory()
    free_memory()

    # 5. Show what it learned: the base model with the new token.
    samples = None
    if num_samples:
        pipe = load_component(StableDiffusionPipeline, model, dtype=weight_dtype, safety_checker=None,
                              requires_safety_checker=False)
        pipe.load_textual_inversion(str(embeds), token=placeholder)
        pipe.to(dev)
        prompt = templates[0].format(placeholder)
        samples = save_grid(generate_samples(pipe, [prompt] * num_samples, resolution,
                                                           sample_steps, seed), out / SAMPLES_NAME)
        del pipe
    seconds = time.perf_counter() - t0
    total = start + len(losses)
    config["result"] = dict(steps=total, final_loss=losses[-1] if losses else None, seconds=round(seconds, 1))
    write_yaml(out / CONFIG_NAME, config)
    log.info("Textual Inversion embedding for %s written to %s (%d steps, %.0f s)", placeholder, embeds, total, seconds)
    return TrainResult(output=out, weights=embeds, steps=total, losses=losses, seconds=seconds,
                       samples=samples, config=config)

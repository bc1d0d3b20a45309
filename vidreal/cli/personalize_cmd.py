"""``vidreal personalize dreambooth|textual-inversion`` and ``vidreal caption``.

Options mirror the keyword arguments of :func:`vidreal.personalize.train_dreambooth`,
:func:`~vidreal.personalize.train_textual_inversion` and :func:`~vidreal.personalize.caption_images`;
an option left out keeps the function's default (the report's recipe).
"""
from __future__ import annotations

import click

from vidreal.config import DEFAULT_MODEL
from vidreal.errors import ConfigError

MIXED = click.Choice(["auto", "no", "fp16", "bf16"])


def _given(**kwargs):
    return {k: v for k, v in kwargs.items() if v is not None}


def _settings(config_path, method: str, train, **flags) -> dict:
    """The file's ``personalize: {method: {...}}`` settings (keys: ``train``'s keyword arguments but
    progress) overridden by the flags given (defaults < file < flags)."""
    import inspect

    from vidreal.config import PERSONALIZE_METHODS, check_keys, merge_settings, read_section

    section = read_section(config_path, "personalize", PERSONALIZE_METHODS).get(method) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"the personalize {method!r} section must be a mapping of keys", config_path)
    valid = [name for name, param in inspect.signature(train).parameters.items()
             if param.default is not inspect.Parameter.empty and name != "progress"]
    check_keys(section, valid, str(config_path), f"personalize {method} setting")
    return merge_settings(section, **flags)


def _training_options(steps: int, lr: str, accumulation: int, checkpointing: str):
    """Flags both trainers share; the arguments only fill in each trainer's defaults in --help."""
    opts = [
        click.option("--model", help=f"Base SD 1.5 weights: hub id or diffusers folder (a DreamBooth output works; "
                                     f"default {DEFAULT_MODEL})."),
        click.option("--config", "config_path", type=click.Path(dir_okay=False),
                     help="YAML file whose personalize: section (dreambooth: / textual_inversion:) sets these "
                          "options (underscored names); flags override it."),
        click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
                     help="Output folder (model / embedding, checkpoints, samples.png, vidreal_personalize.yaml)."),
        click.option("--steps", type=click.IntRange(min=1), help=f"Optimizer steps (default {steps})."),
        click.option("--resolution", type=click.IntRange(min=1), help="Training resolution (default 512)."),
        click.option("--lr", type=float, help=f"Learning rate, constant, no warmup (default {lr})."),
        click.option("--batch-size", type=click.IntRange(min=1), help="Images per step (default 1)."),
        click.option("--gradient-accumulation", type=click.IntRange(min=1), help=f"Micro-batches per optimizer step (default {accumulation})."),
        click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None,
                     help=f"Trade compute for memory (default {checkpointing})."),
        click.option("--mixed-precision", type=MIXED, help="auto: bf16/fp16 on CUDA, none on CPU."),
        click.option("--device", help="cuda, cuda:N, mps or cpu (default: auto)."),
        click.option("--seed", type=click.IntRange(min=0), help="Random seed (default 0)."),
        click.option("--checkpoint-every", type=click.IntRange(min=0), help="Save OUT/checkpoints/step-N every N steps (0: never; default 500)."),
        click.option("--keep-checkpoints", type=click.IntRange(min=1), help="Newest checkpoints kept (default 2)."),
        click.option("--resume", is_flag=True, default=None, help="Continue from the newest checkpoint in OUT."),
        click.option("--num-samples", type=click.IntRange(min=0), help="Images in OUT/samples.png (default 4, 0: none)."),
        click.option("--sample-steps", type=click.IntRange(min=1), help="Denoising steps for the samples (default 20)."),
        click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar."),
    ]

    def decorate(func):
        for opt in reversed(opts):
            func = opt(func)
        return func

    return decorate


def _report(result) -> None:
    click.echo(f"weights: {result.weights}")
    if result.samples is not None:
        click.echo(f"samples: {result.samples}")
    loss = f", final loss {result.losses[-1]:.4f}" if result.losses else ""
    click.echo(f"steps: {result.steps}{loss}")


@click.group("personalize")
def personalize():
    """Personalize SD 1.5 on unlabelled target-domain images (DreamBooth, Textual Inversion).

    \b
    Examples:
      vidreal personalize dreambooth --instance-dir real/ -o models/sks
      vidreal personalize textual-inversion --model models/sks --train-dir real/ -o models/realism
      vidreal translate clip.mp4 -o out.mp4 --model models/sks \\
          --embedding models/realism/learned_embeds.safetensors
    """


@personalize.command("dreambooth")
@click.option("--instance-dir", required=True, type=click.Path(exists=False),
              help="Folder of target images (searched recursively).")
@_training_options(steps=800, lr="2e-6", accumulation=1, checkpointing="on")
@click.option("--preset", type=click.Choice(["visda", "rocog"]),
              help="Default prompts: visda 'an object in the style of sks object' / 'an object'; "
                   "rocog 'a person in the style of sks person' / 'a person'.")
@click.option("--instance-prompt", help="Prompt for the target images (overrides --preset).")
@click.option("--class-prompt", help="Prompt for the prior-preservation images (overrides --preset).")
@click.option("--class-dir", type=click.Path(file_okay=False), help="Class images folder (default OUT/class_images); reused when filled.")
@click.option("--num-class-images", type=click.IntRange(min=0), help="Prior-preservation images (default 1000; 0: no prior preservation).")
@click.option("--prior-loss-weight", type=click.FloatRange(min=0), help="Weight of the prior loss (default 1.0).")
@click.option("--class-steps", type=click.IntRange(min=1), help="Denoising steps per generated class image (default 20).")
@click.option("--train-text-encoder/--no-train-text-encoder", default=None, help="Also fine-tune the text encoder.")
@click.option("--8bit-adam/--no-8bit-adam", "use_8bit_adam", default=None,
              help="8-bit AdamW when bitsandbytes and CUDA are available (default on).")
def dreambooth(instance_dir, output, config_path, progress, **options):
    """Fine-tune SD 1.5 on target images with prior preservation (the report's DreamBooth).

    Writes a diffusers model folder OUT that `vidreal translate --model OUT` loads.

    \b
    Example:
      vidreal personalize dreambooth --instance-dir rocog/real/ground/Advance -o models/rocog \\
          --preset rocog --num-class-images 200
    """
    from vidreal.personalize import train_dreambooth

    settings = _settings(config_path, "dreambooth", train_dreambooth, **options)
    _report(train_dreambooth(instance_dir, output, progress=progress, **settings))


@personalize.command("textual-inversion")
@click.option("--train-dir", required=True, type=click.Path(exists=False),
              help="Folder of target images (searched recursively).")
@_training_options(steps=3000, lr="5e-4, scaled by batch x accumulation", accumulation=4, checkpointing="off")
@click.option("--placeholder", help="New token to learn (default <realism>).")
@click.option("--initializer", help="One existing token to start from (default 'valid').")
@click.option("--learnable-property", type=click.Choice(["object", "style"]), help="Prompt templates (default object).")
@click.option("--scale-lr/--no-scale-lr", default=None, help="Scale lr by batch x accumulation x processes (default on).")
def textual_inversion(train_dir, output, config_path, progress, **options):
    """Learn one new token embedding for the target style (the report's Textual Inversion).

    Writes OUT/learned_embeds.safetensors for `vidreal translate --embedding`.

    \b
    Example:
      vidreal personalize textual-inversion --train-dir visda/validation -o models/realism \\
          --placeholder "<realism>" --initializer valid
    """
    from vidreal.personalize import train_textual_inversion

    settings = _settings(config_path, "textual_inversion", train_textual_inversion, **options)
    _report(train_textual_inversion(train_dir, output, progress=progress, **settings))


@click.command("caption")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Prompts file to write.")
@click.option("--model", help="BLIP captioning model: hub id or local folder "
                               "(default Salesforce/blip-image-captioning-base).")
@click.option("--suffix", help="Text appended to every caption, e.g. 'in the style of <realism>'.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Images per forward pass (default 8).")
@click.option("--device", help="cuda, cuda:N, mps or cpu (default: auto).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), help="Longest caption in tokens (default 30).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def caption(images, output, progress, **options):
    """Caption IMAGES (a folder, searched recursively, or files) with BLIP into a prompts file.

    One `relative/path<TAB>caption` line per image, in sorted path order; `vidreal translate`
    and `vidreal batch` take it with --prompts-file.

    \b
    Example:
      vidreal caption visda/validation -o prompts.txt --suffix "in the style of <realism>"
    """
    from vidreal.personalize import caption_images

    result = caption_images(list(images), output, progress=progress, **_given(**options))
    click.echo(f"wrote {len(result.keys)} captions to {result.output}")
    if result.skipped:
        click.echo(f"skipped {len(result.skipped)} unreadable images")

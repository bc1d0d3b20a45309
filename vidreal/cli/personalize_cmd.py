"""``vidreal personalize dreambooth|textual-inversion`` and ``vidreal caption``.

Options mirror the keyword arguments of :func:`vidreal.personalize.train_dreambooth`,
:func:`~vidreal.personalize.train_textual_inversion` and :func:`~vidreal.personalize.caption_images`;
an option left out keeps the function's default (the report's recipe).
"""
from __future__ import annotations

import click

from vidreal.cli.common import option, progress_option, status, usage
from vidreal.config import DEFAULT_MODEL
from vidreal.errors import ConfigError

# --dtype as in translate; "no" is the old --mixed-precision spelling of fp32 (still accepted)
DTYPES = click.Choice(["auto", "fp16", "bf16", "fp32", "no"])


def _given(**kwargs):
    if kwargs.get("mixed_precision") == "fp32":
        kwargs["mixed_precision"] = "no"
    return {k: v for k, v in kwargs.items() if v is not None}


def _settings(config_path, method: str, train, **flags) -> dict:
    """The file's ``personalize: {method: {...}}`` settings (keys: ``train``'s keyword arguments but
    progress) overridden by the flags given (defaults < file < flags)."""
    import inspect

    from vidreal.config import PERSONALIZE_METHODS, merge_settings, read_section
    from vidreal.runtime import check_keys

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
        option("--train-steps", "steps", aliases=("--steps",), type=click.IntRange(min=1), show_default=str(steps),
               help="Optimizer steps (denoising steps are --sample-steps / --class-steps)."),
        option("--size", "resolution", aliases=("--resolution",), type=click.IntRange(min=1), show_default="512",
               help="Training image size in pixels (square crops)."),
        option("--lr", type=float, help="Learning rate, constant, no warmup.", show_default=f"{lr}"),
        option("--batch-size", type=click.IntRange(min=1), help="Images per step.", show_default="1"),
        option("--gradient-accumulation", type=click.IntRange(min=1), help="Micro-batches per optimizer step.", show_default=f"{accumulation}"),
        option("--gradient-checkpointing/--no-gradient-checkpointing", default=None,
                     help="Trade compute for memory.", show_default=f"{checkpointing}"),
        option("--dtype", "mixed_precision", aliases=("--mixed-precision",), type=DTYPES, metavar="[auto|fp16|bf16|fp32]",
               show_default="auto", help="Mixed-precision compute dtype: auto = bf16/fp16 on CUDA, fp32 on CPU."),
        option("--device", help="cuda, cuda:N, mps or cpu.", show_default="auto"),
        option("--seed", type=click.IntRange(min=0), help="Random seed.", show_default="0"),
        option("--checkpoint-every", type=click.IntRange(min=0), help="Save OUT/checkpoints/step-N every N steps (0: never).", show_default="500"),
        option("--keep-checkpoints", type=click.IntRange(min=1), help="Newest checkpoints kept.", show_default="2"),
        click.option("--resume", is_flag=True, default=None, help="Continue from the newest checkpoint in OUT."),
        option("--num-samples", type=click.IntRange(min=0), help="Images in OUT/samples.png.", show_default="4, 0: none"),
        option("--sample-steps", type=click.IntRange(min=1), help="Denoising steps for the samples.", show_default="20"),
        progress_option(),
    ]

    def decorate(func):
        for opt in reversed(opts):
            func = opt(func)
        return func

    return decorate


def _report(result) -> None:
    status(f"weights: {result.weights}")
    if result.samples is not None:
        status(f"samples: {result.samples}")
    loss = f", final loss {result.losses[-1]:.4f}" if result.losses else ""
    status(f"steps: {result.steps}{loss}")


@click.group("personalize", epilog="""\b
Examples:
  vidreal personalize dreambooth --train-dir real/ -o models/sks
  vidreal personalize textual-inversion --model models/sks --train-dir real/ -o models/realism
  vidreal translate clip.mp4 -o out.mp4 --model models/sks \\
      --embedding models/realism/learned_embeds.safetensors
""")
def personalize():
    """Personalize SD 1.5 on unlabelled target-domain images (DreamBooth, Textual Inversion)."""


@personalize.command("dreambooth", epilog="""\b
Examples:
  vidreal personalize dreambooth --train-dir rocog/real/ground/Advance -o models/rocog \\
      --prompt-set rocog --num-class-images 200
""")
@option("--train-dir", "instance_dir", aliases=("--instance-dir",), required=True, type=click.Path(exists=False),
        help="Folder of target (instance) images, searched recursively.")
@_training_options(steps=800, lr="2e-6", accumulation=1, checkpointing="on")
@option("--prompt-set", "preset", aliases=("--preset",), type=click.Choice(["visda", "rocog"]),
        help="Default prompts: visda 'an object in the style of sks object' / 'an object'; "
             "rocog 'a person in the style of sks person' / 'a person'.")
@click.option("--instance-prompt", help="Prompt for the target images (overrides --prompt-set).")
@click.option("--class-prompt", help="Prompt for the prior-preservation images (overrides --prompt-set).")
@option("--class-dir", type=click.Path(file_okay=False), help="Class images folder; reused when filled.", show_default="OUT/class_images")
@option("--num-class-images", type=click.IntRange(min=0), help="Prior-preservation images.", show_default="1000; 0: no prior preservation")
@option("--prior-loss-weight", type=click.FloatRange(min=0), help="Weight of the prior loss.", show_default="1.0")
@option("--class-steps", type=click.IntRange(min=1), help="Denoising steps per generated class image.", show_default="20")
@click.option("--train-text-encoder/--no-train-text-encoder", default=None, help="Also fine-tune the text encoder.")
@option("--8bit-adam/--no-8bit-adam", "use_8bit_adam", default=None,
              help="8-bit AdamW when bitsandbytes and CUDA are available.", show_default="on")
def dreambooth(instance_dir, output, config_path, progress, **options):
    """Fine-tune SD 1.5 on target images with prior preservation (the report's DreamBooth).

    Writes a diffusers model folder OUT that `vidreal translate --model OUT` loads.
    """
    from vidreal.personalize import train_dreambooth

    with usage():
        settings = _settings(config_path, "dreambooth", train_dreambooth, **options)
    _report(train_dreambooth(instance_dir, output, progress=progress, **settings))


@personalize.command("textual-inversion", epilog="""\b
Examples:
  vidreal personalize textual-inversion --train-dir visda/validation -o models/realism \\
      --placeholder "<realism>" --initializer valid
""")
@click.option("--train-dir", required=True, type=click.Path(exists=False),
              help="Folder of target images (searched recursively).")
@_training_options(steps=3000, lr="5e-4, scaled by batch x accumulation", accumulation=4, checkpointing="off")
@option("--placeholder", help="New token to learn.", show_default="<realism>")
@option("--initializer", help="One existing token to start from.", show_default="'valid'")
@option("--learnable-property", type=click.Choice(["object", "style"]), help="Prompt templates.", show_default="object")
@option("--scale-lr/--no-scale-lr", default=None, help="Scale lr by batch x accumulation x processes.", show_default="on")
def textual_inversion(train_dir, output, config_path, progress, **options):
    """Learn one new token embedding for the target style (the report's Textual Inversion).

    Writes OUT/learned_embeds.safetensors for `vidreal translate --embedding`.
    """
    from vidreal.personalize import train_textual_inversion

    with usage():
        settings = _settings(config_path, "textual_inversion", train_textual_inversion, **options)
    _report(train_textual_inversion(train_dir, output, progress=progress, **settings))


@click.command("caption", epilog="""\b
Examples:
  vidreal caption visda/validation -o prompts.txt --suffix "in the style of <realism>"
""")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Prompts file to write.")
@option("--model", help="BLIP captioning model: hub id or local folder.",
        show_default="Salesforce/blip-image-captioning-base")
@click.option("--suffix", help="Text appended to every caption, e.g. 'in the style of <realism>'.")
@option("--batch-size", type=click.IntRange(min=1), help="Images per forward pass.", show_default="8")
@option("--device", help="cuda, cuda:N, mps or cpu.", show_default="auto")
@option("--max-new-tokens", type=click.IntRange(min=1), help="Longest caption in tokens.", show_default="30")
@progress_option()
def caption(images, output, progress, **options):
    """Caption IMAGES (a folder, searched recursively, or files) with BLIP into a prompts file.

    One `relative/path<TAB>caption` line per image, in sorted path order; `vidreal translate`
    and `vidreal batch` take it with --prompts-file.
    """
    from vidreal.personalize import caption_images

    result = caption_images(list(images), output, progress=progress, **_given(**options))
    status(f"wrote {len(result.keys)} captions to {result.output}")
    if result.skipped:
        status(f"skipped {len(result.skipped)} unreadable images")

"""BLIP captions for target-domain images: the report's "target prompts" (Chapter 3).

Prompts file format (written by :func:`caption_images`, read by :func:`vidreal.prompts.read_prompts`), UTF-8,
one line per image in sorted path order::

    relative/path.png<TAB>a caption in the style of <realism>

The key is the image's path relative to the captioned folder (or the path as given when files
were listed); the caption has no tabs or newlines. ``vidreal.prompts`` reads it (and plain files of
one prompt per line) for ``vidreal translate`` and ``vidreal batch``.

Torch and transformers are imported only when captioning.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from vidreal.checks import positive_int
from vidreal.errors import InputError, ModelError
from vidreal.hub import HubNeed, check_hub, hub_error, is_hub_id, transformers_need
from vidreal.runtime import first_line, resolve_device, resolve_dtype

DEFAULT_CAPTION_MODEL = "Salesforce/blip-image-captioning-base"

log = logging.getLogger(__name__)


@dataclass
class CaptionResult:
    """output: the prompts file; keys: image keys in file order; captions: the written captions
    (suffix included), one per key; skipped: images left out (unreadable, or an empty caption)."""

    output: Path
    keys: list[str]
    captions: list[str]
    skipped: list[Path]


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def collect_images(images: str | Path | Sequence[str | Path]) -> list[tuple[str, Path]]:
    """(key, path) of every image of a folder (recursive) or of a list of files/folders, sorted.

    One folder: keys are paths relative to it. Otherwise keys are the paths as given (a listed
    folder contributes ``folder/relative``). InputError when a source is missing or no image is found.
    """
    from vidreal.personalize.data import find_images

    if isinstance(images, (str, Path)):
        images = [images]
    images = [Path(p) for p in images]
    if not images:
        raise InputError("no images given")
    paths = find_images(images, "images")
    if len(images) == 1 and images[0].is_dir():
        root = images[0]
        return [(p.relative_to(root).as_posix(), p) for p in paths]
    return [(p.as_posix(), p) for p in paths]


def blip_need(model: str) -> HubNeed:
    """The hub repo of BLIP captioning model ``model``."""
    return transformers_need(model, "--model PATH (a local BLIP folder)")


def load_blip(model: str, device, dtype):
    """BlipProcessor + BlipForConditionalGeneration (eval, on ``device``); failures -> ModelError.

    A hub id is checked up front: not cached and the hub offline or unreachable -> ModelError in seconds."""
    from transformers import BlipForConditionalGeneration, BlipProcessor

    from vidreal.progress import sync_libraries

    sync_libraries()  # transformers' loading bar follows vidreal's settings
    hub = is_hub_id(model)
    local_only = check_hub([blip_need(model)]) if hub else False
    try:
        processor = BlipProcessor.from_pretrained(model, local_files_only=local_only)
        blip = BlipForConditionalGeneration.from_pretrained(model, dtype=dtype, local_files_only=local_only)
    except (OSError, ValueError, ImportError) as exc:
        if hub:
            raise hub_error(blip_need(model), exc) from exc
        raise ModelError(f"cannot load BLIP captioning model {model!r} ({first_line(exc, 160)}); pass --model PATH "
                         "to a local BLIP folder") from exc
    return processor, blip.eval().to(device)


def caption_images(images, output, model: str = DEFAULT_CAPTION_MODEL, *, suffix: str | None = None,
                   batch_size: int = 8, device: str | None = None, max_new_tokens: int = 30,
                   progress: bool = True) -> CaptionResult:
    """Caption every image with BLIP and write the prompts file ``output`` (format: module doc).

    images: a folder (recursive) or a list of image files/folders. model: hub id or local folder
    of a BLIP captioning model (BlipForConditionalGeneration + BlipProcessor). suffix: appended
    after a space, e.g. "in the style of <realism>". device: None = auto (cuda > mps > cpu;
    fp16 on a GPU, fp32 on the cpu). Unreadable images are skipped with a warning; none
    readable -> InputError. The file is written atomically; an ``output`` that is one of the images is
    refused (OutputError) before the model loads.
    """
    import torch
    from PIL import Image
    from vidreal.progress import bar as tqdm  # tqdm on a terminal, plain lines in a log, off under -q

    from vidreal.io import atomic_output, read_video, refuse_overwriting

    positive_int("batch_size", batch_size)
    positive_int("max_new_tokens", max_new_tokens)
    items = collect_images(images)
    refuse_overwriting(output, [path for _, path in items])  # before BLIP loads
    device = resolve_device(device)
    dtype = resolve_dtype(None, device)
    processor, blip = load_blip(str(model), device, dtype)
    suffix = _clean(suffix or "")

    keys: list[str] = []
    captions: list[str] = []
    skipped: list[Path] = []
    bar = tqdm(total=len(items), desc="captions", disable=not progress, unit="img")
    for start in range(0, len(items), batch_size):
        batch, frames = [], []
        for key, path in items[start:start + batch_size]:
            try:
                frames.append(read_video(path).frames[0])
                batch.append(key)
            except InputError as exc:
                log.warning("skipping %s", exc)
                skipped.append(path)
        if batch:
            inputs = processor(images=[Image.fromarray(f) for f in frames], return_tensors="pt").to(device, dtype)
            with torch.no_grad():
                tokens = blip.generate(**inputs, max_new_tokens=max_new_tokens)
            texts = processor.batch_decode(tokens, skip_special_tokens=True)
            for key, text in zip(batch, texts):
                if not _clean(text):
                    log.warning("skipping %s: BLIP gave an empty caption", key)
                    skipped.append(dict(items)[key])
                    continue
                keys.append(key)
                captions.append(_clean(f"{text} {suffix}"))
        bar.update(len(items[start:start + batch_size]))
    bar.close()
    if not keys:
        raise InputError(f"none of the {len(items)} images got a caption (unreadable or empty)", items[0][1].parent)
    output = Path(output)
    with atomic_output(output) as tmp:
        Path(tmp).write_text("".join(f"{_clean(k)}\t{c}\n" for k, c in zip(keys, captions)), encoding="utf-8")
    log.info("wrote %d captions to %s", len(keys), output)
    return CaptionResult(output=output, keys=keys, captions=captions, skipped=skipped)

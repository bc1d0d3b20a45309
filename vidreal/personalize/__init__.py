"""Personalization of SD 1.5 on unlabelled target-domain images (the report's Chapter 2-3).

* :func:`train_dreambooth` - DreamBooth with prior preservation -> a diffusers model folder;
* :func:`train_textual_inversion` - one new token embedding -> ``learned_embeds.safetensors``;
* :func:`caption_images` - BLIP captions -> a prompts file; :func:`read_prompts` reads it.

Names are imported lazily: ``from vidreal.personalize import read_prompts`` does not load torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "train_dreambooth": "vidreal.personalize.dreambooth",
    "PRESETS": "vidreal.personalize.dreambooth",
    "train_textual_inversion": "vidreal.personalize.textual_inversion",
    "caption_images": "vidreal.personalize.caption",
    "read_prompts": "vidreal.prompts",
    "DEFAULT_CAPTION_MODEL": "vidreal.personalize.caption",
    "TrainResult": "vidreal.personalize.outputs",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""vidreal: temporally consistent synthetic-to-real video translation.

    import vidreal
    clip = vidreal.read_video("clip.mp4")                    # .frames uint8 (T, H, W, 3), .fps
    conds = vidreal.extract_conditions(clip.frames, kinds=("canny", "pose"))
    tr = vidreal.Translator.from_pretrained("stable-diffusion-v1-5/stable-diffusion-v1-5",
                                            controlnets={"canny": ..., "pose": ...})
    out = tr(clip.frames, conds, prompt="a person in the style of sks person")
    vidreal.write_video("out.mp4", out, clip.fps, audio_from="clip.mp4")

Names load lazily, so ``import vidreal`` does not import torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "read_video": "vidreal.io",
    "iter_video": "vidreal.io",
    "write_video": "vidreal.io",
    "probe": "vidreal.io",
    "Clip": "vidreal.io",
    "extract_conditions": "vidreal.conditions",
    "Translator": "vidreal.pipeline",
    "translate_file": "vidreal.translate",
    "load_translator": "vidreal.translate",
    "TranslateConfig": "vidreal.config",
    "load_config": "vidreal.config",
    "compute_metrics": "vidreal.metrics",
    "VidrealError": "vidreal.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vidreal' has no attribute {name!r}")

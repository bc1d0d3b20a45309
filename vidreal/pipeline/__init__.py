"""Torch lives here: model loading, cross-frame attention and the Translator.

Names load lazily, so torch-free parts (``pipeline.schedulers``' name table) import without torch.
"""
import importlib

_EXPORTS = {"Translator": "vidreal.pipeline.translator", "CONSISTENCY_MODES": "vidreal.pipeline.translator"}
__all__ = ["Translator", "CONSISTENCY_MODES"]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vidreal.pipeline' has no attribute {name!r}")

"""Torch lives here: model loading, cross-frame attention and the Translator."""
from vidreal.pipeline.translator import CONSISTENCY_MODES, Translator

__all__ = ["Translator", "CONSISTENCY_MODES"]

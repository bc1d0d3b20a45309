"""The base model a personalization run trains from: checks that run before any training and
component loading with one-line errors (:func:`check_model`, :func:`check_resolution`,
:func:`load_component`, :func:`load_config`).
"""
from __future__ import annotations

from pathlib import Path

from vidreal.checks import positive_int
from vidreal.errors import ConfigError, ModelError
from vidreal.hub import check_hub, is_hub_id, model_need
from vidreal.runtime import first_line


def check_model(model: str | Path) -> str:
    """A diffusers model folder or hub id; a single-file checkpoint or a bad folder -> ModelError, a
    hub id neither cached nor downloadable -> ModelError in seconds (checked before any loading)."""
    if is_hub_id(model):
        check_hub([model_need(str(model))])
    path = Path(model)
    if path.exists():
        if not path.is_dir():
            raise ModelError("training needs a diffusers model folder (model_index.json, unet/, ...) "
                             "or a hub id, got a file", path)
        if not (path / "model_index.json").is_file():
            raise ModelError("not a diffusers model folder (no model_index.json)", path)
    return str(model)


def _missing(model: str, exc: BaseException) -> ModelError:
    return ModelError(f"cannot load model {model!r} ({first_line(exc)}); download it with "
                      f"`hf download {model}` where there is network, or pass --model PATH to a local copy")


def load_component(cls, model: str, subfolder: str | None = None, **kwargs):
    """``cls.from_pretrained(model, subfolder=...)`` with load failures turned into ModelError."""
    try:
        if subfolder is None:
            return cls.from_pretrained(model, **kwargs)
        return cls.from_pretrained(model, subfolder=subfolder, **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        raise _missing(model, exc) from exc


def load_config(cls, model: str, subfolder: str) -> dict:
    """A component's config (no weights), load failures -> ModelError."""
    try:
        return dict(cls.load_config(model, subfolder=subfolder))
    except (OSError, ValueError) as exc:
        raise _missing(model, exc) from exc


def resolution_multiple(model: str) -> int:
    """Image sizes the model accepts are multiples of this: VAE scale factor x UNet downsampling."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    vae = load_config(AutoencoderKL, model, "vae")
    unet = load_config(UNet2DConditionModel, model, "unet")
    vae_factor = 2 ** (len(vae["block_out_channels"]) - 1)
    return vae_factor * 2 ** (len(unet["block_out_channels"]) - 1)


def check_resolution(model: str, resolution: int) -> None:
    positive_int("resolution", resolution)
    multiple = resolution_multiple(model)
    if resolution % multiple:
        lower = max(multiple, resolution // multiple * multiple)
        raise ConfigError(f"resolution {resolution} is not a multiple of {multiple} (VAE scale factor x "
                          f"UNet downsampling of this model); use e.g. {lower} or {lower + multiple}")

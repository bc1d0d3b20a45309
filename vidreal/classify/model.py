"""The classifier: a timm backbone (features only) plus the report's head (Table 2-II).

Head: Linear(features -> 512), ReLU, Dropout(0.3), Linear(512 -> n_classes). The backbone is
frozen unless asked otherwise; its preprocessing comes from its own timm config.
"""
from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidreal.errors import ConfigError, ModelError
from vidreal.hub import HubNeed, check_hub, hub_cache_dir, hub_error
from vidreal.runtime import first_line

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "swin_base_patch4_window7_224"
HEAD_HIDDEN = 512
HEAD_DROPOUT = 0.3


def make_head(in_features: int, n_classes: int) -> nn.Sequential:
    """The report's head: Linear(in_features, 512), ReLU, Dropout(0.3), Linear(512, n_classes).

    Input float32 (N, in_features) backbone features; output float32 (N, n_classes) logits.
    """
    return nn.Sequential(
        nn.Linear(in_features, HEAD_HIDDEN),
        nn.ReLU(),
        nn.Dropout(HEAD_DROPOUT),
        nn.Linear(HEAD_HIDDEN, n_classes),
    )


def create_backbone(
    name: str = DEFAULT_BACKBONE,
    pretrained: bool = True,
    weights: str | Path | None = None,
    img_size: int | None = None,
    backbone_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """A timm model with ``num_classes=0``: images float32 (N, 3, H, W) -> features float32 (N, F).

    pretrained: load ImageNet weights, from ``weights`` (a local state-dict file, .safetensors or
        .pth) when given, else from the Hugging Face hub (cached after the first download).
    img_size: input size the model is built for (e.g. 64 for tests; Swin then needs a
        ``window_size`` in ``backbone_kwargs`` that divides the feature maps).
    backbone_kwargs: timm overrides, e.g. ``dict(embed_dim=32, depths=(1, 1, 2, 1),
        num_heads=(1, 2, 4, 8))`` for a tiny Swin.
    """
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
        raise ConfigError(f"unknown backbone {name!r}{hint}")
    kwargs = dict(backbone_kwargs or {})
    need = None
    if weights is not None:
        weights = Path(weights)
        if not weights.is_file():
            raise ModelError("backbone weights file not found", weights)
        if not pretrained:
            raise ConfigError("weights were given together with pretrained=False; drop one of them")
    elif pretrained:
        need = backbone_need(name)
        weights = _cached_weights(need)
    if weights is not None:
        kwargs["pretrained_cfg_overlay"] = dict(file=str(weights))
    if img_size is not None:
        kwargs["img_size"] = int(img_size)
    try:
        try:
            return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
        except TypeError as exc:  # convolutional backbones take any input size as they are built
            if "img_size" not in str(exc) or img_size is None:
                raise
            del kwargs["img_size"]
            return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    except (OSError, RuntimeError, ValueError, TypeError) as exc:
        if not pretrained:
            raise ConfigError(f"cannot build backbone {name!r} with {kwargs}: {first_line(exc)}") from None
        if need is not None and weights is None:  # timm's own download failed
            raise hub_error(need, exc) from None
        raise ModelError(f"cannot load backbone weights into {name!r}: {first_line(exc)}", weights) from None


def backbone_need(name: str) -> HubNeed | None:
    """The hub repo holding timm backbone ``name``'s pretrained weights (None: it has none there)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        return None
    return HubNeed(cfg.hf_hub_id, cfg.hf_hub_filename or "model.safetensors",
                   "--weights FILE (the backbone's model.safetensors) or --no-pretrained",
                   (cfg.hf_hub_filename or "model.safetensors",))


def check_pretrained(name: str, pretrained: bool = True, weights: str | Path | None = None) -> None:
    """Check up front (before any data is read) that timm backbone ``name``'s pretrained weights can
    be had: cached, or the hub answers; ModelError naming the missing repo otherwise."""
    if pretrained and weights is None:
        _cached_weights(backbone_need(name))


def _cached_weights(need: HubNeed | None) -> str | None:
    """The cached weights file of ``need`` when the hub cannot be used (checked up front: the
    missing file named at once, no retries); None to let timm download them."""
    from huggingface_hub import try_to_load_from_cache

    if need is None or not check_hub([need]):
        return None
    return try_to_load_from_cache(need.repo, need.filename, cache_dir=hub_cache_dir())


def data_config(backbone: nn.Module, img_size: int | None = None) -> dict[str, Any]:
    """The backbone's preprocessing (input size, resize interpolation, crop, mean/std) from timm."""
    from timm.data import resolve_data_config

    args = {"input_size": (3, int(img_size), int(img_size))} if img_size is not None else {}
    return resolve_data_config(args, model=backbone)


def make_transform(backbone: nn.Module, img_size: int | None = None, augment: bool = False):
    """PIL RGB image -> float32 (3, H, W) normalised tensor, per the backbone's own config.

    augment=False: resize + center crop (deterministic). augment=True: timm's training transform
    (random resized crop, flip), which rules out the feature cache.
    """
    from timm.data import create_transform

    return create_transform(**data_config(backbone, img_size), is_training=augment)


class Classifier(nn.Module):
    """backbone (features) + head. ``frozen``: the backbone stays in eval mode without gradients.

    forward: images float32 (N, 3, H, W) -> logits float32 (N, n_classes).
    head: None for the report's head on the backbone's features; the video classifiers pass
    their own (see :mod:`vidreal.classify.video_model`).
    """

    def __init__(self, backbone: nn.Module, n_classes: int, frozen: bool = True, head: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = make_head(backbone.num_features, n_classes) if head is None else head
        self.frozen = frozen
        backbone.requires_grad_(not frozen)

    @property
    def num_features(self) -> int:
        return self.backbone.num_features

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.backbone.eval()  # no dropout/drop-path noise in a frozen feature extractor
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images float32 (N, 3, H, W) -> features float32 (N, F)."""
        if self.frozen:
            with torch.no_grad():
                return self.backbone(images)
        return self.backbone(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

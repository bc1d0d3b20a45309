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
    if img_size is not None:
        kwargs["img_size"] = int(img_size)
    if weights is not None:
        weights = Path(weights)
        if not weights.is_file():
            raise ModelError("backbone weights file not found", weights)
        if not pretrained:
            raise ConfigError("weights were given together with pretrained=False; drop one of them")
        kwargs["pretrained_cfg_overlay"] = dict(file=str(weights))
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        if not pretrained:
            raise ConfigError(f"cannot build backbone {name!r} with {kwargs}: {exc}") from None
        if weights is not None:
            raise ModelError(f"cannot load backbone weights into {name!r}: {first_line(exc)}", weights) from None
        hub_id = (timm.models.get_pretrained_cfg(name).hf_hub_id if timm.models.get_pretrained_cfg(name) else None) or name
        raise ModelError(
            f"pretrained weights for {name!r} are not available offline: download them with "
            f"`huggingface-cli download {hub_id}` (network needed) and pass the model.safetensors "
            f"file with --weights FILE, or use --no-pretrained"
        ) from None
    return model


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

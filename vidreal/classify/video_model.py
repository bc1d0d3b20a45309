"""Video classifiers: a frozen timm image backbone per frame + a temporal head, or a torchvision
video backbone (r3d_18, r2plus1d_18, mvit_v2_s, swin3d_t) + the report's head.

Both are a :class:`~vidreal.classify.model.Classifier` (``backbone`` + ``head``) whose input is a
batch of K clips per video, float32 (B, K, T, 3, H, W), and whose output is the log of the clip
scores' mean, float32 (B, C): softmax per clip, averaged over the K clips (mmaction2's
``average_clips="prob"``). With K = 1 that is ``log_softmax(logits)``, so cross-entropy trains as
usual. The backbone's output is what the feature cache keeps:

- image backbone: per-frame features (B, K, T, F); the head pools them over time (``mean``, or a
  small ``transformer`` / 1-D ``conv`` first) into the report's head;
- video backbone: per-clip features (B, K, F) (its classifier removed) into the report's head.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidreal.classify.model import Classifier, create_backbone, data_config, make_head
from vidreal.classify.video import ClipTransform
from vidreal.errors import ConfigError, ModelError
from vidreal.runtime import first_line

#: torchvision video backbones: weights enum name, classifier attribute, feature width.
VIDEO_BACKBONES = {
    "r3d_18": ("R3D_18_Weights", "fc", 512),
    "r2plus1d_18": ("R2Plus1D_18_Weights", "fc", 512),
    "mvit_v2_s": ("MViT_V2_S_Weights", "head", 768),
    "swin3d_t": ("Swin3D_T_Weights", "head", 768),
}
TEMPORAL_HEADS = ("mean", "transformer", "conv")
TEMPORAL_WIDTH = 256  # the transformer / conv heads' width


def is_video_backbone(name: str) -> bool:
    return name in VIDEO_BACKBONES


class FrameEncoder(nn.Module):
    """A timm image backbone on every frame: float32 (B, K, T, 3, H, W) -> (B, K, T, F)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.num_features = backbone.num_features

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        lead = clips.shape[:3]
        return self.backbone(clips.flatten(0, 2)).view(*lead, -1)


class VideoEncoder(nn.Module):
    """A torchvision video model without its classifier: float32 (B, K, T, 3, H, W) -> (B, K, F)."""

    def __init__(self, model: nn.Module, name: str):
        super().__init__()
        self.model = model
        self.name = name
        self.num_features = VIDEO_BACKBONES[name][2]

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        b, k = clips.shape[:2]
        x = clips.flatten(0, 1).permute(0, 2, 1, 3, 4)  # (B*K, 3, T, H, W), torchvision's layout
        return self.model(x).view(b, k, -1)


class VideoHead(nn.Module):
    """Features of K clips -> log of the mean clip probabilities, float32 (B, C).

    temporal: None for per-clip features (B, K, F); "mean", "transformer" or "conv" for per-frame
    features (B, K, T, F), pooled over T before the report's head.
    """

    def __init__(self, in_features: int, n_classes: int, temporal: str | None = "mean", clip_len: int = 16):
        super().__init__()
        self.temporal = temporal
        width = in_features
        if temporal == "transformer":
            self.proj = nn.Linear(in_features, TEMPORAL_WIDTH)
            self.pos = nn.Parameter(torch.zeros(clip_len, TEMPORAL_WIDTH))
            nn.init.trunc_normal_(self.pos, std=0.02)
            self.mixer = nn.TransformerEncoder(
                nn.TransformerEncoderLayer(TEMPORAL_WIDTH, nhead=4, dim_feedforward=2 * TEMPORAL_WIDTH,
                                           dropout=0.1, batch_first=True), num_layers=1, enable_nested_tensor=False)
            width = TEMPORAL_WIDTH
        elif temporal == "conv":
            self.mixer = nn.Sequential(nn.Conv1d(in_features, TEMPORAL_WIDTH, kernel_size=3, padding=1), nn.ReLU())
            width = TEMPORAL_WIDTH
        elif temporal not in (None, "mean"):
            raise ConfigError(f"temporal_head must be one of {', '.join(TEMPORAL_HEADS)}, got {temporal!r}")
        self.classifier = make_head(width, n_classes)

    def pool(self, feats: torch.Tensor) -> torch.Tensor:
        """(N, T, F) per-frame features -> (N, width) clip features."""
        if self.temporal == "transformer":
            return self.mixer(self.proj(feats) + self.pos[:feats.shape[1]]).mean(1)
        if self.temporal == "conv":
            return self.mixer(feats.transpose(1, 2)).mean(2)
        return feats.mean(1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        b, k = feats.shape[:2]
        x = feats.flatten(0, 1)
        if self.temporal is not None:
            x = self.pool(x)
        logits = self.classifier(x).view(b, k, -1)
        if k == 1:
            return torch.log_softmax(logits[:, 0], dim=-1)
        return torch.log(torch.softmax(logits, dim=-1).mean(1).clamp_min(1e-12))


def create_video_classifier(
    name: str,
    n_classes: int,
    pretrained: bool = True,
    weights: str | Path | None = None,
    img_size: int | None = None,
    backbone_kwargs: dict[str, Any] | None = None,
    clip_len: int = 16,
    temporal_head: str = "mean",
    frozen: bool = True,
) -> tuple[Classifier, ClipTransform]:
    """The video classifier for ``name`` (a timm model or one of :data:`VIDEO_BACKBONES`) and the
    frame preprocessing it expects. Input of the classifier: float32 (B, K, T, 3, S, S)."""
    if temporal_head not in TEMPORAL_HEADS:
        raise ConfigError(f"temporal_head must be one of {', '.join(TEMPORAL_HEADS)}, got {temporal_head!r}")
    if not is_video_backbone(name):
        encoder = FrameEncoder(create_backbone(name, pretrained, weights, img_size, backbone_kwargs))
        head = VideoHead(encoder.num_features, n_classes, temporal_head, clip_len)
        return Classifier(encoder, n_classes, frozen=frozen, head=head), clip_transform(encoder, img_size)
    if temporal_head != "mean":
        raise ConfigError(f"temporal_head {temporal_head!r} is for image backbones; {name} models time itself")
    if backbone_kwargs:
        raise ConfigError(f"backbone_kwargs are timm overrides; {name} takes none, got {backbone_kwargs}")
    if name == "mvit_v2_s" and (clip_len != 16 or img_size not in (None, 224)):
        raise ConfigError(f"mvit_v2_s takes clips of exactly 16 frames at 224 px, got clip_len={clip_len}, img_size={img_size}")
    encoder = VideoEncoder(_torchvision_video(name, pretrained, weights), name)
    head = VideoHead(encoder.num_features, n_classes, None)
    return Classifier(encoder, n_classes, frozen=frozen, head=head), clip_transform(encoder, img_size)


def clip_transform(encoder: nn.Module, img_size: int | None = None) -> ClipTransform:
    """The frame preprocessing an encoder expects: a timm backbone's own data config, or the
    Kinetics-400 preset of a torchvision video model (scaled to ``img_size`` when given)."""
    if isinstance(encoder, FrameEncoder):
        cfg = data_config(encoder.backbone, img_size)
        return ClipTransform.from_crop_pct(cfg["input_size"][-1], cfg.get("crop_pct") or 1.0, cfg["mean"], cfg["std"])
    preset = _kinetics(encoder.name).transforms()
    crop = preset.crop_size[0]
    size = int(img_size) if img_size is not None else crop
    return ClipTransform(size, round(size * preset.resize_size[0] / crop), tuple(preset.mean), tuple(preset.std))


def _kinetics(name: str):
    from torchvision.models import video as tv_video

    return getattr(tv_video, VIDEO_BACKBONES[name][0]).KINETICS400_V1


def _torchvision_video(name: str, pretrained: bool, weights: str | Path | None) -> nn.Module:
    """The torchvision model ``name`` without its classifier; Kinetics-400 weights when pretrained."""
    from torchvision.models import video as tv_video

    classifier_attr = VIDEO_BACKBONES[name][1]
    kinetics = _kinetics(name)
    model = getattr(tv_video, name)(weights=None)
    if weights is not None:
        weights = Path(weights)
        if not weights.is_file():
            raise ModelError("backbone weights file not found", weights)
        if not pretrained:
            raise ConfigError("weights were given together with pretrained=False; drop one of them")
        state = _load_state(weights)
    elif pretrained:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(kinetics.url).name
        if not cached.is_file():
            raise ModelError(
                f"Kinetics-400 weights for {name} are not in the torch cache: download {kinetics.url} "
                f"(network needed) to {cached}, or pass --weights FILE, or use --no-pretrained")
        state = _load_state(cached)
    else:
        state = None
    if state is not None:
        state = {k: v for k, v in state.items() if not k.startswith(f"{classifier_attr}.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(f"{classifier_attr}.")]
        if missing or unexpected:
            raise ModelError(f"weights do not fit {name}: missing {missing[:3]}, unexpected {unexpected[:3]}",
                             weights or cached)
    setattr(model, classifier_attr, nn.Identity())
    return model


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"cannot read backbone weights ({first_line(exc, 160, with_type=True)})", path) from None

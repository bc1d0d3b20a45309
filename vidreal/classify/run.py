"""The run folder: training settings (``TrainConfig``, the ``classify:`` config section) and saving /
loading a trained classifier.

Run folder written by :func:`save_run`:
    head.safetensors        the head's weights
    backbone.safetensors    the backbone's weights, when they cannot be rebuilt (trained or random)
    classifier.json         backbone name/options, class names: what ``load_run`` needs
    metrics.json            per-epoch losses/accuracies in % (+ val/test per-class results)
    config.yaml             the resolved training config and data sources
    features/*.safetensors  cached features (``save_features=True``)
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import load_file, save_file

from vidreal.checks import positive_int
from vidreal.classify.data import BAD_IMAGE_POLICIES, ImageDataset, Samples
from vidreal.classify.model import (DEFAULT_BACKBONE, HEAD_DROPOUT, HEAD_HIDDEN, Classifier, create_backbone,
                                    make_transform)
from vidreal.classify.video import VideoDataset
from vidreal.classify.video_model import TEMPORAL_HEADS, clip_transform, create_video_classifier
from vidreal.errors import ConfigError, InputError
from vidreal.runtime import check_keys, first_line, resolve_device


@dataclass
class TrainConfig:
    """Classifier training settings (the ``classify:`` section of a config file)."""

    backbone: str = DEFAULT_BACKBONE
    pretrained: bool = True
    weights: str | None = None  # local backbone state dict (.safetensors/.pth) instead of the hub
    img_size: int | None = None  # None: the backbone's own input size
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # timm overrides (tiny models)
    epochs: int = 7
    batch_size: int = 128
    eval_batch_size: int = 32
    lr: float = 1e-3  # head
    backbone_lr: float = 1e-5  # only used with unfreeze
    unfreeze: bool = False
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    step_size: int = 3
    gamma: float = 0.97
    seed: int = 0
    device: str | None = None  # None: cuda when available, else cpu
    cache: bool = True  # train the head on cached features when the backbone is frozen
    save_features: bool = False  # also keep the cached features under RUN_DIR/features/
    augment: bool = False  # timm training transform (disables the cache)
    on_bad_image: str = "skip"
    num_workers: int = 0
    root: str | None = None  # folder that list files' relative paths start from
    # video classification (RoCoG-v2): clip sampling (mmaction2's SampleFrames) and the temporal head
    clip_len: int = 16  # frames per clip
    frame_interval: int = 5  # source frames between a clip's frames
    eval_clips: int = 5  # clips spread over each val/test video, their scores averaged
    temporal_head: str = "mean"  # image backbones: mean | transformer | conv over the frames' features

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_batch_size", "step_size", "clip_len", "frame_interval", "eval_clips"):
            positive_int(name, getattr(self, name))
        for name in ("lr", "backbone_lr", "weight_decay", "label_smoothing", "gamma"):
            value = getattr(self, name)
            try:
                setattr(self, name, float(value))  # YAML reads 1e-3 (no dot) as a string
            except (TypeError, ValueError):
                raise ConfigError(f"{name} must be a number, got {value!r}") from None
        for name in ("lr", "backbone_lr", "gamma"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.on_bad_image not in BAD_IMAGE_POLICIES:
            raise ConfigError(f"on_bad_image must be one of {', '.join(BAD_IMAGE_POLICIES)}, got {self.on_bad_image!r}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers!r}")
        if self.img_size is not None and (not isinstance(self.img_size, int) or self.img_size < 16):
            raise ConfigError(f"img_size must be an integer >= 16 or null, got {self.img_size!r}")
        if self.temporal_head not in TEMPORAL_HEADS:
            raise ConfigError(f"temporal_head must be one of {', '.join(TEMPORAL_HEADS)}, got {self.temporal_head!r}")
        if not isinstance(self.backbone_kwargs or {}, dict):
            raise ConfigError(f"backbone_kwargs must be a mapping of timm options, got {self.backbone_kwargs!r}")
        self.backbone_kwargs = dict(self.backbone_kwargs or {})

    @property
    def uses_cache(self) -> bool:
        return self.cache and not self.unfreeze and not self.augment


def load_train_config(path: str | Path | None = None, **overrides) -> TrainConfig:
    """Defaults < the file's ``classify:`` section (the whole file when it has none) < overrides.

    Overrides whose value is None are ignored (unset CLI flags). Unknown keys raise ConfigError
    with a suggestion.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError("config file not found", path)
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"invalid YAML: {first_line(exc)}", path) from None
        if not isinstance(doc, dict):
            raise ConfigError("config must be a mapping", path)
        section = doc.get("classify", doc)  # translate configs keep it in a `classify:` section
        if not isinstance(section, dict):
            raise ConfigError("the 'classify' section must be a mapping", path)
        values.update(section)
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    check_keys(values, sorted(known), path, "classify setting")
    return TrainConfig(**values)



def video_settings(cfg: TrainConfig) -> dict[str, Any]:
    """What a video run needs to sample and pool clips again (classifier.json ``video``)."""
    return {"clip_len": cfg.clip_len, "frame_interval": cfg.frame_interval, "eval_clips": cfg.eval_clips,
            "temporal_head": cfg.temporal_head}


def build_classifier(backbone: str, n_classes: int, pretrained: bool, weights, img_size: int | None,
                     backbone_kwargs: dict[str, Any], video: dict[str, Any] | None, frozen: bool = True) -> Classifier:
    """The image classifier (``video=None``) or the video classifier (``video``: see video_settings)."""
    if video is None:
        return Classifier(create_backbone(backbone, pretrained, weights, img_size, backbone_kwargs), n_classes, frozen)
    model, _ = create_video_classifier(backbone, n_classes, pretrained, weights, img_size, backbone_kwargs,
                                       video["clip_len"], video["temporal_head"], frozen)
    return model


def make_dataset(model: Classifier, samples: Samples, img_size: int | None, video: dict[str, Any] | None,
                 training: bool = False, augment: bool = False):
    """The model's inputs for ``samples``: an ImageDataset (the backbone's timm transform) or a
    VideoDataset (one clip per training video - random starts with ``augment`` - and
    ``eval_clips`` clips per evaluated video)."""
    if video is None:
        return ImageDataset(samples, make_transform(model.backbone, img_size, augment=training and augment))
    return VideoDataset(samples, clip_transform(model.backbone, img_size), video["clip_len"], video["frame_interval"],
                        1 if training else video["eval_clips"], random=training and augment)


def save_run(run_dir: Path, model: Classifier, classes: list[str], cfg: TrainConfig,
             metrics: dict[str, Any], data: dict[str, Any], video: bool = False) -> None:
    """Write head/backbone weights, classifier.json, metrics.json and config.yaml into ``run_dir``."""
    from vidreal.io import atomic_output

    run_dir.mkdir(parents=True, exist_ok=True)
    head = {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    with atomic_output(run_dir / "head.safetensors") as tmp:
        save_file(head, str(tmp))
    backbone_file = None
    if cfg.unfreeze or not cfg.pretrained:  # weights that cannot be rebuilt from the hub/file
        backbone_file = "backbone.safetensors"
        state = {k: v.detach().cpu().contiguous() for k, v in model.backbone.state_dict().items()}
        with atomic_output(run_dir / backbone_file) as tmp:
            save_file(state, str(tmp))
    info = {
        "backbone": cfg.backbone, "pretrained": cfg.pretrained,
        "weights": None if cfg.weights is None else str(Path(cfg.weights).resolve()),
        "img_size": cfg.img_size, "backbone_kwargs": cfg.backbone_kwargs,
        "num_features": model.num_features, "classes": classes,
        "head": {"hidden": HEAD_HIDDEN, "dropout": HEAD_DROPOUT}, "backbone_file": backbone_file,
        "video": video_settings(cfg) if video else None,
    }
    write_text(run_dir / "classifier.json", json.dumps(info, indent=2))
    write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    resolved = {"data": data, "classify": dataclasses.asdict(cfg)}
    write_text(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))


def write_text(path: Path, text: str) -> None:
    from vidreal.io import atomic_output

    with atomic_output(path) as tmp:
        Path(tmp).write_text(text + "\n", encoding="utf-8")


def load_run(run_dir: str | Path, device: str | None = None) -> tuple[Classifier, dict[str, Any]]:
    """Rebuild a trained classifier from a run folder: (model in eval mode, classifier.json dict)."""
    run_dir = Path(run_dir)
    info_file = run_dir / "classifier.json"
    if not info_file.is_file():
        raise InputError("not a classifier run folder (no classifier.json); train one with `vidreal classify train`", run_dir)
    info = json.loads(info_file.read_text(encoding="utf-8"))
    backbone_file = info.get("backbone_file")
    pretrained = info["pretrained"] and backbone_file is None  # saved weights replace the hub's
    model = build_classifier(info["backbone"], len(info["classes"]), pretrained, info["weights"] if pretrained else None,
                             info["img_size"], info["backbone_kwargs"], info.get("video"))
    if backbone_file:
        model.backbone.load_state_dict(load_file(str(run_dir / backbone_file)))
    head_file = run_dir / "head.safetensors"
    if not head_file.is_file():
        raise InputError("run folder has no head.safetensors", run_dir)
    model.head.load_state_dict(load_file(str(head_file)))
    return model.to(resolve_device(device)).eval(), info


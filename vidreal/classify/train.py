"""Training the classifier (report Chapter 2, "Training Details").

AdamW, label-smoothing cross-entropy (0.1), 7 epochs, batch 128 train / 32 eval, head lr 1e-3
(the report uses 1e-4..1e-3), backbone lr 1e-5 when unfrozen, StepLR(step 3, gamma 0.97).

With a frozen backbone and no augmentation the backbone's features are computed once and the head
trains on them (``cache=True``); this gives the same head as running the backbone every epoch
(same seed -> same data order and dropout masks), only much faster.

Run folder written by :func:`train`:
    head.safetensors        the head's weights
    backbone.safetensors    the backbone's weights, when they cannot be rebuilt (trained or random)
    classifier.json         backbone name/options, class names: what ``load_run`` needs
    metrics.json            per-epoch losses/accuracies in % (+ val/test per-class results)
    config.yaml             the resolved training config and data sources
    features/*.safetensors  cached features (``save_features=True``)
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file
from vidreal.progress import bar as tqdm  # tqdm on a terminal, plain lines in a log, off under -q

from vidreal.classify.data import BAD_IMAGE_POLICIES, ImageDataset, load_samples
from vidreal.classify.evaluate import confusion_matrix, mean_class_accuracy, per_class_accuracy
from vidreal.classify.features import cached_features, fingerprint
from vidreal.classify.model import DEFAULT_BACKBONE, HEAD_DROPOUT, HEAD_HIDDEN, Classifier, create_backbone, make_transform
from vidreal.errors import ConfigError, InputError

log = logging.getLogger(__name__)


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

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_batch_size", "step_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
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
            raise ConfigError(f"invalid YAML: {str(exc).splitlines()[0]}", path) from None
        if not isinstance(doc, dict):
            raise ConfigError("config must be a mapping", path)
        section = doc.get("classify", doc)  # translate configs keep it in a `classify:` section
        if not isinstance(section, dict):
            raise ConfigError("the 'classify' section must be a mapping", path)
        values.update(section)
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown classify setting {key!r}{hint}", path)
    return TrainConfig(**values)


def resolve_device(device: str | None) -> torch.device:
    """None/"auto" -> cuda when available, else cpu; anything else must be a torch device string."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"invalid device {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    return dev


def train_one_epoch(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    loss_fn: torch.nn.Module,
    device: torch.device,
    progress: bool = False,
    desc: str = "train",
    total: int | None = None,
) -> dict[str, float]:
    """One pass over ``batches`` of (inputs, int64 labels (B,)); returns mean loss and accuracy (%).

    ``model`` is the whole :class:`Classifier` (inputs: images float32 (B, 3, H, W)) or just its
    head (inputs: cached features float32 (B, F)).
    """
    model.train()
    loss_sum, correct, n = 0.0, 0, 0
    bar = tqdm(batches, desc=desc, total=total, unit="batch", disable=not progress, leave=False)
    for inputs, labels in bar:
        inputs, labels = inputs.to(device), labels.to(device)
        logits = model(inputs)
        loss = loss_fn(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        n += len(labels)
        bar.set_postfix(loss=f"{loss_sum / n:.4f}")
    return {"loss": loss_sum / max(n, 1), "acc": 100.0 * correct / max(n, 1)}


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: torch.nn.Module,
    device: torch.device,
    n_classes: int,
    progress: bool = False,
    desc: str = "val",
    total: int | None = None,
) -> dict[str, Any]:
    """Loss, accuracy, per-class accuracy and confusion matrix over ``batches`` (accuracies in %).

    Returns {"loss", "acc", "mean_class_acc" (the report's Avg), "per_class" (list, None for classes
    without samples), "confusion" (int lists, rows = true class), "predictions" int64 (N,) np array}.
    """
    model.eval()
    loss_sum, preds, labels_all = 0.0, [], []
    for inputs, labels in tqdm(batches, desc=desc, total=total, unit="batch", disable=not progress, leave=False):
        inputs, labels = inputs.to(device), labels.to(device)
        logits = model(inputs)
        loss_sum += loss_fn(logits, labels).item() * len(labels)
        preds.append(logits.argmax(1).cpu())
        labels_all.append(labels.cpu())
    pred = torch.cat(preds).numpy()
    true = torch.cat(labels_all).numpy()
    cm = confusion_matrix(true, pred, n_classes)
    per_class = per_class_accuracy(cm)
    return {
        "loss": loss_sum / max(len(true), 1),
        "acc": 100.0 * float((pred == true).mean()) if len(true) else float("nan"),
        "mean_class_acc": mean_class_accuracy(per_class),
        "per_class": [None if np.isnan(v) else float(v) for v in per_class],
        "confusion": cm.tolist(),
        "predictions": pred,
    }


@dataclass
class TrainResult:
    """What :func:`train` produced: the run folder, per-epoch metrics and the trained model."""

    run_dir: Path
    metrics: dict[str, Any]
    classes: list[str]
    model: Classifier
    seconds: float


def _feature_batches(features: torch.Tensor, labels: torch.Tensor, order: torch.Tensor, batch_size: int) -> Iterator:
    for idx in order.split(batch_size):
        yield features[idx], labels[idx]


def _image_loader(dataset: ImageDataset, order: torch.Tensor, batch_size: int, num_workers: int):
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=order.tolist(), num_workers=num_workers,
        generator=torch.Generator(),  # a loader draws its base seed from here, not the global RNG
    )


def _backbone_info(cfg: TrainConfig) -> dict[str, Any]:
    return {
        "backbone": cfg.backbone, "pretrained": cfg.pretrained, "weights": cfg.weights,
        "img_size": cfg.img_size, "backbone_kwargs": cfg.backbone_kwargs,
        "seed": None if cfg.pretrained else cfg.seed,  # a random backbone depends on the seed
    }


def train(
    train_data: str | Path,
    val_data: str | Path,
    output: str | Path,
    test_data: str | Path | None = None,
    config: TrainConfig | None = None,
    progress: bool = True,
    **overrides,
) -> TrainResult:
    """Train the report's head on a (frozen) timm backbone and write a run folder.

    train_data / val_data / test_data: a folder of ``<class>/`` image folders or a ``path label``
        list file (see :func:`vidreal.classify.data.load_samples`); classes come from the training
        set, the others must use the same classes.
    output: the run folder (created; files in it are replaced atomically).
    config: a :class:`TrainConfig`; ``overrides`` replace its fields (e.g. ``epochs=3``).
    """
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ConfigError(f"unknown classify setting(s) {sorted(unknown)}")
    cfg = dataclasses.replace(config, **overrides) if config is not None else TrainConfig(**overrides)
    run_dir = Path(output)
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError("run folder path exists and is not a folder", run_dir)
    device = resolve_device(cfg.device)
    start = time.perf_counter()

    # 1. Data
    load = dict(root=cfg.root, on_bad_image=cfg.on_bad_image, progress=progress)
    train_s = load_samples(train_data, **load)
    classes = train_s.classes
    if len(classes) < 2:
        raise InputError(f"need at least 2 classes to train, found {len(classes)}: {classes}", train_s.source)
    val_s = load_samples(val_data, classes=classes, **load)
    test_s = load_samples(test_data, classes=classes, **load) if test_data else None
    log.info("classes (%d): %s; %d train / %d val images%s", len(classes), ", ".join(classes),
             len(train_s), len(val_s), f" / {len(test_s)} test" if test_s else "")

    # 2. Model (seeded: a random backbone and the head's init are reproducible)
    torch.manual_seed(cfg.seed)
    backbone = create_backbone(cfg.backbone, cfg.pretrained, cfg.weights, cfg.img_size, cfg.backbone_kwargs)
    torch.manual_seed(cfg.seed)
    model = Classifier(backbone, len(classes), frozen=not cfg.unfreeze).to(device)
    eval_tf = make_transform(backbone, cfg.img_size, augment=False)
    train_tf = make_transform(backbone, cfg.img_size, augment=cfg.augment)
    log.info("device %s; backbone %s (%d features, %s, %s); cache %s", device, cfg.backbone, model.num_features,
             "pretrained" if cfg.pretrained else "random init", "trained" if cfg.unfreeze else "frozen",
             "on" if cfg.uses_cache else "off")

    # 3. Optimiser, loss, schedule
    groups = [{"params": model.head.parameters(), "lr": cfg.lr}]
    if cfg.unfreeze:
        groups.append({"params": model.backbone.parameters(), "lr": cfg.backbone_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    # 4. Inputs per split: cached features or images
    datasets = {"train": ImageDataset(train_s, train_tf), "val": ImageDataset(val_s, eval_tf)}
    if test_s is not None:
        datasets["test"] = ImageDataset(test_s, eval_tf)
    labels = {k: torch.tensor(d.samples.labels, dtype=torch.int64) for k, d in datasets.items()}
    feats: dict[str, torch.Tensor] = {}
    if cfg.uses_cache:
        info = _backbone_info(cfg)
        for split, ds in datasets.items():
            key = fingerprint(ds.samples, info, ds.transform)
            cache_file = run_dir / "features" / f"{split}.safetensors" if cfg.save_features else None
            feats[split] = cached_features(
                model.backbone, ds, key, cache_file, batch_size=cfg.eval_batch_size, device=device,
                num_workers=cfg.num_workers, progress=progress, desc=f"features {split}",
            )

    def batches(split: str, order: torch.Tensor, batch_size: int):
        if cfg.uses_cache:
            return _feature_batches(feats[split], labels[split], order, batch_size), model.head
        return _image_loader(datasets[split], order, batch_size, cfg.num_workers), model

    def evaluate_split(split: str, desc: str) -> dict[str, Any]:
        n = len(datasets[split])
        data, net = batches(split, torch.arange(n), cfg.eval_batch_size)
        return validate(net, data, loss_fn, device, len(classes), progress, desc, -(-n // cfg.eval_batch_size))

    # 5. Epochs: data order from its own generator, dropout from a per-epoch seed
    order_gen = torch.Generator().manual_seed(cfg.seed)
    n_train = len(datasets["train"])
    history = []
    epochs_bar = tqdm(range(cfg.epochs), desc="epochs", unit="epoch", disable=not progress)
    for epoch in epochs_bar:
        order = torch.randperm(n_train, generator=order_gen)
        torch.manual_seed(cfg.seed + 1000 + epoch)
        data, net = batches("train", order, cfg.batch_size)
        lr = optimizer.param_groups[0]["lr"]
        tr = train_one_epoch(net, data, optimizer, loss_fn, device, progress,
                             f"epoch {epoch + 1}/{cfg.epochs}", -(-n_train // cfg.batch_size))
        va = evaluate_split("val", f"val {epoch + 1}/{cfg.epochs}")
        scheduler.step()
        history.append({
            "epoch": epoch + 1, "lr": lr, "train_loss": tr["loss"], "train_acc": tr["acc"],
            "val_loss": va["loss"], "val_acc": va["acc"], "val_mean_class_acc": va["mean_class_acc"],
        })
        epochs_bar.set_postfix(train_loss=f"{tr['loss']:.4f}", val_acc=f"{va['acc']:.2f}%")
        log.info("epoch %d/%d: train loss %.4f acc %.2f%%; val loss %.4f acc %.2f%%", epoch + 1, cfg.epochs,
                 tr["loss"], tr["acc"], va["loss"], va["acc"])

    metrics: dict[str, Any] = {
        "classes": classes,
        "device": str(device),
        "n_images": {k: len(d) for k, d in datasets.items()},
        "skipped_images": {k: len(s.skipped) for k, s in (("train", train_s), ("val", val_s), ("test", test_s)) if s},
        "cached_features": cfg.uses_cache,
        "epochs": history,
        "val": {k: v for k, v in va.items() if k != "predictions"},
    }
    if test_s is not None:
        te = evaluate_split("test", "test")
        metrics["test"] = {k: v for k, v in te.items() if k != "predictions"}
    metrics["seconds"] = time.perf_counter() - start

    # 6. Run folder
    save_run(run_dir, model, classes, cfg, metrics,
             {"train": str(train_data), "val": str(val_data), "test": None if test_data is None else str(test_data)})
    return TrainResult(run_dir, metrics, classes, model, metrics["seconds"])


def save_run(run_dir: Path, model: Classifier, classes: list[str], cfg: TrainConfig,
             metrics: dict[str, Any], data: dict[str, str | None]) -> None:
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
    }
    _write_text(run_dir / "classifier.json", json.dumps(info, indent=2))
    _write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    resolved = {"data": data, "classify": dataclasses.asdict(cfg)}
    _write_text(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))


def _write_text(path: Path, text: str) -> None:
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
    backbone = create_backbone(info["backbone"], pretrained, info["weights"] if pretrained else None,
                               info["img_size"], info["backbone_kwargs"])
    if backbone_file:
        backbone.load_state_dict(load_file(str(run_dir / backbone_file)))
    model = Classifier(backbone, len(info["classes"]), frozen=True)
    head_file = run_dir / "head.safetensors"
    if not head_file.is_file():
        raise InputError("run folder has no head.safetensors", run_dir)
    model.head.load_state_dict(load_file(str(head_file)))
    return model.to(resolve_device(device)).eval(), info

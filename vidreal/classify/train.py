"""Training the classifier (report Chapter 2, "Training Details").

AdamW, label-smoothing cross-entropy (0.1), 7 epochs, batch 128 train / 32 eval, head lr 1e-3
(the report uses 1e-4..1e-3), backbone lr 1e-5 when unfrozen, StepLR(step 3, gamma 0.97).

With a frozen backbone and no augmentation the backbone's features are computed once and the head
trains on them (``cache=True``); this gives the same head as running the backbone every epoch
(same seed -> same data order and dropout masks), only much faster.

The run folder (settings, save/load) is :mod:`vidreal.classify.run`; the scores
:mod:`vidreal.classify.scores`.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from vidreal.progress import bar as tqdm  # tqdm on a terminal, plain lines in a log, off under -q

from vidreal.classify.data import load_samples
from vidreal.classify.features import cached_features, fingerprint
from vidreal.classify.model import Classifier, check_pretrained
from vidreal.classify.run import TrainConfig, build_classifier, make_dataset, save_run, video_settings
from vidreal.classify.scores import confusion_matrix, mean_class_accuracy, per_class_accuracy
from vidreal.classify.video_model import is_video_backbone
from vidreal.errors import ConfigError, InputError
from vidreal.io import refuse_overwriting
from vidreal.runtime import resolve_device

log = logging.getLogger(__name__)


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


def _sources(data) -> str | list[str] | None:
    """A data argument as written to config.yaml: one path, several, or None."""
    if data is None or isinstance(data, (str, Path)):
        return None if data is None else str(data)
    return [str(d) for d in data]


def _feature_batches(features: torch.Tensor, labels: torch.Tensor, order: torch.Tensor, batch_size: int) -> Iterator:
    for idx in order.split(batch_size):
        yield features[idx], labels[idx]


def _input_loader(dataset, order: torch.Tensor, batch_size: int, num_workers: int):
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
    train_data: str | Path | Sequence[str | Path],
    val_data: str | Path | Sequence[str | Path],
    output: str | Path,
    test_data: str | Path | Sequence[str | Path] | None = None,
    config: TrainConfig | None = None,
    progress: bool = True,
    **overrides,
) -> TrainResult:
    """Train the report's head on a (frozen) backbone and write a run folder.

    train_data / val_data / test_data: a folder of ``<class>/`` image or video folders or a
        ``path label`` list file, or several combined (see :func:`vidreal.classify.data.load_samples`);
        classes come from the training set, the others must use the same classes. Videos train a
        video classifier (:mod:`vidreal.classify.video_model`): a timm backbone per frame + the
        temporal head, or a torchvision video backbone; val/test scores average ``eval_clips`` clips.
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
    sources = [path for data in (train_data, val_data, test_data or ()) for path in
               ([data] if isinstance(data, (str, Path)) else data)]
    refuse_overwriting(run_dir, [*sources, cfg.weights])  # a run folder that is, or holds, a data set
    device = resolve_device(cfg.device)
    if not is_video_backbone(cfg.backbone):
        check_pretrained(cfg.backbone, cfg.pretrained, cfg.weights)  # a missing download fails now, not after the data
    start = time.perf_counter()

    # 1. Data
    load = dict(root=cfg.root, on_bad_image=cfg.on_bad_image, progress=progress)
    train_s = load_samples(train_data, **load)
    classes = train_s.classes
    if len(classes) < 2:
        raise InputError(f"need at least 2 classes to train, found {len(classes)}: {classes}", train_s.source)
    empty = [f"{i} ({name})" for i, (name, n) in enumerate(zip(classes, train_s.class_counts())) if n == 0]
    if empty:
        raise InputError(f"class {', '.join(empty)} has no training samples (labels are 0..{len(classes) - 1})", train_s.source)
    val_s = load_samples(val_data, classes=classes, **load)
    test_s = load_samples(test_data, classes=classes, **load) if test_data else None
    for s in (val_s, test_s):
        if s is not None and s.is_video != train_s.is_video:
            raise InputError("the training set and this set must both hold videos or both images", s.source)
    kind = "videos" if train_s.is_video else "images"
    if is_video_backbone(cfg.backbone) and not train_s.is_video:
        raise ConfigError(f"backbone {cfg.backbone} is a video model; the training set holds images")
    log.info("classes (%d): %s; %d train / %d val %s%s", len(classes), ", ".join(classes),
             len(train_s), len(val_s), kind, f" / {len(test_s)} test" if test_s else "")

    # 2. Model (seeded: a random backbone and the head's init are reproducible)
    video = video_settings(cfg) if train_s.is_video else None
    torch.manual_seed(cfg.seed)
    model = build_classifier(cfg.backbone, len(classes), cfg.pretrained, cfg.weights, cfg.img_size,
                             cfg.backbone_kwargs, video, frozen=not cfg.unfreeze).to(device)
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

    # 4. Inputs per split (images, or clips: one per training video, eval_clips per evaluated one):
    #    cached features or the inputs themselves
    datasets = {"train": make_dataset(model, train_s, cfg.img_size, video, training=True, augment=cfg.augment),
                "val": make_dataset(model, val_s, cfg.img_size, video)}
    if test_s is not None:
        datasets["test"] = make_dataset(model, test_s, cfg.img_size, video)
    labels = {k: torch.tensor(d.samples.labels, dtype=torch.int64) for k, d in datasets.items()}
    feats: dict[str, torch.Tensor] = {}
    if cfg.uses_cache:
        info = _backbone_info(cfg)
        for split, ds in datasets.items():
            key = fingerprint(ds.samples, {**info, "sampling": getattr(ds, "sampling", None)}, ds.transform)
            cache_file = run_dir / "features" / f"{split}.safetensors" if cfg.save_features else None
            feats[split] = cached_features(
                model.backbone, ds, key, cache_file, batch_size=cfg.eval_batch_size, device=device,
                num_workers=cfg.num_workers, progress=progress, desc=f"features {split}",
            )

    def batches(split: str, order: torch.Tensor, batch_size: int):
        if cfg.uses_cache:
            return _feature_batches(feats[split], labels[split], order, batch_size), model.head
        return _input_loader(datasets[split], order, batch_size, cfg.num_workers), model

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
             {"train": _sources(train_data), "val": _sources(val_data), "test": _sources(test_data)}, video is not None)
    return TrainResult(run_dir, metrics, classes, model, metrics["seconds"])



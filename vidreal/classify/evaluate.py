"""Evaluation in the report's format: per-class accuracy (%) and their mean (Table 4-I).

``Avg`` is the mean of the per-class accuracies (classes without samples are left out), not the
overall accuracy. Columns use the report's short VisDA names (plane, bcycl, ..., sktbrd); other
class names are printed as they are.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vidreal.errors import ConfigError, InputError

log = logging.getLogger(__name__)

#: The report's column names for VisDA's classes; other names are used unchanged.
SHORT_NAMES = {"aeroplane": "plane", "bicycle": "bcycl", "motorcycle": "mcycl", "skateboard": "sktbrd"}


def confusion_matrix(labels: Sequence[int], predictions: Sequence[int], n_classes: int) -> np.ndarray:
    """int64 (C, C) counts: row = true class, column = predicted class."""
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} differ in shape")
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (labels, predictions), 1)
    return cm


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """float64 (C,) accuracy in % per true class (diagonal / row sum); NaN for classes without samples."""
    totals = cm.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, 100.0 * np.diag(cm) / totals, np.nan)


def mean_class_accuracy(per_class: np.ndarray) -> float:
    """The report's Avg: mean of the per-class accuracies (%) over classes that have samples."""
    per_class = np.asarray(per_class, dtype=np.float64)
    return float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")


def column_names(classes: Sequence[str]) -> list[str]:
    """Table columns: the report's short names for VisDA classes, other names unchanged."""
    return [SHORT_NAMES.get(c, c) for c in classes]


def format_table(rows: dict[str, Sequence[float]], classes: Sequence[str]) -> str:
    """A Table 4-I style table: ``Method <class columns> Avg``, one row per entry of ``rows``.

    rows: row label -> per-class accuracy in % (NaN/None for classes without samples, printed "-").
    Per-class values get one decimal, Avg two.
    """
    names = column_names(classes)
    label_w = max([len("Method")] + [len(r) for r in rows])
    widths = [max(len(n), 5) for n in names]
    header = "Method".ljust(label_w) + "".join(f"  {n:>{w}}" for n, w in zip(names, widths)) + f"  {'Avg':>6}"
    lines = [header]
    for label, values in rows.items():
        values = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        if len(values) != len(classes):
            raise ValueError(f"row {label!r} has {len(values)} values for {len(classes)} classes")
        cells = "".join(f"  {'-' if np.isnan(v) else f'{v:.1f}':>{w}}" for v, w in zip(values, widths))
        avg = mean_class_accuracy(values)
        lines.append(label.ljust(label_w) + cells + f"  {'-' if np.isnan(avg) else f'{avg:.2f}':>6}")
    return "\n".join(lines)


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: str | Path, title: str | None = None) -> Path:
    """Write a row-normalised confusion-matrix heat map (PNG, counts annotated) atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vidreal.io import atomic_output

    cm = np.asarray(cm)
    n = len(classes)
    totals = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, totals, out=np.zeros(cm.shape, dtype=np.float64), where=totals > 0)
    size = max(4.0, 0.55 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    try:
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        names = column_names(classes)
        ax.set_xticks(range(n), names, rotation=45, ha="right")
        ax.set_yticks(range(n), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if title:
            ax.set_title(title)
        if n <= 30:
            for i in range(n):
                for j in range(n):
                    if cm[i, j]:
                        ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if norm[i, j] > 0.5 else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        with atomic_output(Path(path)) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
    return Path(path)


def summarize(labels: Sequence[int], predictions: Sequence[int], classes: Sequence[str]) -> dict[str, Any]:
    """The evaluation as plain data: per-class % (None when no samples), avg, accuracy, confusion."""
    cm = confusion_matrix(labels, predictions, len(classes))
    per_class = per_class_accuracy(cm)
    n = int(cm.sum())
    return {
        "classes": list(classes),
        "per_class": [None if np.isnan(v) else float(v) for v in per_class],
        "avg": mean_class_accuracy(per_class),
        "accuracy": 100.0 * float(np.trace(cm)) / n if n else float("nan"),
        "n_images": n,
        "confusion": cm.tolist(),
    }


@dataclass
class EvalResult:
    """evaluate()'s result: summary dict (see :func:`summarize`), the printed table, files written."""

    summary: dict[str, Any]
    table: str
    json_path: Path
    plot_path: Path | None


def predict(model, dataset, batch_size: int = 32, device=None, num_workers: int = 0, progress: bool = False) -> np.ndarray:
    """Predicted class per dataset item: int64 (N,)."""
    import torch
    from vidreal.progress import bar as tqdm  # tqdm on a terminal, plain lines in a log, off under -q

    device = next(model.parameters()).device if device is None else torch.device(device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, generator=torch.Generator())
    model.eval()
    preds = []
    with torch.no_grad():
        for images, _ in tqdm(loader, desc="eval", unit="batch", disable=not progress, leave=False):
            preds.append(model(images.to(device)).argmax(1).cpu())
    return torch.cat(preds).numpy().astype(np.int64)


def evaluate(
    run_dir: str | Path,
    data: str | Path,
    root: str | Path | None = None,
    batch_size: int = 32,
    device: str | None = None,
    on_bad_image: str = "skip",
    num_workers: int = 0,
    plot: bool = True,
    progress: bool = True,
) -> EvalResult:
    """Evaluate a trained run on a labelled image set; writes RUN_DIR/eval.json and confusion.png.

    data: class folders or a ``path label`` list file, using the run's classes (see load_samples).
    """
    from vidreal.classify.data import ImageDataset, load_samples
    from vidreal.classify.model import make_transform
    from vidreal.classify.train import load_run, _write_text

    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
    run_dir = Path(run_dir)
    model, info = load_run(run_dir, device)
    samples = load_samples(data, root=root, classes=info["classes"], on_bad_image=on_bad_image, progress=progress)
    dataset = ImageDataset(samples, make_transform(model.backbone, info["img_size"]))
    preds = predict(model, dataset, batch_size, None, num_workers, progress)
    summary = summarize(samples.labels, preds, info["classes"])
    summary.update({"data": str(data), "skipped_images": len(samples.skipped)})
    table = format_table({run_dir.resolve().name: summary["per_class"]}, info["classes"])
    json_path = run_dir / "eval.json"
    _write_text(json_path, json.dumps(summary, indent=2))
    plot_path = None
    if plot:
        plot_path = plot_confusion(np.array(summary["confusion"]), info["classes"], run_dir / "confusion.png",
                                   title=f"{run_dir.resolve().name} on {Path(data).name}")
    return EvalResult(summary, table, json_path, plot_path)


def load_evaluation(run_dir: str | Path) -> dict[str, Any]:
    """A run's evaluation: eval.json, else the test results in metrics.json."""
    run_dir = Path(run_dir)
    eval_file, metrics_file = run_dir / "eval.json", run_dir / "metrics.json"
    if eval_file.is_file():
        return json.loads(eval_file.read_text(encoding="utf-8"))
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        if "test" in metrics:
            return {"classes": metrics["classes"], **metrics["test"]}
    if not run_dir.is_dir():
        raise InputError("run folder not found", run_dir)
    raise InputError("run has no evaluation yet; run `vidreal classify eval RUN_DIR --data SRC` first", run_dir)


def compare(run_dirs: Sequence[str | Path]) -> str:
    """Several runs' per-class accuracies as one Table 4-I style table (row label = run folder name)."""
    if not run_dirs:
        raise InputError("no run folders given")
    rows: dict[str, Sequence[float]] = {}
    classes = None
    for run_dir in run_dirs:
        ev = load_evaluation(run_dir)
        if classes is None:
            classes = ev["classes"]
        elif ev["classes"] != classes:
            raise InputError(f"run's classes {ev['classes']} differ from the first run's {classes}", run_dir)
        label = Path(run_dir).resolve().name
        while label in rows:
            label += "'"
        rows[label] = ev["per_class"]
    return format_table(rows, classes)

"""Scores in the report's format: confusion matrix, per-class accuracy (%) and their mean (Table 4-I).

``Avg`` is the mean of the per-class accuracies (classes without samples are left out), not the
overall accuracy. Columns use the report's short VisDA names (plane, bcycl, ..., sktbrd); other
class names are printed as they are. Plain numpy: no model, no files.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

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


def format_domain_table(rows: dict[str, dict[str, float]], domains: Sequence[str], label: str = "Training data") -> str:
    """The RoCoG-v2 paper's layout: ``Training data <domain columns>``, one row per training set.

    rows: row label -> {domain: accuracy in %}; a domain missing from a row prints "-". One decimal.
    """
    label_w = max([len(label)] + [len(r) for r in rows])
    widths = [max(len(d), 5) for d in domains]
    lines = [label.ljust(label_w) + "".join(f"  {d:>{w}}" for d, w in zip(domains, widths))]
    for row, values in rows.items():
        cells = []
        for domain, w in zip(domains, widths):
            v = values.get(domain)
            cells.append(f"  {'-' if v is None or np.isnan(v) else f'{v:.1f}':>{w}}")
        lines.append(row.ljust(label_w) + "".join(cells))
    return "\n".join(lines)


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



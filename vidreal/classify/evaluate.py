"""Evaluating a trained run on a labelled set, the confusion-matrix plot, and comparing runs.

The numbers themselves (confusion matrix, per-class accuracy, the table) are in
:mod:`vidreal.classify.scores`; the run folder (config, save/load) in :mod:`vidreal.classify.run`.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vidreal.checks import positive_int
from vidreal.classify.scores import column_names, format_domain_table, format_table, summarize
from vidreal.errors import ConfigError, InputError

log = logging.getLogger(__name__)


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
    data: str | Path | Sequence[str | Path],
    root: str | Path | None = None,
    batch_size: int = 32,
    device: str | None = None,
    on_bad_image: str = "skip",
    num_workers: int = 0,
    plot: bool = True,
    progress: bool = True,
    name: str | None = None,
) -> EvalResult:
    """Evaluate a trained run on a labelled image or video set.

    data: class folders or a ``path label`` list file (or several, combined), using the run's
        classes (see load_samples). A video run scores each video by averaging its
        ``eval_clips`` clips.
    name: the test domain's name, a column of ``compare(by="domain")`` (default: the list file's
        stem or the folder's name, e.g. ``real_ground_test``).
    Writes RUN_DIR/evals/NAME.json (summary, with every prediction) and evals/NAME.png (confusion
    matrix), and the latest evaluation again as RUN_DIR/eval.json and confusion.png.
    """
    from vidreal.classify.data import load_samples
    from vidreal.classify.run import load_run, make_dataset, write_text

    positive_int("batch_size", batch_size)
    sources = [data] if isinstance(data, (str, Path)) else list(data)
    name = domain_name(sources[0]) if name is None else name
    if not DOMAIN_NAME.fullmatch(name):
        raise ConfigError(f"name must be letters, digits, '_', '-' or '.', got {name!r}")
    run_dir = Path(run_dir)
    model, info = load_run(run_dir, device)
    samples = load_samples(data, root=root, classes=info["classes"], on_bad_image=on_bad_image, progress=progress)
    video = info.get("video")
    if samples.is_video != (video is not None):
        raise InputError(f"the run classifies {'videos' if video else 'images'}; this set holds "
                         f"{'videos' if samples.is_video else 'images'}", samples.source)
    dataset = make_dataset(model, samples, info["img_size"], video)
    preds = predict(model, dataset, batch_size, None, num_workers, progress)
    summary = summarize(samples.labels, preds, info["classes"])
    summary.update({"name": name, "data": [str(s) for s in sources] if len(sources) > 1 else str(sources[0]),
                    "skipped_images": len(samples.skipped), "labels": list(samples.labels),
                    "predictions": preds.tolist()})
    if video:
        summary["clips_per_video"] = video["eval_clips"]
    table = format_table({run_dir.resolve().name: summary["per_class"]}, info["classes"])
    text = json.dumps(summary, indent=2)
    json_path = run_dir / "evals" / f"{name}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_text(json_path, text)
    write_text(run_dir / "eval.json", text)
    plot_path = None
    if plot:
        title = f"{run_dir.resolve().name} on {name}"
        plot_path = plot_confusion(np.array(summary["confusion"]), info["classes"], run_dir / "evals" / f"{name}.png", title)
        plot_confusion(np.array(summary["confusion"]), info["classes"], run_dir / "confusion.png", title)
    return EvalResult(summary, table, json_path, plot_path)


DOMAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def domain_name(src: str | Path) -> str:
    """A test set's default name: a list file's stem, a folder's name."""
    src = Path(src)
    return src.stem if src.suffix.lower() == ".txt" else src.resolve().name


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


def load_domain_evaluations(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """A run's evaluations by test-domain name (RUN_DIR/evals/NAME.json), sorted by name."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError("run folder not found", run_dir)
    files = sorted((run_dir / "evals").glob("*.json"))
    if not files:
        raise InputError("run has no evaluation yet; run `vidreal classify eval RUN_DIR --data SRC --name DOMAIN` first", run_dir)
    return {f.stem: json.loads(f.read_text(encoding="utf-8")) for f in files}


COMPARE_LAYOUTS = ("class", "domain")
COMPARE_METRICS = {"top1": "accuracy", "mean-class": "avg"}


def compare(run_dirs: Sequence[str | Path], by: str = "class", metric: str = "top1",
            domains: Sequence[str] | None = None) -> str:
    """Several runs as one table; row label = run folder name.

    by="class": per-class accuracies of each run's latest evaluation, like the report's Table 4-I.
    by="domain": the RoCoG-v2 paper's layout - rows = training data (one run each), columns = test
        domains (each run's ``evals/NAME.json``; ``domains`` picks and orders them, default every
        name found, sorted), cells = ``metric``: "top1" (overall accuracy, %) or "mean-class"
        (mean class accuracy, %); "-" where a run was not evaluated on that domain.
    """
    if by not in COMPARE_LAYOUTS:
        raise ConfigError(f"by must be one of {', '.join(COMPARE_LAYOUTS)}, got {by!r}")
    if metric not in COMPARE_METRICS:
        raise ConfigError(f"metric must be one of {', '.join(COMPARE_METRICS)}, got {metric!r}")
    if not run_dirs:
        raise InputError("no run folders given")
    if by == "domain":
        return _compare_domains(run_dirs, COMPARE_METRICS[metric], domains)
    rows: dict[str, Sequence[float]] = {}
    classes = None
    for run_dir in run_dirs:
        ev = load_evaluation(run_dir)
        if classes is None:
            classes = ev["classes"]
        elif ev["classes"] != classes:
            raise InputError(f"run's classes {ev['classes']} differ from the first run's {classes}", run_dir)
        rows[_row_label(run_dir, rows)] = ev["per_class"]
    return format_table(rows, classes)


def _row_label(run_dir, rows) -> str:
    label = Path(run_dir).resolve().name
    while label in rows:
        label += "'"
    return label


def _compare_domains(run_dirs, key: str, domains: Sequence[str] | None) -> str:
    rows: dict[str, dict[str, float]] = {}
    found: set[str] = set()
    for run_dir in run_dirs:
        evals = load_domain_evaluations(run_dir)
        found.update(evals)
        rows[_row_label(run_dir, rows)] = {name: ev[key] for name, ev in evals.items()}
    if domains:
        unknown = [d for d in domains if d not in found]
        if unknown:
            raise InputError(f"no run was evaluated on {unknown[0]!r}; evaluated: {', '.join(sorted(found))}")
    return format_domain_table(rows, list(domains) if domains else sorted(found))

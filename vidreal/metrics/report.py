"""Show a metrics result: a terminal table and a PNG of the per-frame curves."""
from __future__ import annotations

from pathlib import Path

import numpy as np

# (label, output key, source key or None, format); labels may use the result's settings.
TABLE_ROWS = (
    ("warp error (masked MSE)", "warp_error", "warp_error_source", "{:.6f}"),
    ("unwarped frame difference (MSE)", "unwarped_error", "unwarped_error_source", "{:.6f}"),
    ("interpolation RMSE", "interp_rmse", "interp_rmse_source", "{:.4f}"),
    ("interpolation PSNR (dB)", "interp_psnr", "interp_psnr_source", "{:.2f}"),
    ("edge F1 (r={edge_radius:g} px)", "edge_f1", None, "{:.3f}"),
    ("edge precision", "edge_precision", None, "{:.3f}"),
    ("edge recall", "edge_recall", None, "{:.3f}"),
    ("pose PCK@{pck_alpha:g}", "pose_pck", None, "{:.3f}"),
    ("CLIP frame consistency", "clip_consistency", "clip_consistency_source", "{:.4f}"),
    ("CLIP prompt alignment", "clip_prompt_alignment", "clip_prompt_alignment_source", "{:.4f}"),
)

# (panel title, [(per-frame key, legend label)], y label)
PLOT_PANELS = (
    ("warp error", [("warp_error", "output"), ("warp_error_source", "source")], "masked MSE (t, t+1)"),
    ("interpolation error", [("interp_rmse", "output"), ("interp_rmse_source", "source")], "RMSE"),
    ("structure", [("edge_f1", "edge F1"), ("pose_pck", "pose PCK")], "score"),
    ("CLIP", [("clip_consistency", "consistency (output)"), ("clip_consistency_source", "consistency (source)"),
              ("clip_prompt_alignment", "prompt alignment (output)")], "cosine"),
)


def _fmt(value, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


def format_table(result: dict) -> str:
    """The result of ``compute_metrics`` as an aligned text table with a few notes below.

    Unavailable groups show "n/a"; their reasons (``result["unavailable"]``) are the caller's to show.
    """
    settings = result.get("settings", {})
    rows = [("metric", "output", "source")]
    for label, key, source_key, fmt in TABLE_ROWS:
        rows.append((
            label.format(**settings),
            _fmt(result.get(key), fmt),
            _fmt(result.get(source_key), fmt) if source_key else "",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:>{widths[2]}}".rstrip() for a, b, c in rows]
    lines.insert(1, "-" * len(lines[0]))
    size = f"{result['n_frames']} frames, {result['width']}x{result['height']}"
    if result.get("output_resized_from"):
        h, w = result["output_resized_from"]
        size += f" (output resized from {w}x{h})"
    notes = [f"{size}; flow {settings.get('flow', '?')}"]
    if result.get("selection"):
        kept = result["selection"]
        notes.append(f"source frames {kept['kept']} ({kept['frames']} of {kept['source_frames']})")
    if result.get("masked_fraction") is not None:
        notes.append(f"occlusion mask drops {100 * result['masked_fraction']:.1f}% of pixels per frame pair")
    if result.get("pose_frames") is not None:
        notes.append(f"pose: {result['pose_frames']} frames scored, "
                     f"{result['pose_frames_excluded']} without a person in the source")
    return "\n".join(lines + [""] + notes)


def plot_metrics(result: dict, path) -> Path:
    """Write the per-frame curves of a ``compute_metrics`` result as a PNG at ``path`` (atomic).

    One panel per metric group that has values; the x axis is the frame index (pair values at
    the pair's first frame).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vidreal.io import atomic_output

    per = result.get("per_frame", {})
    panels = [
        (title, [(per[k], label) for k, label in series if k in per and any(v is not None for v in per[k])], ylabel)
        for title, series, ylabel in PLOT_PANELS
    ]
    panels = [p for p in panels if p[1]]
    n = result["n_frames"]
    fig, axes = plt.subplots(max(len(panels), 1), 1, figsize=(8, 2.4 * max(len(panels), 1)), sharex=True,
                             squeeze=False)
    x = np.arange(n)
    for ax, (title, series, ylabel) in zip(axes[:, 0], panels):
        for values, label in series:
            y = np.array([np.nan if v is None else v for v in values], dtype=float)
            ax.plot(x, y, marker="o" if n <= 30 else None, markersize=3, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    axes[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
    return path


def save_json(result: dict, path) -> Path:
    """Write a ``compute_file_metrics`` result (per-frame values included) as JSON, atomically."""
    import json

    from vidreal.io import atomic_output

    with atomic_output(path) as tmp:
        Path(tmp).write_text(json.dumps(result, indent=2) + "\n")
    return Path(path)

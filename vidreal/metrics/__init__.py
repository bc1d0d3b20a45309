"""Metrics of a translated clip against its source: temporal consistency and structure fidelity.

    result = compute_metrics(source_frames, output_frames, prompt="a person")  # plain dict
    result = compute_file_metrics("render.mp4", "real.mp4", plot="metrics.png")
    print(format_table(result))

Groups (each module's docstring gives the exact definitions):
  - temporal (``temporal.py``): warp error (Lai et al. 2018) with flow and occlusion masks
    computed once on the SOURCE, the unwarped frame difference, and the interpolation error;
    each also for the source itself, the floor a translation can reach.
  - structure (``structure.py``): Canny edge F1 with a tolerance radius; pose PCK on mediapipe
    keypoints.
  - CLIP (``clip.py``, optional): frame consistency and prompt alignment.

The result is JSON-ready: floats, ints, None (undefined or unavailable), lists and dicts.
Top-level keys are always present, so results of many clips average key by key; ``per_frame``
holds lists of length T for the groups that ran; ``unavailable`` maps a group to the one-line
reason it could not run (CLIP model or pose detector missing); ``seconds`` the time per group.
"""
from __future__ import annotations

import time

import numpy as np

from vidreal.errors import ConfigError, InputError, ModelError
from vidreal.io import resize_frames
from vidreal.metrics import clip as _clip
from vidreal.metrics import temporal as _temporal
from vidreal.metrics.clip import DEFAULT_CLIP_MODEL, clip_metrics, load_clip
from vidreal.flow import FLOW_METHODS, check_flow_method, make_flow_estimator, valid_mask, warp
from vidreal.metrics.report import format_table, plot_metrics
from vidreal.metrics.structure import edge_map, edge_metrics, edge_scores, pose_metrics, pose_pck
from vidreal.metrics.temporal import temporal_metrics

__all__ = [
    "DEFAULT_CLIP_MODEL", "FLOW_METHODS", "SUMMARY_KEYS", "compute_metrics", "compute_file_metrics",
    "temporal_metrics", "edge_metrics", "pose_metrics", "pose_pck", "clip_metrics", "load_clip",
    "make_flow_estimator", "valid_mask", "warp", "edge_map", "edge_scores", "format_table", "plot_metrics",
]

# Every result has these keys (None when not computed).
SUMMARY_KEYS = (
    _temporal.SUMMARY_KEYS
    + ("edge_f1", "edge_precision", "edge_recall", "pose_pck", "pose_frames", "pose_frames_excluded")
    + _clip.SUMMARY_KEYS
)


def _check_frames(name: str, frames) -> np.ndarray:
    if not isinstance(frames, np.ndarray):
        raise InputError(f"{name} frames must be a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise InputError(f"{name} frames must be uint8 (T, H, W, 3) RGB, got {frames.dtype} {tuple(frames.shape)}")
    return frames


def _check_counts(n_source: int, n_output: int, path=None) -> None:
    if n_source != n_output:
        raise InputError(
            f"frame counts differ: source has {n_source} frames, output has {n_output}", path=path
        )


def compute_metrics(
    source: np.ndarray,
    output: np.ndarray,
    *,
    flow: str = "dis",
    pose: bool = True,
    clip_model: str | None = None,
    prompt: str | None = None,
    edge_radius: float = 2.0,
    pck_alpha: float = 0.1,
    device=None,
    progress: bool = False,
) -> dict:
    """All metrics of ``output`` against ``source``.

    source, output: uint8 ``(T, H, W, 3)`` RGB with the same T (else InputError naming both
    counts). An output of another size is resized to the source's size first (the source's
    flow, edges and keypoints are in its pixels). flow: ``FLOW_METHODS`` name ("dis",
    "dis-fast", "farneback", "raft", "raft-small"); RAFT without weights raises ModelError. pose: run the
    mediapipe pose PCK. clip_model: hub id or folder of a CLIP model, None to skip CLIP; a model
    that cannot be loaded makes the CLIP values None with the reason in ``unavailable["clip"]``.
    prompt: text for CLIP prompt alignment. edge_radius: edge F1 tolerance in px. pck_alpha: PCK
    threshold as a fraction of the source keypoints' bounding-box diagonal. device: for CLIP and
    RAFT (None: CUDA when available). One-frame clips get None for the temporal values.

    Returns a dict with every key of ``SUMMARY_KEYS`` plus ``n_frames``, ``height``, ``width``,
    ``output_resized_from`` ([h, w] or None), ``settings``, ``unavailable``, ``seconds`` and
    ``per_frame`` (see the package docstring).
    """
    source = _check_frames("source", source)
    output = _check_frames("output", output)
    _check_counts(len(source), len(output))
    check_flow_method(flow)
    if not edge_radius >= 0:
        raise ConfigError(f"edge_radius must be >= 0, got {edge_radius!r}")
    if not pck_alpha > 0:
        raise ConfigError(f"pck_alpha must be > 0, got {pck_alpha!r}")
    n, height, width, _ = source.shape
    resized_from = None
    if output.shape[1:3] != source.shape[1:3]:
        resized_from = list(output.shape[1:3])
        output = resize_frames(output, height, width)

    result = {"n_frames": n, "height": height, "width": width, "output_resized_from": resized_from}
    result.update({key: None for key in SUMMARY_KEYS})
    result["settings"] = {
        "flow": flow, "edge_radius": edge_radius, "pck_alpha": pck_alpha, "pose": pose,
        "clip_model": clip_model, "prompt": prompt,
    }
    unavailable, seconds, per_frame = {}, {}, {}

    def run(group, fn, *args, **kwargs):
        start = time.perf_counter()
        values = fn(*args, **kwargs)
        seconds[group] = time.perf_counter() - start
        per_frame.update(values.pop("per_frame"))
        result.update(values)

    run("temporal", temporal_metrics, source, output, flow=flow, device=device, progress=progress)
    run("edges", edge_metrics, source, output, radius=edge_radius, progress=progress)
    if pose:
        try:
            run("pose", pose_metrics, source, output, alpha=pck_alpha, progress=progress)
        except ImportError as exc:  # mediapipe (or its native libraries) missing
            unavailable["pose"] = f"pose detector cannot be imported: {exc}"
    if clip_model is not None:
        try:
            run("clip", clip_metrics, source, output, model=clip_model, prompt=prompt, device=device,
                progress=progress)
        except ModelError as exc:
            unavailable["clip"] = str(exc)
    result["unavailable"] = unavailable
    result["seconds"] = seconds
    result["per_frame"] = per_frame
    return result


def compute_file_metrics(source, output, *, plot=None, **options) -> dict:
    """``compute_metrics`` of two video/image files, plus ``source``/``output`` paths in the result.

    Frame counts are compared before decoding (InputError naming both counts). plot: a PNG path
    for ``plot_metrics`` (written atomically), or None. options: ``compute_metrics`` keywords.
    """
    from vidreal.io import probe, read_video

    n_source, n_output = probe(source).n_frames, probe(output).n_frames
    _check_counts(n_source, n_output, path=output)
    source_frames = read_video(source).frames
    output_frames = read_video(output).frames
    _check_counts(len(source_frames), len(output_frames), path=output)  # probe counts can be estimates
    result = compute_metrics(source_frames, output_frames, **options)
    result["source"] = str(source)
    result["output"] = str(output)
    if plot is not None:
        plot_metrics(result, plot)
    return result

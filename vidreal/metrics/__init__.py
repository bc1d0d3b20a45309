"""Metrics of a translated clip against its source: temporal consistency and structure fidelity.

    result = compute_metrics(source_frames, output_frames, prompt="a person")  # plain dict
    result = compute_file_metrics("render.mp4", "real.mp4", plot="metrics.png")
    print(format_table(result))
    stream = MetricsStream()                      # a clip in chunks, never held whole
    for src, out in chunks: stream.add(src, out)
    result = stream.result()                      # what compute_metrics(source, output) gives

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
from vidreal.progress import bar as tqdm  # tqdm on a terminal, plain lines in a log, off under -q

from vidreal.errors import ConfigError, InputError, ModelError
from vidreal.io import resize_frames
from vidreal.metrics import clip as _clip
from vidreal.metrics import temporal as _temporal
from vidreal.metrics.clip import DEFAULT_CLIP_MODEL, check_clip, clip_metrics, load_clip
from vidreal.flow import FLOW_METHODS, check_flow_method, make_flow_estimator, valid_mask, warp
from vidreal.metrics.report import format_table, plot_metrics
from vidreal.metrics.structure import (EdgeStream, PoseStream, edge_map, edge_metrics, edge_scores, pose_metrics,
                                       pose_pck)
from vidreal.metrics.temporal import TemporalStream, temporal_metrics
from vidreal.runtime import check_finite, check_frames

__all__ = [
    "DEFAULT_CLIP_MODEL", "FLOW_METHODS", "SUMMARY_KEYS", "MetricsStream", "compute_metrics", "compute_file_metrics",
    "temporal_metrics", "edge_metrics", "pose_metrics", "pose_pck", "clip_metrics", "load_clip",
    "make_flow_estimator", "valid_mask", "warp", "edge_map", "edge_scores", "format_table", "plot_metrics",
]

# Every result has these keys (None when not computed).
SUMMARY_KEYS = (
    _temporal.SUMMARY_KEYS
    + ("edge_f1", "edge_precision", "edge_recall", "pose_pck", "pose_frames", "pose_frames_excluded")
    + _clip.SUMMARY_KEYS
)


def _check_counts(n_source: int, n_output: int, path=None) -> None:
    if n_source != n_output:
        raise InputError(
            f"frame counts differ: source has {n_source} frames, output has {n_output}", path=path
        )


class MetricsStream:
    """The temporal, edge and pose metrics of a clip that arrives in (source, output) chunks, in
    order; memory holds a few frames, never the clip. ``result()`` equals ``compute_metrics`` of the
    whole clips with the same options (CLIP, which needs whole clips, is not included).

        with MetricsStream(flow="dis") as stream:
            for src, out in pairs:        # uint8 (n, H, W, 3) each, same n
                stream.add(src, out)
            result = stream.result()
    """

    def __init__(self, *, flow: str = "dis", pose: bool = True, edge_radius: float = 2.0, pck_alpha: float = 0.1,
                 device=None):
        check_flow_method(flow)
        if not check_finite("edge_radius", edge_radius) >= 0:
            raise ConfigError(f"edge_radius must be >= 0, got {edge_radius!r}")
        if not check_finite("pck_alpha", pck_alpha) > 0:
            raise ConfigError(f"pck_alpha must be > 0, got {pck_alpha!r}")
        self.settings = {"flow": flow, "edge_radius": edge_radius, "pck_alpha": pck_alpha, "pose": pose,
                         "clip_model": None, "prompt": None}
        self.groups = {"temporal": TemporalStream(flow, device), "edges": EdgeStream(edge_radius)}
        self.unavailable: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        if pose:
            try:
                self.groups["pose"] = PoseStream(pck_alpha)
            except ImportError as exc:  # mediapipe (or its native libraries) missing
                self.unavailable["pose"] = f"pose detector cannot be imported: {exc}"
        self.n_frames = 0
        self.shape = None
        self.resized_from = None

    def add(self, source: np.ndarray, output: np.ndarray) -> None:
        """Score the next uint8 ``(n, H, W, 3)`` source and output frames (same n; an output of
        another size is resized to the source's, as ``compute_metrics`` does)."""
        source = check_frames(source, "source frames")
        output = check_frames(output, "output frames")
        _check_counts(len(source), len(output))
        if self.shape is None:
            self.shape = source.shape[1:3]
        elif source.shape[1:3] != self.shape:
            raise InputError(f"source frames changed size from {self.shape} to {source.shape[1:3]}")
        if output.shape[1:3] != source.shape[1:3]:
            self.resized_from = list(output.shape[1:3])
            output = resize_frames(output, *source.shape[1:3])
        for name, group in self.groups.items():
            start = time.perf_counter()
            group.add(source, output)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        self.n_frames += len(source)

    def result(self) -> dict:
        """The ``compute_metrics`` dict for the frames added so far (see its docstring)."""
        if self.shape is None:
            raise InputError("no frames were added to the metrics")
        result = {"n_frames": self.n_frames, "height": self.shape[0], "width": self.shape[1],
                  "output_resized_from": self.resized_from}
        result.update({key: None for key in SUMMARY_KEYS})
        result["settings"] = dict(self.settings)
        per_frame = {}
        for group in self.groups.values():
            values = group.result()
            per_frame.update(values.pop("per_frame"))
            result.update(values)
        result["unavailable"] = dict(self.unavailable)
        result["seconds"] = dict(self.seconds)
        result["per_frame"] = per_frame
        return result

    def close(self) -> None:
        if "pose" in self.groups:
            self.groups["pose"].close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False


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
    RAFT (None: auto, cuda > mps > cpu). One-frame clips get None for the temporal values.

    Returns a dict with every key of ``SUMMARY_KEYS`` plus ``n_frames``, ``height``, ``width``,
    ``output_resized_from`` ([h, w] or None), ``settings``, ``unavailable``, ``seconds`` and
    ``per_frame`` (see the package docstring).
    """
    source = check_frames(source, "source frames")
    output = check_frames(output, "output frames")
    _check_counts(len(source), len(output))
    clip_missing = None
    if clip_model is not None:
        try:  # up front: a missing CLIP model is known in seconds, and the other scores still run
            check_clip(clip_model)
        except ModelError as exc:
            clip_missing = str(exc)
    with MetricsStream(flow=flow, pose=pose, edge_radius=edge_radius, pck_alpha=pck_alpha, device=device) as stream, \
            tqdm(total=len(source), desc="metrics", unit="frame", disable=not progress) as bar:
        for start in range(0, len(source), 8):
            stream.add(source[start:start + 8], output[start:start + 8])
            bar.update(min(8, len(source) - start))
        result = stream.result()
    result["settings"].update(clip_model=clip_model, prompt=prompt)
    if clip_missing is not None:
        result["unavailable"]["clip"] = clip_missing
    elif clip_model is not None:
        if result["output_resized_from"] is not None:
            output = resize_frames(output, *source.shape[1:3])
        start = time.perf_counter()
        try:
            values = clip_metrics(source, output, model=clip_model, prompt=prompt, device=device, progress=progress)
            result["per_frame"].update(values.pop("per_frame"))
            result.update(values)
        except ModelError as exc:
            result["unavailable"]["clip"] = str(exc)
        result["seconds"]["clip"] = time.perf_counter() - start
    return result


def compute_file_metrics(source, output, *, plot=None, save=None, selection=None, **options) -> dict:
    """``compute_metrics`` of two video/image files, plus ``source``/``output`` paths in the result.

    The source frames compared are those the output was translated from: the frame selection
    (``{start, end, every, max_frames}``, see ``vidreal.selection``) recorded in OUTPUT.vidreal.yaml
    when there is one, with the keys of ``selection`` that are not None over it; ``result["selection"]``
    says what was kept. Frame counts are compared before decoding (InputError naming both
    counts). plot: a PNG path for ``plot_metrics``; save: a JSON path for the whole result
    (``report.save_json``); both written atomically, and refused (OutputError) when they are
    ``source`` or ``output``. options: ``compute_metrics`` keywords.
    """
    from vidreal import selection as frames
    from vidreal.config import record_path
    from vidreal.io import probe, read_frames, read_video, refuse_overwriting
    from vidreal.metrics.report import save_json

    for path in (plot, save):
        refuse_overwriting(path, [source, output])
    chosen = frames.recorded(record_path(output))
    chosen.update({key: value for key, value in (selection or {}).items() if value is not None})
    plan = frames.select(probe(source), **chosen)
    n_output = probe(output).n_frames
    _check_counts(len(plan.indices), n_output, path=output)
    source_frames = read_frames(source, plan.indices) if plan.active else read_video(source).frames
    output_frames = read_video(output).frames
    _check_counts(len(source_frames), len(output_frames), path=output)  # probe counts can be estimates
    result = compute_metrics(source_frames, output_frames, **options)
    result["source"] = str(source)
    result["output"] = str(output)
    result["selection"] = plan.summary() if plan.active else None
    if plot is not None:
        plot_metrics(result, plot)
    if save is not None:
        save_json(result, save)
    return result

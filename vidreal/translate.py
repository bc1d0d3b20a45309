"""File-level translation: read (streamed) -> conditions -> Translator -> write, keeping fps and audio.

    result = translate_file("clip.mp4", "out.mp4", load_config("configs/rocog.yaml"))

Images are one-frame clips through the same path (image in, image out).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from vidreal import selection
from vidreal.config import TranslateConfig, record_path, write_config
from vidreal.io import OutputFiles, check_output, open_media, resize_frames

log = logging.getLogger(__name__)

PREVIEW_HEIGHT = 256  # each panel of the side-by-side preview


@dataclass
class TranslateResult:
    input: Path
    output: Path
    n_frames: int
    fps: Fraction | None
    seconds: float
    prompt: str
    config: TranslateConfig
    reports: dict[str, str] = field(default_factory=dict)  # e.g. {"pose": "no person found in 3/48 frames"}
    metrics: dict | None = None
    preview: Path | None = None
    conditions: dict[str, Path] = field(default_factory=dict)
    structure: dict | None = None  # {"edge_f1", "pose_pck"} from the frames in memory (structure=True)
    keypoints: Path | None = None


def load_translator(config: TranslateConfig):
    """Load the model and ControlNets a config names (once per process or worker)."""
    from vidreal.pipeline import Translator

    translator = Translator.from_pretrained(
        config.model, config.controlnets, device=config.device, dtype=config.dtype, embeddings=config.embeddings,
        lora=config.lora, lora_scale=config.lora_scale, allow_pickle=config.allow_pickle,
        model_config=config.model_config,
    )
    translator.use_levers(config.levers)
    if config.compile:
        translator.compile()
    return translator


def translate_file(input, output, config: TranslateConfig | None = None, translator=None, preview=None,
                   save_conditions=None, progress=True, prompt=None, metrics=False, record=True, structure=False,
                   keypoints=None) -> TranslateResult:
    """Translate one video or image file.

    Args:
        input, output: paths; the output keeps the input's fps, frame count, size and audio stream
            (and each frame's time for a variable-frame-rate input). An image input gives an
            image (an image output path). The config's frame selection (``start``, ``end``,
            ``every``, ``max_frames``; ``vidreal.selection``) keeps only some frames: only those
            are decoded, the output runs at fps / every, its audio covers the kept span.
        config: a TranslateConfig (defaults when None).
        translator: a loaded ``Translator`` (loaded from ``config`` when None; pass one to reuse it).
        preview: optional path of a side-by-side video/image (source | conditions | output).
        save_conditions: optional folder for the condition maps at the working size
            (``<stem>.<kind>.<ext>``).
        prompt: overrides the prompt of ``config`` (its ``prompts_file`` or template).
        metrics: compute ``vidreal.metrics`` (source vs output, on the frames in hand, before
            encoding) and record them.
        record: write the resolved config beside the output (``OUTPUT.vidreal.yaml``).

    The input is opened once and streamed: memory depends on ``chunk_size``, not on the clip's
    length, with or without preview, condition maps and metrics. Condition kinds and their
    options are checked (and detector weights loaded) before the model. Every file of the run -
    output, preview, condition maps, record - is moved into place together, after all of them
    were written; on any failure (a full disk included) none is, and nothing is left behind.
        structure: score edge F1 and pose PCK (``vidreal.gate.StructureScores``) from the frames
            in memory as they stream; ``"edges"`` scores the edges only.
        keypoints: a ``.json`` path for the source's pose keypoints (``vidreal.conditions.keypoints``,
            in input pixels; needs a pose ControlNet).
    """
    from vidreal.conditions import DetectorSet
    from vidreal.metrics import SUMMARY_KEYS, MetricsStream
    from vidreal.prompts import Prompts

    start = time.perf_counter()
    config = config or TranslateConfig()
    input, output = Path(input), Path(output)
    media = open_media(input)  # the only time the input is opened
    plan = selection.select(media.info, **selection.of(config))  # before any model loads
    info = plan.info  # what is written: the kept frames, at fps / every
    check_output(output, info)
    if preview is not None:
        check_output(preview, info)
    kinds = list(translator.controlnet_names if translator is not None else config.controlnets)
    prompt = Prompts(config, input.parent).for_path(input) if prompt is None else prompt
    ext = output.suffix if info.is_image else ".mp4"
    condition_paths = {} if save_conditions is None else {
        kind: Path(save_conditions) / f"{output.stem}.{kind}{ext}" for kind in kinds}
    if info.timestamps is not None:
        log.warning("%s: variable frame rate (%d frames over %.2f s, %.3f fps on average): frame times are kept",
                    input, info.n_frames, info.timestamps[-1], float(info.fps))
    options = {kind: opts for kind, opts in config.conditions.items() if kind in kinds}
    if "openpose" in kinds:  # the annotator's .pth files are pickles: the same consent as other weights
        options["openpose"] = {"allow_pickle": config.allow_pickle, **options.get("openpose", {})}
    with DetectorSet(kinds, options) as detectors, ExitStack() as stack:
        translator = translator or load_translator(config)
        work = translator.working_size(info.height, info.width, config.size)
        log.info("translating %s: %d frame(s) %dx%d%s at %dx%d, %s, prompt %r", input, info.n_frames, info.width,
                 info.height, f" @ {float(info.fps):.3f} fps" if info.fps else "", work[1], work[0],
                 config.consistency, prompt)
        files = stack.enter_context(OutputFiles())
        video = dict(codec=config.codec, crf=config.crf, timestamps=info.timestamps)
        writer = files.video(output, info.fps, audio_from=input if info.has_audio else None,
                             audio_span=plan.audio_span, **video)
        preview_writer = None if preview is None else files.video(preview, info.fps, **video)
        condition_writers = {kind: files.video(path, info.fps, **video) for kind, path in condition_paths.items()}
        scores = None if not metrics else stack.enter_context(MetricsStream())
        structure_scores, people = _structure_hooks(structure, keypoints, kinds, info, work)
        if structure_scores is not None:
            stack.callback(structure_scores.close)
        waiting = _Waiting() if preview_writer is not None or scores is not None or structure_scores is not None \
            else None

        stats: dict = {}  # keyframes, propagated frames, frame memory size (Translator.stream)

        def pieces():  # may run in a prefetch thread (batch overlap): it only touches its own writers
            for chunk in media.chunks(config.chunk_size, plan.indices if plan.active else None):
                small = resize_frames(chunk, *work)  # conditions are extracted at the working size
                maps = detectors(small)
                for kind, condition_writer in condition_writers.items():
                    condition_writer.write(maps[kind])
                if waiting is not None:
                    row = None if preview_writer is None else np.concatenate(
                        [_panel(small), *(_panel(maps[kind]) for kind in kinds)], axis=2)
                    waiting.put(chunk, row)
                if people is not None:
                    people.add(detectors.detectors["pose"].last_people)
                yield chunk, maps

        emitted = 0  # frames written so far: the next frame's index
        for frames in translator.stream(
            pieces(), prompt, config.negative_prompt, config.steps, config.guidance, config.controlnet_scale or None,
            config.seed, config.chunk_size, config.consistency, config.size, progress, n_frames=info.n_frames,
            control_start=config.control_start, control_end=config.control_end, guess_mode=config.guess_mode,
            keyframe_every=config.keyframe_every, refine=config.refine, flow_band=config.flow_band,
            kv_cache=config.kv_cache, stats=stats, scheduler=config.scheduler, eta=config.eta,
            deepcache_interval=config.deepcache_interval, tome_ratio=config.tome_ratio,
        ):
            writer.write(frames)
            if waiting is not None:
                source, rows = waiting.take(len(frames))
                if preview_writer is not None:
                    marked = _mark_keyframes(frames, emitted, config.keyframe_every, info.n_frames)
                    preview_writer.write(np.concatenate([rows, _panel(marked)], axis=2))
                if scores is not None:
                    scores.add(source, frames)
                if structure_scores is not None:
                    structure_scores.add(source, frames)
            emitted += len(frames)
        reports = detectors.reports()
        result = TranslateResult(input, output, info.n_frames, info.fps, 0.0, prompt, config, reports,
                                 preview=None if preview is None else Path(preview), conditions=condition_paths)
        if scores is not None:
            values = scores.result()
            result.metrics = {**{key: values.get(key) for key in SUMMARY_KEYS}, "settings": values.get("settings", {})}
        if structure_scores is not None:
            result.structure = structure_scores.result()
        if people is not None:
            result.keypoints = people.write(keypoints)
        result.seconds = time.perf_counter() - start
        if record:
            write_config(record_path(output), config, files=files, extra={
                "input": str(input), "prompt": prompt, "frames": info.n_frames,
                "fps": None if info.fps is None else str(info.fps),
                "timestamps": "kept (variable frame rate)" if info.timestamps is not None else None,
                **({"selection": plan.summary()} if plan.active else {}),
                "seconds": round(result.seconds, 3),
                "device": str(translator.device), "dtype": str(translator.pipe.unet.dtype).replace("torch.", ""),
                "reports": reports, "metrics": result.metrics, "correspondence": _summary(stats, config),
            })
    for note in reports.values():
        log.warning("%s: %s", input, note)
    log.info("wrote %s (%d frame(s), %.1f s)", output, info.n_frames, result.seconds)
    return result


class _Waiting:
    """Source frames (and preview rows) waiting for their outputs, first in first out; ``put`` may
    run in another thread than ``take``."""

    def __init__(self):
        self._items: deque = deque()
        self._lock = threading.Lock()

    def put(self, frames: np.ndarray, rows: np.ndarray | None) -> None:
        with self._lock:
            self._items.append((frames, rows))

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The next ``n`` frames: uint8 (n, H, W, 3) source, and (n, h, w', 3) rows or None."""
        frames, rows = [], []
        with self._lock:
            while n > 0:
                f, r = self._items[0]
                if len(f) > n:
                    self._items[0] = (f[n:], None if r is None else r[n:])
                    f, r = f[:n], None if r is None else r[:n]
                else:
                    self._items.popleft()
                frames.append(f)
                rows.append(r)
                n -= len(f)
        return np.concatenate(frames), None if rows[0] is None else np.concatenate(rows)


def _structure_hooks(structure, keypoints, kinds, info, work):
    """(StructureScores or None, KeypointsLog or None) for ``translate_file``'s options."""
    scores = people = None
    if structure:
        from vidreal.gate import StructureScores

        scores = StructureScores(pose=structure != "edges")
    if keypoints is not None:
        from vidreal.conditions.keypoints import KeypointsLog, check_keypoints_path
        from vidreal.errors import ConfigError

        check_keypoints_path(keypoints)
        if "pose" not in kinds:
            raise ConfigError(f"keypoints come from the pose condition: the ControlNets read {', '.join(kinds)}")
        people = KeypointsLog(info.width, info.height, scale=(info.width / work[1], info.height / work[0]))
    return scores, people


def _summary(stats: dict, config: TranslateConfig) -> dict:
    """What the correspondence options did, for OUTPUT.vidreal.yaml."""
    keys = stats.get("keyframes", [])
    return {"keyframes": len(keys), "propagated": stats.get("propagated", 0),
            "unseen_fraction": round(stats.get("unseen_fraction", 0.0), 4),
            "frame_memory_mb": round(stats.get("frame_memory_bytes", 0) / 2**20, 2)}


def _mark_keyframes(frames: np.ndarray, first: int, every: int | None, n_frames: int) -> np.ndarray:
    """Preview frames (indices first, first+1, ...) with a green top bar on keyframes, when keyframes are on."""
    if (every or 1) == 1:
        return frames
    frames = frames.copy()
    for i in range(len(frames)):
        if (first + i) % every == 0 or first + i == n_frames - 1:
            frames[i, :max(2, frames.shape[1] // 32)] = (0, 255, 0)
    return frames


def _panel(frames: np.ndarray) -> np.ndarray:
    """Frames scaled to the preview panel height (even width), for side-by-side previews."""
    h, w = frames.shape[1:3]
    width = max(2, round(w * PREVIEW_HEIGHT / h / 2) * 2)
    return resize_frames(frames, PREVIEW_HEIGHT, width)

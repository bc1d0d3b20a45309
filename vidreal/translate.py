"""File-level translation: read (streamed) -> conditions -> Translator -> write, keeping fps and audio.

    result = translate_file("clip.mp4", "out.mp4", load_config("configs/rocog.yaml"))

Images are one-frame clips through the same path (image in, image out).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from contextlib import ExitStack, closing
import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from vidreal import selection
from vidreal.config import TranslateConfig, record_path, write_config
from vidreal.io import OutputFiles, check_output, is_frame_folder, open_media, resize_frames
from vidreal.stages import DEPTH, Stages

log = logging.getLogger(__name__)

PREVIEW_HEIGHT = 256  # each panel of the side-by-side preview
STAGE_NAMES = ("decode", "conditions", "flow", "propagation", "denoise", "encode")  # result.stages


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
    stages: dict | None = None  # {stage: {"ms_per_frame", "busy", ...}} (vidreal.stages.Timings.report)


def load_translator(config: TranslateConfig, long_runs: bool = False):
    """Load the model and ControlNets a config names (once per process or worker). ``long_runs``:
    the translator serves many runs (a batch's worker), so ``compile: auto`` compiles it on CUDA."""
    from vidreal.pipeline import Translator

    translator = Translator.from_pretrained(
        config.model, config.controlnets, device=config.device, dtype=config.dtype, embeddings=config.embeddings,
        lora=config.lora, lora_scale=config.lora_scale, allow_pickle=config.allow_pickle,
        model_config=config.model_config, vae=config.vae,
    )
    translator.use_compile(config.compile, long_runs=long_runs)
    return translator


def translate_file(input, output, config: TranslateConfig | None = None, translator=None, preview=None,
                   save_conditions=None, progress=True, prompt=None, metrics=False, record=True, structure=False,
                   keypoints=None, overlap=True) -> TranslateResult:
    """Translate one video or image file.

    Args:
        input, output: paths; the output keeps the input's fps, frame count, size and audio stream
            (and each frame's time for a variable-frame-rate input). An image input gives an
            image (an image output path). The config's frame selection (``start``, ``end``,
            ``every``, ``max_frames``; ``vidreal.selection``) keeps only some frames: only those
            are decoded, the output runs at fps / every, its audio covers the kept span. The config's
            output options: ``output_fps`` (the same frames at that rate; the audio copied as it is),
            ``audio`` (False: left out), ``pix_fmt`` (the encoder's pixel format).
        config: a TranslateConfig (defaults when None).
        translator: a loaded ``Translator`` (loaded from ``config`` when None; pass one to reuse it).
        preview: optional path of a side-by-side video/image (source | conditions | output).
        save_conditions: optional folder for the condition maps at the working size
            (``<stem>.<kind>.<ext>``).
        prompt: overrides the prompt of ``config`` (its ``prompts_file`` or template).
        metrics: compute ``vidreal.metrics`` (source vs output, on the frames in hand, before
            encoding) and record them.
        record: write the resolved config beside the output (``OUTPUT.vidreal.yaml``).
        structure: score edge F1 and pose PCK (``vidreal.gate.StructureScores``) from the frames
            in memory as they stream; ``"edges"`` scores the edges only.
        keypoints: a ``.json`` path for the source's pose keypoints (``vidreal.conditions.keypoints``,
            in input pixels; needs a pose ControlNet).
        overlap: run the stages (decode, conditions, denoising, encoding) at the same time, in
            threads connected by bounded queues (``vidreal.stages``); False: one after another in
            this thread (the same output; for tests and debugging).

    The input is opened once and streamed: memory depends on ``chunk_size``, not on the clip's
    length, with or without preview, condition maps and metrics. Condition kinds and their
    options are checked (and detector weights loaded) before the model. Every file of the run -
    output, preview, condition maps, record - is moved into place together, after all of them
    were written; on any failure in any stage (a full disk included) none is, nothing is left
    behind and every stage has stopped. ``result.stages`` says how busy each stage was.
    """
    from vidreal.conditions import DetectorSet
    from vidreal.prompts import Prompts

    start = time.perf_counter()
    config = config or TranslateConfig()
    input, output = Path(input), Path(output)
    media = open_media(input, fps=config.input_fps)  # the only time the input is opened
    plan = selection.select(media.info, **selection.of(config))  # before any model loads
    info = output_info(plan.info, config)  # what is written: the kept frames, at fps / every or output_fps
    check_output(output, info)
    if preview is not None:
        check_output(preview, info)
    kinds = list(translator.controlnet_names if translator is not None else config.controlnets)
    prompt = Prompts(config, input.parent).for_path(input) if prompt is None else prompt
    ext = (output.suffix or ".png") if info.is_image else ".mp4"
    condition_paths = {} if save_conditions is None else {
        kind: Path(save_conditions) / f"{output.stem}.{kind}{ext}" for kind in kinds}
    if info.timestamps is not None:
        log.warning("%s: variable frame rate (%d frames over %.2f s, %.3f fps on average): frame times are kept",
                    input, info.n_frames, info.timestamps[-1], float(info.fps))
    with DetectorSet(kinds, _detector_options(config, kinds)) as detectors, ExitStack() as stack:
        translator = translator or load_translator(config)
        work = translator.working_size(info.height, info.width, config.size)
        log.info("translating %s: %d frame(s) %dx%d%s at %dx%d, %s, prompt %r", input, info.n_frames, info.width,
                 info.height, f" @ {float(info.fps):.3f} fps" if info.fps else "", work[1], work[0],
                 config.consistency, prompt)
        files = stack.enter_context(OutputFiles())
        encoder = _Encoder(files, stack, input, output, plan, info, config, kinds, preview, condition_paths, metrics,
                           structure)
        people = _keypoints_log(keypoints, kinds, info, work)
        stats = encoder.stats  # keyframes, propagated frames, frame memory size (Translator.stream)

        # The stages, each up to two chunks ahead of the next; entered last, so they have all
        # stopped before the output files are finished or dropped
        stages = stack.enter_context(Stages(overlap))
        decoded = stages.ahead("decode", media.chunks(config.chunk_size, plan.indices if plan.active else None))
        pieces = stages.ahead("conditions", _conditions(decoded, work, detectors, encoder.waiting, people,
                                                             _keyframes_ahead(config, preview, save_conditions,
                                                                              keypoints)),
                              depth=_conditions_depth(config))
        encode = stages.behind("encode", encoder.write, background=True)  # behind the denoiser: it has slack
        outputs = stages.iterate("denoise", translator.stream(
            pieces, prompt, config.options(), progress=progress, n_frames=info.n_frames, stats=stats))
        with closing(outputs):
            for frames in outputs:
                encode(frames)
        encode.finish()
        stages.timings.frames["denoise"] = len(stats.get("keyframes", ()))  # the frames denoised

        reports = detectors.reports()
        result = TranslateResult(input, output, info.n_frames, info.fps, 0.0, prompt, config, reports,
                                 preview=None if preview is None else Path(preview), conditions=condition_paths)
        result.metrics, result.structure = encoder.scores()
        if people is not None:
            result.keypoints = people.write(keypoints)
        result.stages = stages.timings.report(STAGE_NAMES)
        result.seconds = time.perf_counter() - start
        if record:
            write_config(record_path(output), _as_run(config, translator), files=files, extra={
                "input": str(input), "prompt": prompt, "frames": info.n_frames,
                "fps": None if info.fps is None else str(info.fps),
                **({"source_fps": str(plan.info.fps)} if info.fps != plan.info.fps else {}),
                "audio": encoder.audio is not None,
                "timestamps": "kept (variable frame rate)" if info.timestamps is not None else None,
                **({"selection": plan.summary()} if plan.active else {}),
                "seconds": round(result.seconds, 3),
                "compiled": translator.compiled,
                "reports": reports, "metrics": result.metrics, "correspondence": _summary(stats, config),
            })
    for note in reports.values():
        log.warning("%s: %s", input, note)
    log.info("wrote %s (%d frame(s), %.1f s)", output, info.n_frames, result.seconds)
    return result


DTYPE_NAMES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}  # torch's -> the config's


def output_info(info, config: TranslateConfig):
    """The ``VideoInfo`` of what a run writes from the kept frames ``info``: ``config.output_fps``,
    when set, is the clip's rate (the same frames with new timing: none added or dropped, a variable
    frame rate's own frame times dropped); a still image stays a still."""
    if config.output_fps is None or info.fps is None:
        return info
    return dataclasses.replace(info, fps=Fraction(config.output_fps), timestamps=None)


def _as_run(config: TranslateConfig, translator) -> TranslateConfig:
    """``config`` with the device and dtype the run used in place of auto (None), for the record."""
    dtype = str(translator.pipe.unet.dtype).replace("torch.", "")
    return dataclasses.replace(config, device=str(translator.device), dtype=DTYPE_NAMES.get(dtype, dtype))


def _detector_options(config: TranslateConfig, kinds) -> dict:
    """The condition options of ``kinds`` in ``config`` (openpose also gets the config's pickle consent)."""
    options = {kind: opts for kind, opts in config.conditions.items() if kind in kinds}
    if "openpose" in kinds:  # the annotator's .pth files are pickles: the same consent as other weights
        options["openpose"] = {"allow_pickle": config.allow_pickle, **options.get("openpose", {})}
    return options


def _conditions(chunks, work, detectors, waiting, people, chooser=None):
    """The conditions stage: the decoded chunks (uint8 (n, H, W, 3)) at the working size and their
    condition maps; yields the translator's pieces ``(chunk, {kind: maps})``. What the encoding
    stage needs later (source, working-size frames, maps) is left in ``waiting`` (None: nothing).

    ``chooser`` (a ``vidreal.keyframes.KeyframeChooser``, when only the keyframes need conditions):
    the keyframes are chosen here, ahead, the clip's last frame among them (one chunk is looked
    ahead), the detectors run on them only (the others get black maps), and the pieces carry the
    choice: ``(chunk, {kind: maps}, keys)``.

    Work on the source frames, in order, that the denoiser reads later belongs in this stage."""
    for chunk, last in _mark_last(chunks):
        small = resize_frames(chunk, *work)  # conditions are extracted at the working size
        keys = None if chooser is None else chooser.choose(small)
        if keys is not None and last:
            keys[-1] = True  # the last frame is always a keyframe
        maps = detectors(small, only=keys)
        if people is not None:
            people.add(detectors.detectors["pose"].last_people)
        if waiting is not None:
            waiting.put(source=chunk, small=small, maps=maps)
        yield (chunk, maps) if keys is None else (chunk, maps, keys)


def _mark_last(chunks):
    """(chunk, whether it is the last), one chunk behind ``chunks``."""
    previous = None
    for chunk in chunks:
        if previous is not None:
            yield previous, False
        previous = chunk
    if previous is not None:
        yield previous, True


def _conditions_depth(config: TranslateConfig) -> int:
    """Chunks the conditions stage may be ahead of the denoiser. With keyframes, one batch of
    ``chunk_size`` keyframes spans K chunks: while it denoises, the next batch's chunks are made
    (else the denoiser stalls at every batch); "auto" plans for gaps of 4 on average."""
    every = config.keyframe_every
    return DEPTH + (every if isinstance(every, int) and every > 1 else 4 if every == "auto" else 0)


def _keyframes_ahead(config: TranslateConfig, preview, save_conditions, keypoints):
    """A KeyframeChooser for the conditions stage when, with keyframes, nothing but the denoiser reads
    the condition maps (a preview, saved maps, keypoints and refine read every frame's); else None."""
    from vidreal.keyframes import KeyframeChooser

    chooser = KeyframeChooser(config.keyframe_every, config.keyframe_max_gap, config.keyframe_threshold)
    wanted = preview is not None or save_conditions is not None or keypoints is not None or bool(config.refine)
    return chooser if chooser.active and not wanted else None


class _Encoder:
    """The encoding stage: writes each output chunk (output, preview, condition maps) and scores it
    (metrics, structure) against its source frames, which wait in :attr:`waiting` meanwhile."""

    def __init__(self, files, stack, input, output, plan, info, config, kinds, preview, condition_paths, metrics,
                 structure):
        from vidreal.metrics import MetricsStream

        video = dict(codec=config.codec, crf=config.crf, preset=config.encoder_preset, pix_fmt=config.pix_fmt,
                     timestamps=info.timestamps)
        self.audio = input if info.has_audio and config.audio else None  # copied as it is (its span: plan's)
        if self.audio is not None and is_frame_folder(output):
            log.warning("%s: PNG frames hold no audio: the audio of %s is left out", output, input)
            self.audio = None
        self.writer = files.video(output, info.fps, audio_from=self.audio, audio_span=plan.audio_span, **video)
        self.preview = None if preview is None else files.video(preview, info.fps, **video)
        self.condition_writers = {kind: files.video(path, info.fps, **video) for kind, path in condition_paths.items()}
        self.metrics = None if not metrics else stack.enter_context(MetricsStream())
        self.structure = None
        if structure:
            from vidreal.gate import StructureScores

            self.structure = StructureScores(pose=structure != "edges")
            stack.callback(self.structure.close)
        self.kinds = kinds
        # Translator.stream's stats: its "keyframes" list grows as batches are denoised (ahead of this stage)
        self.stats: dict = {}
        self.marks = config.keyframe_every not in (None, 1)
        wanted = self.preview, self.metrics, self.structure, *self.condition_writers.values()
        self.waiting = _Waiting() if any(x is not None for x in wanted) else None
        self.emitted = 0  # frames written so far: the next frame's index

    def write(self, frames: np.ndarray) -> None:
        """Write and score the next output frames, uint8 (n, H, W, 3)."""
        self.writer.write(frames)
        if self.waiting is not None:
            waiting = self.waiting.take(len(frames))
            for kind, condition_writer in self.condition_writers.items():
                condition_writer.write(waiting["maps"][kind])
            if self.preview is not None:
                self.preview.write(self._preview_rows(waiting["small"], waiting["maps"], frames))
            if self.metrics is not None:
                self.metrics.add(waiting["source"], frames)
            if self.structure is not None:
                self.structure.add(waiting["source"], frames)
        self.emitted += len(frames)

    def _preview_rows(self, small, maps, frames) -> np.ndarray:
        """Side-by-side rows: source | each condition | output (keyframes marked)."""
        marked = _mark_keyframes(frames, self.emitted, self.stats.get("keyframes", ()) if self.marks else None)
        return np.concatenate([_panel(small, "source"), *(_panel(maps[kind], kind) for kind in self.kinds),
                               _panel(marked, "output")], axis=2)

    def scores(self) -> tuple[dict | None, dict | None]:
        """(metrics summary, structure scores), each None when not asked for."""
        from vidreal.metrics import SUMMARY_KEYS

        summary = None
        if self.metrics is not None:
            values = self.metrics.result()
            summary = {**{key: values.get(key) for key in SUMMARY_KEYS}, "settings": values.get("settings", {})}
        return summary, None if self.structure is None else self.structure.result()


class _Waiting:
    """Per-frame arrays (by name) waiting for their outputs, first in first out; ``put`` may run in
    another thread than ``take``."""

    def __init__(self):
        self._items: deque = deque()
        self._lock = threading.Lock()

    def put(self, **arrays) -> None:
        """Add the next frames: arrays of the same length, or dicts of such arrays (condition maps)."""
        with self._lock:
            self._items.append(arrays)

    def take(self, n: int) -> dict:
        """The next ``n`` frames of every array put, concatenated."""
        parts = []
        with self._lock:
            while n > 0:
                item = self._items[0]
                size = _length(item)
                if size > n:
                    parts.append(_cut(item, slice(0, n)))
                    self._items[0] = _cut(item, slice(n, None))
                    size = n
                else:
                    parts.append(self._items.popleft())
                n -= size
        return _join(parts)


def _length(value) -> int:
    return _length(next(iter(value.values()))) if isinstance(value, dict) else len(value)


def _cut(value, part: slice):
    return {k: _cut(v, part) for k, v in value.items()} if isinstance(value, dict) else value[part]


def _join(values: list):
    if isinstance(values[0], dict):
        return {k: _join([v[k] for v in values]) for k in values[0]}
    return np.concatenate(values)


def _keypoints_log(keypoints, kinds, info, work):
    """The KeypointsLog of ``translate_file(keypoints=...)``, or None."""
    if keypoints is None:
        return None
    from vidreal.conditions.keypoints import KeypointsLog, check_keypoints_path
    from vidreal.errors import ConfigError

    check_keypoints_path(keypoints)
    if "pose" not in kinds:
        raise ConfigError(f"keypoints come from the pose condition: the ControlNets read {', '.join(kinds)}")
    return KeypointsLog(info.width, info.height, scale=(info.width / work[1], info.height / work[0]))


def _summary(stats: dict, config: TranslateConfig) -> dict:
    """What the correspondence options did, for OUTPUT.vidreal.yaml."""
    keys = stats.get("keyframes", [])
    chosen = {"chosen": [int(i) for i in keys]} if stats.get("propagated") else {}  # which frames were denoised
    return {"keyframes": len(keys), **chosen, "propagated": stats.get("propagated", 0),
            "unseen_fraction": round(stats.get("unseen_fraction", 0.0), 4),
            "frame_memory_mb": round(stats.get("frame_memory_bytes", 0) / 2**20, 2)}


def _mark_keyframes(frames: np.ndarray, first: int, keyframes) -> np.ndarray:
    """Preview frames (indices first, first+1, ...) with a green top bar on the keyframes (indices;
    None: no frame is propagated, no marks)."""
    if keyframes is None:
        return frames
    keyframes, frames = set(keyframes), frames.copy()
    for i in range(len(frames)):
        if first + i in keyframes:
            frames[i, :max(2, frames.shape[1] // 32)] = (0, 255, 0)
    return frames


def _panel(frames: np.ndarray, label: str | None = None) -> np.ndarray:
    """Frames scaled to the preview panel height (even width), for side-by-side previews, with
    ``label`` (source, canny, pose, output) written small in the top-left corner."""
    h, w = frames.shape[1:3]
    width = max(2, round(w * PREVIEW_HEIGHT / h / 2) * 2)
    out = resize_frames(frames, PREVIEW_HEIGHT, width)
    if label:
        import cv2

        out = np.ascontiguousarray(out)
        for frame in out:  # a dark outline under white text: readable on any picture
            cv2.putText(frame, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(frame, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out

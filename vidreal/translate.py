"""File-level translation: read (streamed) -> conditions -> Translator -> write, keeping fps and audio.

    result = translate_file("clip.mp4", "out.mp4", load_config("configs/rocog.yaml"))

Images are one-frame clips through the same path (image in, image out).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from vidreal.config import TranslateConfig, write_config
from vidreal.errors import OutputError
from vidreal.io import IMAGE_EXTS, VIDEO_EXTS, is_image_path, iter_video, probe, resize_frames, write_video

log = logging.getLogger("vidreal")

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


def load_translator(config: TranslateConfig):
    """Load the model and ControlNets a config names (once per process or worker)."""
    from vidreal.pipeline import Translator

    translator = Translator.from_pretrained(
        config.model, config.controlnets, device=config.device, dtype=config.dtype, embeddings=config.embeddings,
        lora=config.lora, lora_scale=config.lora_scale, allow_pickle=config.allow_pickle,
        model_config=config.model_config,
    )
    if config.compile:
        translator.compile()
    return translator


def record_path(output: str | Path) -> Path:
    """Where the resolved config of ``output`` is written: ``OUTPUT.vidreal.yaml``."""
    output = Path(output)
    return output.with_name(output.name + ".vidreal.yaml")


def translate_file(input, output, config: TranslateConfig | None = None, translator=None, preview=None,
                   save_conditions=None, progress=True, prompt=None, metrics=False, record=True) -> TranslateResult:
    """Translate one video or image file.

    Args:
        input, output: paths; the output keeps the input's fps, frame count and audio stream.
            An image input with an image output path gives an image.
        config: a TranslateConfig (defaults when None).
        translator: a loaded ``Translator`` (loaded from ``config`` when None; pass one to reuse it).
        preview: optional path of a side-by-side video/image (source | conditions | output).
        save_conditions: optional folder for the condition maps (``<stem>.<kind>.<ext>``).
        prompt: overrides ``config.prompt_for(input)``.
        metrics: compute ``vidreal.metrics`` (source vs output) and record them.
        record: write the resolved config beside the output (``OUTPUT.vidreal.yaml``).
    """
    from vidreal.conditions import DetectorSet
    start = time.perf_counter()
    config = config or TranslateConfig()
    input, output = Path(input), Path(output)
    info = probe(input)
    _check_output(input, output, info.n_frames)
    translator = translator or load_translator(config)
    prompt = config.prompt_for(input) if prompt is None else prompt
    kinds = translator.controlnet_names
    work = translator.working_size(info.height, info.width, config.size)
    log.info("translating %s: %d frame(s) %dx%d%s at %dx%d, %s, prompt %r", input, info.n_frames, info.width,
             info.height, f" @ {float(info.fps):.3f} fps" if info.fps else "", work[1], work[0],
             config.consistency, prompt)

    keep = preview is not None or save_conditions is not None
    kept: dict[str, list[np.ndarray]] = {name: [] for name in ["source", *kinds, "output"]}
    options = {"canny": {"low_threshold": config.canny_low, "high_threshold": config.canny_high}}
    with DetectorSet(kinds, {k: v for k, v in options.items() if k in kinds}) as detectors:
        def pieces():
            for chunk in iter_video(input, chunk_size=config.chunk_size):
                small = resize_frames(chunk, *work)  # conditions are extracted at the working size
                maps = detectors(small)
                if keep:
                    kept["source"].append(_panel(small))
                    for kind in kinds:
                        kept[kind].append(_panel(maps[kind]))
                yield chunk, maps

        def outputs():
            for frames in translator.stream(
                pieces(), prompt, config.negative_prompt, config.steps, config.guidance, config.controlnet_scale or None,
                config.seed, config.chunk_size, config.consistency, config.size, progress, n_frames=info.n_frames,
                scheduler=config.scheduler, eta=config.eta,
            ):
                if keep:
                    kept["output"].append(_panel(frames))
                yield frames

        if info.is_image:
            write_video(output, np.concatenate(list(outputs())), codec=config.codec, crf=config.crf)
        else:
            write_video(output, outputs(), info.fps, audio_from=input if info.has_audio else None, codec=config.codec,
                        crf=config.crf)
        reports = detectors.reports()
    for note in reports.values():
        log.warning("%s: %s", input, note)

    result = TranslateResult(input, output, info.n_frames, info.fps, 0.0, prompt, config, reports)
    if keep:
        clips = {name: np.concatenate(chunks) for name, chunks in kept.items()}
        if preview is not None:
            result.preview = write_video(preview, np.concatenate(list(clips.values()), axis=2), info.fps,
                                         codec=config.codec, crf=config.crf)
        if save_conditions is not None:
            ext = output.suffix if info.is_image else ".mp4"
            for kind in kinds:
                path = Path(save_conditions) / f"{output.stem}.{kind}{ext}"
                result.conditions[kind] = write_video(path, clips[kind], info.fps, codec=config.codec, crf=config.crf)
    if metrics:
        from vidreal.metrics import SUMMARY_KEYS, compute_file_metrics

        values = compute_file_metrics(input, output, prompt=None)
        result.metrics = {**{key: values.get(key) for key in SUMMARY_KEYS}, "settings": values.get("settings", {})}
    result.seconds = time.perf_counter() - start
    if record:
        write_config(record_path(output), config, extra={
            "input": str(input), "prompt": prompt, "frames": info.n_frames,
            "fps": None if info.fps is None else str(info.fps), "seconds": round(result.seconds, 3),
            "device": str(translator.device), "dtype": str(translator.pipe.unet.dtype).replace("torch.", ""),
            "reports": reports, "metrics": result.metrics,
        })
    log.info("wrote %s (%d frame(s), %.1f s)", output, info.n_frames, result.seconds)
    return result


def _check_output(input: Path, output: Path, n_frames: int) -> None:
    ext = output.suffix.lower()
    if ext not in IMAGE_EXTS | VIDEO_EXTS:
        raise OutputError(f"unsupported output type {ext or '(none)'!r}; use a video ({', '.join(sorted(VIDEO_EXTS))}) "
                          f"or image ({', '.join(sorted(IMAGE_EXTS))}) extension", output)
    if is_image_path(output) and n_frames > 1:
        raise OutputError(f"the input has {n_frames} frames; an image output needs a one-frame input", output)
    if output.exists() and output.resolve() == input.resolve():
        raise OutputError("the output would overwrite the input", output)
    if output.is_dir():
        raise OutputError("the output path is a folder; give a file name", output)


def _panel(frames: np.ndarray) -> np.ndarray:
    """Frames scaled to the preview panel height (even width), for side-by-side previews."""
    h, w = frames.shape[1:3]
    width = max(2, round(w * PREVIEW_HEIGHT / h / 2) * 2)
    return resize_frames(frames, PREVIEW_HEIGHT, width)

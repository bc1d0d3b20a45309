"""Per-frame condition maps for the ControlNets: a registry of detectors by name.

Every detector takes uint8 ``(T, H, W, 3)`` RGB frames and returns uint8 ``(T, H, W, 3)`` maps
of the same size. Detectors are stateful (pose tracks the person), so a long clip is fed to one
detector chunk by chunk, in order.

    conds = extract_conditions(frames, kinds=("canny", "pose"))   # {"canny": ..., "pose": ...}
    with make_detector("pose", min_detection_confidence=0.6) as pose:
        for chunk in iter_video(path): maps = pose(chunk)
        print(pose.report())
    with DetectorSet(("canny", "pose")) as detectors:            # several kinds, overlapped
        for chunk in iter_video(path): maps = detectors(chunk)  # {"canny": ..., "pose": ...}
"""
from __future__ import annotations

import inspect
import logging
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from vidreal.progress import bar as tqdm  # tqdm on a terminal, plain lines in a log, off under -q

from vidreal.conditions.base import Detector, check_frames
from vidreal.conditions.canny import CannyDetector
from vidreal.conditions.openpose import OpenposeDetector
from vidreal.conditions.pose import PoseDetector, detect_keypoints
from vidreal.errors import ConfigError, OutputError

__all__ = [
    "DETECTORS", "Detector", "DetectorSet", "ConditionsResult", "available_kinds", "make_detector",
    "extract_conditions", "extract_file", "output_paths", "detect_keypoints",
]

logger = logging.getLogger(__name__)

# name -> detector class; the name is what users pass as a kind (--kind, config keys).
DETECTORS: dict[str, type[Detector]] = {
    "canny": CannyDetector,
    "pose": PoseDetector,
    "openpose": OpenposeDetector,
}


def available_kinds() -> list[str]:
    """Names of the registered condition kinds."""
    return list(DETECTORS)


def _check_kind(kind) -> type[Detector]:
    if kind not in DETECTORS:
        raise ConfigError(f"unknown condition kind {kind!r}; valid kinds: {', '.join(DETECTORS)}")
    return DETECTORS[kind]


def make_detector(kind: str, **options) -> Detector:
    """A new detector for ``kind``, configured by its keyword ``options``.

    Unknown kinds and unknown or invalid options raise ConfigError naming the valid ones.
    """
    cls = _check_kind(kind)
    valid = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for {kind!r}; valid options: {', '.join(valid) or 'none'}"
        )
    return cls(**options)


def _check_kinds(kinds, options) -> tuple[list[str], dict]:
    if isinstance(kinds, str):
        kinds = [kinds]
    kinds = list(dict.fromkeys(kinds))  # drop repeats, keep order
    if not kinds:
        raise ConfigError(f"no condition kinds given; valid kinds: {', '.join(DETECTORS)}")
    for kind in kinds:
        _check_kind(kind)
    options = dict(options or {})
    for kind, kind_options in options.items():
        _check_kind(kind)
        if not isinstance(kind_options, dict):
            raise ConfigError(f"options for {kind!r} must be a mapping of parameter -> value, got {kind_options!r}")
    return kinds, options


class DetectorSet:
    """One loaded detector per kind, fed the same chunks of one clip; closes them all on exit.

        with DetectorSet(("canny", "pose"), options) as detectors:
            for chunk in iter_video(path):
                maps = detectors(chunk)        # {"canny": uint8 (n,H,W,3), "pose": ...}
            notes = detectors.reports()        # {"pose": "pose: no person found in 3/48 frames"}

    With several kinds each detector runs in its own thread (always the same one), so the
    kinds overlap on a multi-core machine: mediapipe and OpenCV release the GIL.
    """

    def __init__(self, kinds=("canny", "pose"), options: dict | None = None):
        kinds, options = _check_kinds(kinds, options)
        self.detectors: dict[str, Detector] = {}
        self._threads: dict[str, ThreadPoolExecutor] = {}
        try:
            for kind in kinds:
                self.detectors[kind] = make_detector(kind, **options.get(kind, {}))
                self.detectors[kind].load()
        except BaseException:
            self.close()
            raise
        if len(kinds) > 1:
            self._threads = {kind: ThreadPoolExecutor(1, thread_name_prefix=f"vidreal-{kind}") for kind in kinds}

    def __call__(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        """Maps of one uint8 ``(n, H, W, 3)`` chunk: ``{kind: uint8 (n, H, W, 3)}``."""
        if not self._threads:
            return {kind: detector(chunk) for kind, detector in self.detectors.items()}
        futures = {kind: self._threads[kind].submit(d, chunk) for kind, d in self.detectors.items()}
        return {kind: future.result() for kind, future in futures.items()}

    def reports(self) -> dict[str, str]:
        """``{kind: one-line note}`` for detectors that had something to report."""
        return {kind: d.report() for kind, d in self.detectors.items() if d.report()}

    def close(self) -> None:
        for thread in self._threads.values():
            thread.shutdown(wait=True)
        for detector in self.detectors.values():
            detector.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False


def extract_conditions(frames: np.ndarray, kinds=("canny", "pose"), options: dict | None = None,
                       progress: bool = False, chunk_size: int = 16) -> dict[str, np.ndarray]:
    """Condition maps of one clip.

    frames: uint8 ``(T, H, W, 3)`` RGB, consecutive frames of one clip (pose tracks across them).
    kinds: registered names (see ``available_kinds()``). options: ``{kind: {param: value}}``.
    Returns ``{kind: uint8 (T, H, W, 3)}``. Detector reports (e.g. frames without a person)
    are logged as warnings.
    """
    frames = check_frames(frames)
    kinds, options = _check_kinds(kinds, options)
    chunk_size = _check_chunk_size(chunk_size)
    out = {kind: np.empty_like(frames) for kind in kinds}
    with DetectorSet(kinds, options) as detectors, \
            tqdm(total=len(frames), unit="frame", desc="conditions", disable=not progress) as bar:
        for start in range(0, len(frames), chunk_size):
            chunk = frames[start:start + chunk_size]
            for kind, maps in detectors(chunk).items():
                out[kind][start:start + len(chunk)] = maps
            bar.update(len(chunk))
        for report in detectors.reports().values():
            logger.warning(report)
    return out


def _check_chunk_size(chunk_size) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ConfigError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return int(chunk_size)


def output_paths(output, kinds) -> dict[str, Path]:
    """Where ``extract_file`` writes each kind: the exact path for one kind, else the kind
    inserted before the extension (``out.mp4`` -> ``out.canny.mp4``, ``out.pose.mp4``)."""
    output = Path(output)
    kinds = [kinds] if isinstance(kinds, str) else list(dict.fromkeys(kinds))
    if len(kinds) == 1:
        return {kinds[0]: output}
    return {kind: output.with_name(f"{output.stem}.{kind}{output.suffix}") for kind in kinds}


@dataclass
class ConditionsResult:
    """What ``extract_file`` wrote: ``paths`` {kind: file}, frame count, fps (None for an image),
    and ``reports`` {kind: one-line note} for detectors that had something to say."""

    paths: dict[str, Path]
    n_frames: int
    fps: Fraction | None
    reports: dict[str, str] = field(default_factory=dict)


def extract_file(input, output, kinds=("canny", "pose"), options: dict | None = None,
                 chunk_size: int = 16, progress: bool = True) -> ConditionsResult:
    """Extract condition maps from a video or image file and write them as files.

    The input is decoded in chunks of ``chunk_size`` frames and each kind's maps are streamed
    (one encoder thread per kind) to ``output_paths(output, kinds)``: a video with the input's
    fps and frame count, or an image for an image input. Memory depends on ``chunk_size``,
    not on the clip's length. Writes are atomic; if one output fails, the others are removed,
    so nothing partial is left.
    """
    from vidreal import io

    kinds, options = _check_kinds(kinds, options)
    chunk_size = _check_chunk_size(chunk_size)
    info = io.probe(input)
    paths = output_paths(output, kinds)
    for path in paths.values():
        _check_output(path, info)

    n_frames = 0
    with DetectorSet(kinds, options) as detectors, \
            tqdm(total=info.n_frames, unit="frame", desc="conditions", disable=not progress) as bar:
        writers = {kind: _StreamWriter(paths[kind], info.fps) for kind in kinds}
        try:
            for chunk in io.iter_video(input, chunk_size=chunk_size):
                for kind, maps in detectors(chunk).items():
                    writers[kind].put(maps)
                n_frames += len(chunk)
                bar.update(len(chunk))
            written = {kind: writer.finish() for kind, writer in writers.items()}
        except BaseException as exc:
            for writer in writers.values():
                writer.abort(exc)
            raise
        reports = detectors.reports()
    return ConditionsResult(paths=written, n_frames=n_frames, fps=info.fps, reports=reports)


class _StreamWriter:
    """Encodes the chunks given to ``put`` with ``io.write_video`` in a background thread."""

    _DONE = object()

    def __init__(self, path: Path, fps):
        from vidreal import io

        self.path = path
        self.error: BaseException | None = None
        self.queue: queue.Queue = queue.Queue(maxsize=2)  # bounded: memory stays a few chunks
        self.thread = threading.Thread(target=self._run, args=(io.write_video, fps), daemon=True)
        self.thread.start()

    def _chunks(self):
        while (item := self.queue.get()) is not self._DONE:
            if isinstance(item, BaseException):
                raise item  # aborts write_video, which then removes its temporary file
            yield item

    def _run(self, write_video, fps):
        try:
            write_video(self.path, self._chunks(), fps=fps)
        except BaseException as exc:
            self.error = exc

    def put(self, item) -> None:
        """Queue a uint8 ``(n, H, W, 3)`` chunk; raises the writer's error if it has stopped."""
        while self.thread.is_alive():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                pass
        raise self.error or RuntimeError(f"the writer of {self.path} stopped early")

    def finish(self) -> Path:
        """Wait until the file is complete and return its path; raises the writer's error."""
        self.put(self._DONE)
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.path

    def abort(self, reason: BaseException) -> None:
        """Make the writer fail with ``reason``; remove the output if it was already complete."""
        while self.thread.is_alive():
            try:
                self.queue.put(reason, timeout=0.1)
                break
            except queue.Full:
                pass
        self.thread.join()
        if self.error is None:  # it had finished: the file is ours and must not stay alone
            self.path.unlink(missing_ok=True)


def _check_output(path: Path, info) -> None:
    from vidreal import io

    suffix = path.suffix.lower()
    if suffix not in io.IMAGE_EXTS | io.VIDEO_EXTS:
        raise OutputError(
            f"unsupported output extension {path.suffix!r}; use one of "
            f"{', '.join(sorted(io.VIDEO_EXTS | io.IMAGE_EXTS))}", path=path)
    if suffix in io.IMAGE_EXTS and info.n_frames != 1:
        raise OutputError(f"an image output needs a one-frame input, the input has {info.n_frames} frames; "
                          "use a video extension such as .mp4", path=path)
    if suffix in io.VIDEO_EXTS and info.fps is None:
        raise OutputError("an image input gives an image output; use an image extension such as .png", path=path)
    if path.resolve() == Path(info.path).resolve():
        raise OutputError("output path is the input path", path=path)

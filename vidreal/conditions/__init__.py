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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from vidreal.checks import positive_int
from vidreal.progress import bar as tqdm  # tqdm on a terminal, plain lines in a log, off under -q

from vidreal.conditions.base import Detector
from vidreal.conditions.canny import CannyDetector
from vidreal.conditions.openpose import OpenposeDetector
from vidreal.conditions.pose import PoseDetector, detect_keypoints
from vidreal.runtime import check_keys
from vidreal.errors import ConfigError
from vidreal.runtime import check_frames

__all__ = [
    "DETECTORS", "Detector", "DetectorSet", "ConditionsResult", "available_kinds", "check_options",
    "detector_options", "make_detector",
    "extract_conditions", "extract_file", "output_paths", "detect_keypoints",
]

log = logging.getLogger(__name__)

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
    check_keys([kind], DETECTORS, what="condition kind")
    return DETECTORS[kind]


def detector_options(kind: str) -> list[str]:
    """The option names ``kind``'s detector takes (its constructor's keyword arguments)."""
    return [name for name in inspect.signature(_check_kind(kind).__init__).parameters if name != "self"]


def check_options(options: dict | None, kinds=()) -> dict[str, dict]:
    """Validate ``{kind: {option: value}}`` without loading anything: every kind registered
    (``kinds`` too), every option one its detector takes. ConfigError names the closest valid
    name; values are checked when the detector is made. Returns the options as plain dicts."""
    for kind in kinds:
        _check_kind(kind)
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ConfigError(f"condition options must be a mapping {{kind: {{option: value}}}}, got {options!r}")
    out = {}
    for kind, kind_options in options.items():
        valid = detector_options(kind)
        if kind_options is None:
            kind_options = {}
        if not isinstance(kind_options, dict):
            raise ConfigError(f"options for {kind!r} must be a mapping of option -> value, got {kind_options!r}")
        check_keys(kind_options, valid, what=f"{kind!r} option")
        out[kind] = dict(kind_options)
    return out


def make_detector(kind: str, **options) -> Detector:
    """A new detector for ``kind``, configured by its keyword ``options``.

    Unknown kinds and unknown or invalid options raise ConfigError naming the valid ones.
    """
    check_options({kind: options})
    return DETECTORS[kind](**options)


def _check_kinds(kinds, options) -> tuple[list[str], dict]:
    if isinstance(kinds, str):
        kinds = [kinds]
    kinds = list(dict.fromkeys(kinds))  # drop repeats, keep order
    if not kinds:
        raise ConfigError(f"no condition kinds given; valid kinds: {', '.join(DETECTORS)}")
    return kinds, check_options(options, kinds)


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

    def __call__(self, chunk: np.ndarray, only=None) -> dict[str, np.ndarray]:
        """Maps of one uint8 ``(n, H, W, 3)`` chunk: ``{kind: uint8 (n, H, W, 3)}``.

        ``only``: bool (n,), the frames that need maps (e.g. keyframes); the others get black maps
        and are not detected: the detectors are told of each gap (``Detector.skip``)."""
        if only is not None and not np.all(only):
            return self._some(chunk, np.asarray(only, dtype=bool))
        if not self._threads:
            return {kind: detector(chunk) for kind, detector in self.detectors.items()}
        futures = {kind: self._threads[kind].submit(d, chunk) for kind, d in self.detectors.items()}
        return {kind: future.result() for kind, future in futures.items()}

    def _some(self, chunk: np.ndarray, only: np.ndarray) -> dict[str, np.ndarray]:
        edges = np.flatnonzero(np.diff(np.concatenate([[0], only.astype(np.int8), [0]])))
        runs = list(zip(edges[::2], edges[1::2]))  # [start, end) of each run of frames to detect

        def detect(detector):
            maps, done = np.zeros_like(chunk), 0
            for start, end in runs:
                detector.skip(start - done)
                maps[start:end] = detector(chunk[start:end])
                done = end
            detector.skip(len(chunk) - done)
            return maps
        if not self._threads:
            return {kind: detect(detector) for kind, detector in self.detectors.items()}
        futures = {kind: self._threads[kind].submit(detect, d) for kind, d in self.detectors.items()}
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
            log.warning(report)
    return out


def _check_chunk_size(chunk_size) -> int:
    return positive_int("chunk_size", chunk_size)


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
                 chunk_size: int = 16, progress: bool = True, keypoints=None, selection=None) -> ConditionsResult:
    """Extract condition maps from a video or image file and write them as files.

    The input is opened once and decoded in chunks of ``chunk_size`` frames; each kind's maps
    are streamed to ``output_paths(output, kinds)``: a video with the input's fps, frame count,
    size (and frame times, for a variable frame rate), or an image for an image input. Memory
    depends on ``chunk_size``, not on the clip's length. The output checks and the writing are
    ``translate_file``'s (``vidreal.io.check_output``, ``vidreal.io.OutputFiles``): the files
    are moved into place together when all are complete; on any failure none is.
    ``keypoints``: a ``.json`` path for the pose keypoints of every person in every frame
    (``vidreal.conditions.keypoints``; needs the ``pose`` kind), written once the maps are.
    ``selection``: ``{start, end, every, max_frames}`` (``vidreal.selection``): only those frames
    are decoded and written, at fps / every.
    """
    from vidreal import io
    from vidreal import selection as frame_selection
    from vidreal.conditions.keypoints import KeypointsLog, check_keypoints_path

    kinds, options = _check_kinds(kinds, options)
    chunk_size = _check_chunk_size(chunk_size)
    if keypoints is not None:
        keypoints = check_keypoints_path(keypoints)
        if "pose" not in kinds:
            raise ConfigError(f"keypoints come from the pose condition: add the pose kind (kinds are {', '.join(kinds)})")
    selection = frame_selection.normalize(**(selection or {}))
    media = io.open_media(input)
    plan = frame_selection.select(media.info, **selection)
    info = plan.info
    paths = output_paths(output, kinds)
    for path in paths.values():
        io.check_output(path, info)
    people = KeypointsLog(info.width, info.height) if keypoints is not None else None

    n_frames = 0
    with DetectorSet(kinds, options) as detectors, io.OutputFiles() as files, \
            tqdm(total=info.n_frames, unit="frame", desc="conditions", disable=not progress) as bar:
        writers = {kind: files.video(paths[kind], info.fps, timestamps=info.timestamps) for kind in kinds}
        for chunk in media.chunks(chunk_size, plan.indices if plan.active else None):
            for kind, maps in detectors(chunk).items():
                writers[kind].write(maps)
            if people is not None:
                people.add(detectors.detectors["pose"].last_people)
            n_frames += len(chunk)
            bar.update(len(chunk))
        reports = detectors.reports()
    if people is not None:
        paths = {**paths, "keypoints": people.write(keypoints)}
    return ConditionsResult(paths=paths, n_frames=n_frames, fps=info.fps, reports=reports)

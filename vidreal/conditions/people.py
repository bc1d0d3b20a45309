"""Finding people for top-down multi-person pose: person detectors, boxes, crops and tracks.

A person detector takes one uint8 ``(H, W, 3)`` RGB frame and returns people as float
``(x0, y0, x1, y1, score)`` boxes in the frame's pixels. Three kinds, chosen by name
(``make_person_detector``):

* ``"blazepose"`` (default): mediapipe's bundled BlazePose person detector
  (``pose_detection.tflite``, the one its pose solution runs before the landmarks), run as a
  graph of our own that keeps every person instead of the most prominent one. It sees the frame
  letterboxed to 224 px, so small people are found on ``tiles`` x ``tiles`` overlapping tiles
  as well as on the whole frame; the boxes are merged by non-maximum suppression. Its box for a
  person is the body square mediapipe derives from the hip centre and the size point.
* ``"hog"``: OpenCV's built-in HOG + linear SVM people detector (no weights; upright, whole
  people at least ~128 px tall: small frames are upscaled first).
* a model file: any SSD-style detector OpenCV's dnn module reads (``.onnx``, ``.pb`` with a
  ``.pbtxt``, ``.caffemodel`` with a ``.prototxt``, ...) whose output rows are
  ``[image, class, score, x0, y0, x1, y1]`` in frame fractions; rows of ``person_class`` count.

``Track`` holds one person across frames; ``match_boxes`` pairs boxes by IoU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import cv2
import numpy as np

from vidreal.errors import ConfigError, ModelError

BUILTIN_DETECTORS = ("blazepose", "hog")
ROI_SCALE = 1.25  # mediapipe's body box: the hip-centre circle through the size point, scaled by this

# Our BlazePose detection graph: mediapipe's own calculators and bundled model; every detection
# above the score threshold survives non-maximum suppression (mediapipe's pose keeps only one).
_BLAZEPOSE_GRAPH = """
input_stream: "image"
output_stream: "detections"
node {
  calculator: "ImageToTensorCalculator"
  input_stream: "IMAGE:image"
  output_stream: "TENSORS:input_tensors"
  output_stream: "LETTERBOX_PADDING:letterbox_padding"
  options { [mediapipe.ImageToTensorCalculatorOptions.ext] {
    output_tensor_width: 224 output_tensor_height: 224 keep_aspect_ratio: true
    output_tensor_float_range { min: -1.0 max: 1.0 } border_mode: BORDER_ZERO } }
}
node {
  calculator: "InferenceCalculator"
  input_stream: "TENSORS:input_tensors"
  output_stream: "TENSORS:detection_tensors"
  options { [mediapipe.InferenceCalculatorOptions.ext] {
    model_path: "mediapipe/modules/pose_detection/pose_detection.tflite" delegate { xnnpack {} } } }
}
node {
  calculator: "SsdAnchorsCalculator"
  output_side_packet: "anchors"
  options { [mediapipe.SsdAnchorsCalculatorOptions.ext] {
    num_layers: 5 min_scale: 0.1484375 max_scale: 0.75 input_size_height: 224 input_size_width: 224
    anchor_offset_x: 0.5 anchor_offset_y: 0.5 strides: 8 strides: 16 strides: 32 strides: 32 strides: 32
    aspect_ratios: 1.0 fixed_anchor_size: true } }
}
node {
  calculator: "TensorsToDetectionsCalculator"
  input_stream: "TENSORS:detection_tensors"
  input_side_packet: "ANCHORS:anchors"
  output_stream: "DETECTIONS:raw_detections"
  options { [mediapipe.TensorsToDetectionsCalculatorOptions.ext] {
    num_classes: 1 num_boxes: 2254 num_coords: 12 box_coord_offset: 0 keypoint_coord_offset: 4
    num_keypoints: 4 num_values_per_keypoint: 2 sigmoid_score: true score_clipping_thresh: 100.0
    reverse_output_order: true x_scale: 224.0 y_scale: 224.0 h_scale: 224.0 w_scale: 224.0
    min_score_thresh: %(threshold)f } }
}
node {
  calculator: "NonMaxSuppressionCalculator"
  input_stream: "raw_detections"
  output_stream: "kept_detections"
  options { [mediapipe.NonMaxSuppressionCalculatorOptions.ext] {
    min_suppression_threshold: 0.3 overlap_type: INTERSECTION_OVER_UNION algorithm: WEIGHTED } }
}
node {
  calculator: "DetectionLetterboxRemovalCalculator"
  input_stream: "DETECTIONS:kept_detections"
  input_stream: "LETTERBOX_PADDING:letterbox_padding"
  output_stream: "DETECTIONS:detections"
}
"""


# ------------------------------------------------------------------------------------------ boxes

def iou(a, b) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1, ...)`` boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def cover(a, b) -> float:
    """Intersection over the smaller box's area: 1 when one box lies inside the other (a person
    cut by a tile edge, or found twice)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(w * h / smaller) if w > 0 and h > 0 and smaller > 0 else 0.0


def nms(boxes: list, threshold: float = 0.4, covered: float = 0.6) -> list:
    """Boxes ``(x0, y0, x1, y1, score)`` kept by greedy non-maximum suppression, best first: a box
    goes when its IoU with a kept one exceeds ``threshold`` or it lies mostly (``covered``) in it."""
    kept = []
    for box in sorted(boxes, key=lambda b: -b[4]):
        if all(iou(box, other) <= threshold and cover(box, other) <= covered for other in kept):
            kept.append(box)
    return kept


def match_boxes(tracks: list, boxes: list, threshold: float = 0.3) -> dict[int, int]:
    """Greedy IoU matching: ``{track index: box index}`` for pairs with IoU > ``threshold``,
    best pairs first; each track and each box is used at most once."""
    pairs = sorted(((iou(t, b), i, j) for i, t in enumerate(tracks) for j, b in enumerate(boxes)), reverse=True)
    matched, used = {}, set()
    for overlap, i, j in pairs:
        if overlap <= threshold:
            break
        if i not in matched and j not in used:
            matched[i] = j
            used.add(j)
    return matched


def square_box(cx: float, cy: float, side: float, height: int, width: int) -> tuple[int, int, int, int]:
    """The square of ``side`` centred on (cx, cy), clipped to the frame: integer (x0, y0, x1, y1).

    A person larger than the frame gets the whole frame, so that crop is the frame itself."""
    half = side / 2
    x0, y0 = max(0, int(np.floor(cx - half))), max(0, int(np.floor(cy - half)))
    x1, y1 = min(width, int(np.ceil(cx + half))), min(height, int(np.ceil(cy + half)))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def crop(frame: np.ndarray, box, min_side: int) -> tuple[np.ndarray, float]:
    """The pixels of integer ``box`` (x0, y0, x1, y1) of a uint8 ``(H, W, 3)`` frame, upscaled so
    that its longer side is at least ``min_side``: (uint8 (h, w, 3) contiguous, scale).
    A box that is the whole frame at scale 1 returns the frame's own pixels."""
    x0, y0, x1, y1 = box
    piece = frame[y0:y1, x0:x1]
    scale = max(1.0, min_side / max(x1 - x0, y1 - y0))
    if scale > 1.0:
        size = (round((x1 - x0) * scale), round((y1 - y0) * scale))
        piece = cv2.resize(piece, size, interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(piece), scale


# -------------------------------------------------------------------------------------- detectors

class BlazePoseDetector:
    """mediapipe's BlazePose person detector on the frame and on ``tiles`` x ``tiles`` tiles.

    The images of a pass (the frame, then the tiles) are shared between ``workers`` graphs, each
    in a thread of its own (mediapipe runs without the GIL): a pass is ten model runs, and it lies on
    the path that feeds the denoiser. Every image is seen alone, so the boxes are those of one graph.
    ``workers`` None: two where there are four cores or more (a pass in half the time, for the same CPU);
    one on fewer, where the other stages need the second core as much."""

    def __init__(self, threshold: float = 0.5, tiles: int = 3, workers: int | None = None):
        from google.protobuf import text_format
        from mediapipe.framework import calculator_pb2
        from mediapipe.python.solution_base import SolutionBase

        from vidreal.logs import native_stderr_silenced

        self.tiles = tiles
        config = text_format.Parse(_BLAZEPOSE_GRAPH % {"threshold": threshold}, calculator_pb2.CalculatorGraphConfig())
        self._graphs, self._pool = [], None
        if workers is None:
            workers = 2 if (os.cpu_count() or 1) >= 4 else 1
        # TFLite and absl log start-up lines to fd 2 at the first image: run one now, kept off stderr
        with native_stderr_silenced():
            for _ in range(max(1, workers) if tiles > 1 else 1):
                self._graphs.append(SolutionBase(graph_config=config, outputs=["detections"]))
                self._graphs[-1].process(np.zeros((64, 64, 3), np.uint8))
        if len(self._graphs) > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(len(self._graphs), thread_name_prefix="vidreal-people")

    @staticmethod
    def _detect(graph, image: np.ndarray, ox: int, oy: int) -> list:
        h, w = image.shape[:2]
        out = []
        for det in graph.process(np.ascontiguousarray(image)).detections or []:
            hip, size = det.location_data.relative_keypoints[0], det.location_data.relative_keypoints[1]
            cx, cy = hip.x * w, hip.y * h
            half = ROI_SCALE * float(np.hypot(size.x * w - cx, size.y * h - cy))
            out.append((ox + cx - half, oy + cy - half, ox + cx + half, oy + cy + half, float(det.score[0])))
        return out

    def __call__(self, frame: np.ndarray) -> list:
        h, w = frame.shape[:2]
        jobs = [(frame, 0, 0)]
        if self.tiles > 1:
            th, tw = min(h, round(h * 1.5 / self.tiles)), min(w, round(w * 1.5 / self.tiles))
            jobs += [(frame[y:y + th, x:x + tw], x, y)
                     for y in np.linspace(0, h - th, self.tiles).round().astype(int)
                     for x in np.linspace(0, w - tw, self.tiles).round().astype(int)]
        n = len(self._graphs)
        if n == 1:
            found = [self._detect(self._graphs[0], *job) for job in jobs]
        else:  # graph i takes jobs i, i + n, ...; the boxes are put back in the jobs' order
            parts = self._pool.map(lambda i: [self._detect(self._graphs[i], *job) for job in jobs[i::n]], range(n))
            found = [None] * len(jobs)
            for i, part in enumerate(parts):
                found[i::n] = part
        return nms([box for boxes in found for box in boxes])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        for graph in self._graphs:
            graph.close()
        self._graphs = []


class HogDetector:
    """OpenCV's built-in HOG people detector (``HOGDescriptor_getDefaultPeopleDetector``)."""

    MIN_HEIGHT = 400  # frames are upscaled to at least this height (the window is 64 x 128 px)

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def __call__(self, frame: np.ndarray) -> list:
        scale = max(1.0, self.MIN_HEIGHT / frame.shape[0])
        image = cv2.resize(frame, None, fx=scale, fy=scale) if scale > 1 else frame
        rects, weights = self._hog.detectMultiScale(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), winStride=(8, 8),
                                                    padding=(8, 8), scale=1.05)
        boxes = []
        for (x, y, w, h), weight in zip(rects, np.ravel(weights)):
            score = float(1 / (1 + np.exp(-weight)))  # SVM margin -> (0, 1)
            if score >= self.threshold:
                boxes.append((x / scale, y / scale, (x + w) / scale, (y + h) / scale, score))
        return nms(boxes)

    def close(self) -> None:
        pass


class DnnDetector:
    """A user's SSD-style detector file run by OpenCV's dnn module (see the module docstring)."""

    def __init__(self, model: str, config: str | None = None, person_class: int = 1, threshold: float = 0.5,
                 input_size: int = 300):
        for path in filter(None, (model, config)):
            if not os.path.isfile(path):
                raise ModelError("person detector model file not found", path=path)
        try:
            self._net = cv2.dnn.readNet(model, config or "")
        except cv2.error as exc:
            reason = next((line for line in str(exc).splitlines() if "error:" in line), str(exc)).strip()
            raise ModelError(f"OpenCV cannot read this person detector model ({reason[:160]})", path=model) from None
        self.model, self.person_class, self.threshold, self.input_size = model, person_class, threshold, input_size

    def __call__(self, frame: np.ndarray) -> list:
        h, w = frame.shape[:2]
        blob = cv2.dnn.blobFromImage(frame, 1.0, (self.input_size, self.input_size), swapRB=False)
        self._net.setInput(blob)
        try:
            rows = np.asarray(self._net.forward(), np.float32)
        except cv2.error as exc:
            raise ModelError(f"the person detector model failed to run: {str(exc).splitlines()[-1][:160]}",
                             path=self.model) from None
        if rows.size % 7:
            raise ModelError(f"the person detector model's output {rows.shape} is not SSD rows of 7 "
                             "[image, class, score, x0, y0, x1, y1]", path=self.model)
        boxes = [(r[3] * w, r[4] * h, r[5] * w, r[6] * h, float(r[2])) for r in rows.reshape(-1, 7)
                 if int(r[1]) == self.person_class and r[2] >= self.threshold]
        return nms(boxes)

    def close(self) -> None:
        self._net = None


def make_person_detector(detector: str = "blazepose", threshold: float = 0.5, tiles: int = 3,
                         detector_config: str | None = None, person_class: int = 1):
    """A person detector by name (``BUILTIN_DETECTORS``) or model file path (see the module docstring)."""
    name = str(detector)
    if name == "blazepose":
        return BlazePoseDetector(threshold, tiles)
    if name == "hog":
        return HogDetector(threshold)
    if os.path.splitext(name)[1] == "" and not os.path.exists(name):
        raise ConfigError(f"pose detector must be one of {', '.join(BUILTIN_DETECTORS)} or a model file, got {name!r}")
    return DnnDetector(name, detector_config, person_class, threshold)


# ------------------------------------------------------------------------------------------ tracks

@dataclass
class Track:
    """One person followed across frames: its id, the crop box it is looked for in (integer
    x0, y0, x1, y1 in frame pixels), its own mediapipe pose graph (video mode), the smallest
    crop side it may shrink to (foreshortened people seen from above would otherwise shrink
    their crop frame by frame), and how many frames in a row it was not found."""

    id: int
    box: tuple[int, int, int, int]
    pose: object
    min_side: float = 0.0  # the crop never shrinks below this (from the latest matching detection)
    misses: int = 0
    keypoints: np.ndarray | None = field(default=None, repr=False)  # last found (18, 3), or None
    span: tuple | None = None  # bounding box of its last landmarks (frame pixels), or None

"""Body pose maps from mediapipe's bundled pose model, drawn as an OpenPose COCO-18 skeleton.

mediapipe finds 33 landmarks on one person (the most prominent one of the frame, or of a
person's crop in multi-person mode: see ``PoseDetector``); 17 of them map onto OpenPose's
COCO-18 body points and the neck is the shoulders' midpoint. The skeleton is drawn with
controlnet-aux's own OpenPose drawing (its limb list and colours), so
``control_v11p_sd15_openpose`` reads it as it reads the OpenPose annotator's output.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

from vidreal.checks import positive_int
from vidreal.conditions.base import Detector, check_range, import_controlnet_aux
from vidreal.errors import ConfigError
from vidreal.logs import native_stderr_silenced
from vidreal.runtime import check_frames

# OpenPose COCO-18 order; "left"/"right" are the person's own, as in mediapipe.
COCO18_NAMES = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)
# mediapipe landmark index for each COCO-18 point; the neck (None) is computed from the shoulders.
MEDIAPIPE_INDEX = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
NECK = 1
_FROM = np.array([-1 if i is None else i for i in MEDIAPIPE_INDEX])
_DIRECT = _FROM >= 0
_R_SHOULDER, _L_SHOULDER = 2, 5

# controlnet-aux's draw_bodypose uses a fixed 4 px stick width, right for the 512 px maps the
# OpenPose annotator makes; we draw at that scale (shorter side 512) and resize to the frame.
DRAW_SIZE = 512


MODES = ("auto", "single", "multi")
CROP_MIN_SIDE = 256  # person crops are upscaled to at least this (the landmark model's input size)
CROP_CONTEXT = 1.2  # a detector's body box is widened by this for the crop (context for mediapipe)
TRACK_PAD = 1.5  # a tracked person's next crop: this times the side of its landmarks' bounding box


class PoseDetector(Detector):
    """OpenPose-style skeletons of everyone found, on black, per frame: uint8 ``(T, H, W, 3)``.

    Two paths (``mode``):

    * ``single``: mediapipe's full-frame pose (video mode, landmark smoothing) on the whole frame:
      the most prominent person, best when one person fills much of the frame.
    * ``multi``: top-down. A person detector (``detector``, see ``vidreal.conditions.people``;
      every ``detect_every`` frames) finds people; each becomes a track with its own mediapipe
      pose graph in video mode, run on the track's crop (square, clipped to the frame, upscaled
      to at least 256 px), its keypoints mapped back to the frame. A track's next crop follows its
      landmarks; new detections are matched to tracks by box IoU, so ids stay with people and
      skeletons do not swap; unmatched detections start tracks, at most ``max_people`` in all; a
      track not found for ``detect_every`` frames in a row ends. A crop that is the whole frame
      gives exactly the single path's keypoints.
    * ``auto`` (default): starts on the single path and switches to multi for the rest of the
      clip at the first detection pass that sees two or more people, or one person whose body
      box is shorter than ``single_fraction`` of the frame height. A clip with one large person
      (or where the detector sees nobody) keeps the single path's output exactly.

    Feed one clip's chunks in order to one detector. Keypoints whose visibility is below
    ``visibility_threshold`` or that fall outside the frame are missing (not drawn). A frame
    with nobody gets a black map and is counted for ``report()``. ``last_people`` holds the
    people of the frames of the latest call (see ``detect_people``).
    """

    name = "pose"

    def __init__(
        self,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        visibility_threshold: float = 0.3,
        mode: str = "auto",
        max_people: int = 4,
        detector: str = "blazepose",
        detector_config: str | None = None,
        person_class: int = 1,
        person_threshold: float = 0.5,
        tiles: int = 3,
        detect_every: int = 8,
        single_fraction: float = 0.5,
    ):
        from vidreal.conditions.people import make_person_detector

        self.min_detection_confidence = check_range(
            "pose min_detection_confidence", min_detection_confidence, 0, 1)
        self.min_tracking_confidence = check_range(
            "pose min_tracking_confidence", min_tracking_confidence, 0, 1)
        self.visibility_threshold = check_range("pose visibility_threshold", visibility_threshold, 0, 1)
        if mode not in MODES:
            raise ConfigError(f"pose mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.max_people = positive_int("pose max_people", max_people)
        self.detect_every = positive_int("pose detect_every", detect_every)
        tiles = positive_int("pose tiles", tiles)
        person_class = positive_int("pose person_class", person_class, minimum=0)
        person_threshold = check_range("pose person_threshold", person_threshold, 0, 1)
        self.single_fraction = check_range("pose single_fraction", single_fraction, 0, 1)
        self._people = None if mode == "single" else make_person_detector(
            detector, person_threshold, tiles, detector_config, person_class)
        self._pose = None
        self._pool = None  # threads for the tracks' pose graphs (several people)
        self.tracks: list = []
        # Pose graphs not in use (an ended track's, the single path's once multi took over), reset
        # and handed to the next new track: a graph holds ~100 MB, so a long clip whose tracks end and
        # start again keeps as many graphs as it ever had people at once, not one per track it made.
        self._spare: list[_PoseGraph] = []
        try:
            self._pose = self._new_graph()
            _drawing()  # import controlnet-aux now rather than on the first frame
        except BaseException:
            self.close()
            raise
        self.multi = mode == "multi"
        self._next_id = 0
        self._index = 0  # frames seen: the next frame's index in the clip
        self._detect_now = False  # frames were skipped: a detection pass on the next frame
        self.n_frames = 0
        self.n_missing = 0
        self.last_people: list[list[tuple[int, np.ndarray]]] = []

    # ------------------------------------------------------------------ keypoints
    def detect_people(self, frames: np.ndarray) -> list[list[tuple[int, np.ndarray]]]:
        """Everyone in uint8 ``(T, H, W, 3)`` RGB frames: per frame a list of (track id,
        float32 ``(18, 3)`` COCO-18 keypoints), ordered by track id.

        Keypoint columns: x, y in pixels and the confidence (mediapipe's visibility); x and y are
        NaN where the keypoint is missing. The single path's person is track 0.
        """
        frames = check_frames(frames)
        if self._pose is None:
            raise RuntimeError("PoseDetector is closed")
        out, t = [], 0
        while t < len(frames):
            run = self._parallel_run(len(frames) - t)
            if run > 1:
                found = self._track_run(frames[t:t + run])
                self._index += run
            else:
                found = [self._frame_people(frames[t])]
            t += run
            out += found
        self.n_frames += len(out)
        self.n_missing += sum(not people for people in out)
        self.last_people = out
        return out

    def detect(self, frames: np.ndarray) -> np.ndarray:
        """Keypoints of one person per frame: float32 ``(T, 18, 3)`` in COCO-18 order.

        The person is the one with the lowest track id (the single path's person). Columns as
        in ``detect_people``; confidence 0 and NaN x, y in frames without anyone.
        """
        people = self.detect_people(frames)
        out = np.full((len(people), 18, 3), np.nan, dtype=np.float32)
        out[:, :, 2] = 0.0
        for t, found in enumerate(people):
            if found:
                out[t] = found[0][1]
        return out

    def _frame_people(self, frame: np.ndarray) -> list[tuple[int, np.ndarray]]:
        height, width = frame.shape[:2]
        if self._people is not None and (self._detect_now or self._index % self.detect_every == 0):
            self._detect_now = False
            boxes = self._people(frame)
            if not self.multi and (len(boxes) >= 2 or (
                    len(boxes) == 1 and boxes[0][3] - boxes[0][1] < self.single_fraction * height)):
                self.multi = True  # auto: many or small people from here on
                self._spare.append(self._pose)  # the single path is done: its graph serves a track
            if self.multi:
                self._update_tracks(boxes, height, width)
        self._index += 1
        if not self.multi:
            landmarks = self._pose.process(frame)
            return [] if landmarks is None else [(0, self._coco(landmarks, (0, 0, width, height), height, width))]
        return self._track_run(frame[None])[0]

    def _coco(self, landmarks, box, height: int, width: int) -> np.ndarray:
        """mediapipe landmarks (fractions of the crop ``box`` = x0, y0, x1, y1) -> float32
        ``(18, 3)`` COCO-18 keypoints in frame pixels, missing ones NaN."""
        x0, y0, x1, y1 = box
        points = np.array([(p.x, p.y, p.visibility) for p in landmarks.landmark], dtype=np.float32)
        kp = np.full((18, 3), np.nan, dtype=np.float32)
        kp[_DIRECT] = points[_FROM[_DIRECT]]
        kp[:, 0] = kp[:, 0] * (x1 - x0) + x0
        kp[:, 1] = kp[:, 1] * (y1 - y0) + y0
        visible = (
            (kp[:, 2] >= self.visibility_threshold)
            & (kp[:, 0] >= 0) & (kp[:, 0] < width)
            & (kp[:, 1] >= 0) & (kp[:, 1] < height)
        )
        visible[NECK] = visible[_R_SHOULDER] and visible[_L_SHOULDER]
        kp[NECK, :2] = (kp[_R_SHOULDER, :2] + kp[_L_SHOULDER, :2]) / 2
        kp[NECK, 2] = min(kp[_R_SHOULDER, 2], kp[_L_SHOULDER, 2])
        kp[~visible, :2] = np.nan
        return kp

    # ------------------------------------------------------------------ tracks
    def _update_tracks(self, boxes: list, height: int, width: int) -> None:
        """Match a detection pass to the tracks; lost tracks take their detection's box, and
        unmatched detections (best first) start tracks up to ``max_people``."""
        from vidreal.conditions.people import Track, cover, match_boxes, square_box

        def crop_box(b):
            side = max(b[2] - b[0], b[3] - b[1]) * CROP_CONTEXT
            return square_box((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, side, height, width)

        matched = match_boxes([t.box for t in self.tracks], boxes)
        for i, track in enumerate(self.tracks):
            if i in matched:
                box = crop_box(boxes[matched[i]])
                track.min_side = 0.9 * max(box[2] - box[0], box[3] - box[1])
                if track.misses:
                    track.box = box
        used = set(matched.values())
        for j, box in enumerate(boxes):  # boxes come best first
            if j in used or len(self.tracks) >= self.max_people:
                continue
            if any(cover(box, t.span or t.box) > 0.6 for t in self.tracks):
                continue  # a tracked person seen again (e.g. in part, on a tile)
            box = crop_box(box)
            self.tracks.append(Track(self._next_id, box, self._new_graph(),
                                     min_side=0.9 * max(box[2] - box[0], box[3] - box[1])))
            self._next_id += 1

    def _new_graph(self) -> _PoseGraph:
        """A pose graph for a new track: a spare one, reset (exactly a fresh graph's results), or a new one."""
        if self._spare:
            graph = self._spare.pop()
            graph.reset()
            return graph
        return _PoseGraph(self.min_detection_confidence, self.min_tracking_confidence)

    def _parallel_run(self, n: int) -> int:
        """How many of the next ``n`` frames the tracks can follow each on its own (several tracks in
        multi mode, up to the next detection pass): 1 means frame by frame."""
        if not self.multi or len(self.tracks) < 2 or self._detect_now:
            return 1
        return max(1, min(n, -self._index % self.detect_every))

    def _track_run(self, frames: np.ndarray) -> list[list[tuple[int, np.ndarray]]]:
        """Follow every track through ``frames`` (no detection pass among them), moving its crop
        along; per frame, the people found. Each track takes its frames in order on its own thread
        (its own graph; mediapipe runs without the GIL). Between detection passes a track depends
        only on its own previous frame, so this gives exactly what frame by frame does; only ending
        a duplicate track looks across tracks, and it is applied per frame afterwards (an ended
        track's later frames are dropped)."""
        from vidreal.conditions.people import crop

        height, width = frames.shape[1:3]
        tracks = list(self.tracks)

        def follow(track):
            results = []
            for frame in frames:
                landmarks = track.pose.process(crop(frame, track.box, CROP_MIN_SIDE)[0])
                results.append(self._follow(track, landmarks, height, width))
                if track.misses > self.detect_every:
                    break  # lost: it ends here
            return results

        chains = list(self._workers().map(follow, tracks)) if len(tracks) > 1 else [follow(t) for t in tracks]
        out = []
        for t in range(len(frames)):
            ids = {track.id for track in self.tracks}  # the tracks not ended by an earlier frame
            alive = [i for i, track in enumerate(tracks) if track.id in ids]
            out.append(self._end_tracks([chains[i][t] for i in alive], [tracks[i] for i in alive]))
        return out

    def _follow(self, track, landmarks, height: int, width: int):
        """One frame of ``track`` with mediapipe's ``landmarks`` (None: not found): update its state
        and crop box; (track id, keypoints or None, landmark span or None, frames missed in a row)."""
        from vidreal.conditions.people import square_box

        if landmarks is None:
            track.misses += 1
            track.keypoints = track.span = None
            return track.id, None, None, track.misses
        track.misses = 0
        track.keypoints = self._coco(landmarks, track.box, height, width)
        x0, y0, x1, y1 = track.box
        xs = np.array([p.x for p in landmarks.landmark]) * (x1 - x0) + x0
        ys = np.array([p.y for p in landmarks.landmark]) * (y1 - y0) + y0
        track.span = (xs.min(), ys.min(), xs.max(), ys.max())
        side = max(max(xs.max() - xs.min(), ys.max() - ys.min()) * TRACK_PAD, track.min_side)
        cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
        old_side = max(x1 - x0, y1 - y0)
        moved = max(abs(cx - (x0 + x1) / 2), abs(cy - (y0 + y1) / 2)) > 0.1 * old_side
        if moved or not 0.85 <= side / old_side <= 1.15:  # keep the crop still while the person is
            track.box = square_box(cx, cy, side, height, width)
        return track.id, track.keypoints, track.span, 0

    def _end_tracks(self, results: list, tracks: list) -> list[tuple[int, np.ndarray]]:
        """One frame's people from the tracks' ``_follow`` results; the younger of two tracks on one
        person ends, and so does a track not found for more than ``detect_every`` frames."""
        from vidreal.conditions.people import cover

        spans = {tid: span for tid, _, span, _ in results if span is not None}
        ended = {b for a in spans for b in spans if a < b and cover(spans[a], spans[b]) > 0.6}
        ended |= {tid for tid, _, _, misses in results if misses > self.detect_every}
        for track in [t for t in tracks if t.id in ended]:
            self._spare.append(track.pose)
            self.tracks.remove(track)
        return [(tid, kp) for tid, kp, _, _ in results if kp is not None and tid not in ended]

    def _workers(self):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            # one thread per track, even beyond the cores: three tracks on two cores then finish together,
            # where two threads would leave one core idle while the third track runs
            self._pool = ThreadPoolExecutor(self.max_people, "vidreal-pose")
        return self._pool

    # ------------------------------------------------------------------ maps
    def draw(self, keypoints, height: int, width: int) -> np.ndarray:
        """Draw keypoints as uint8 ``(T, height, width, 3)`` maps: float32 ``(T, 18, 3)`` (one
        person per frame) or, per frame, a list of people as ``detect_people`` returns them."""
        out = np.zeros((len(keypoints), height, width, 3), dtype=np.uint8)
        for people, canvas in zip(keypoints, out):
            if isinstance(people, np.ndarray) and people.ndim == 2:
                people = [(0, people)]
            draw_people([kp for _, kp in people], height, width, out=canvas)
        return out

    def process(self, frames: np.ndarray) -> np.ndarray:
        _, height, width, _ = frames.shape
        return self.draw(self.detect_people(frames), height, width)

    def skip(self, n: int) -> None:
        """``n`` frames of the clip pass unseen (conditions on keyframes only): the detection passes
        keep their frame cadence (a pass due in the gap is made on the next frame), and in multi
        mode the next frame gets one, so tracks that lost their person over the gap find it again;
        on the single path mediapipe's own tracking re-detects a person it lost."""
        if n > 0:
            due = (self._index + n - 1) // self.detect_every > (self._index - 1) // self.detect_every
            self._index += n
            self._detect_now = self._people is not None and (self.multi or due)

    def report(self) -> str | None:
        if self.n_missing == 0:
            return None
        return f"pose: no person found in {self.n_missing}/{self.n_frames} frames"

    def close(self) -> None:
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown()
            self._pool = None
        graphs = {id(g): g for g in [*self._spare, *(t.pose for t in self.tracks), self._pose] if g is not None}
        for graph in graphs.values():
            graph.close()
        self.tracks, self._spare = [], []
        self._pose = None
        if getattr(self, "_people", None) is not None:
            self._people.close()
            self._people = None


class _PoseGraph:
    """One mediapipe full-body pose graph in video mode (landmark smoothing on)."""

    def __init__(self, min_detection_confidence: float, min_tracking_confidence: float):
        from mediapipe.python.solutions import pose as mp_pose

        # model_complexity=1 is the only model mediapipe bundles (0 and 2 are downloaded).
        # TFLite and absl log start-up chatter to fd 2 when the graph starts and when the
        # landmark model first sees a person: keep it from users until then.
        self._quiet = True
        with native_stderr_silenced():
            self._pose = mp_pose.Pose(
                static_image_mode=False,
                model_complexity=1,
                smooth_landmarks=True,
                enable_segmentation=False,
                min_detection_confidence=min_detection_confidence,
                min_tracking_confidence=min_tracking_confidence,
            )
            self._pose.process(np.zeros((64, 64, 3), np.uint8))  # starts the inference engines

    def process(self, image: np.ndarray):
        """mediapipe's 33 landmarks for one RGB image (None when no person is found)."""
        image = np.ascontiguousarray(image)
        if not self._quiet:
            return self._pose.process(image).pose_landmarks
        with native_stderr_silenced():
            landmarks = self._pose.process(image).pose_landmarks
        self._quiet = landmarks is None
        return landmarks

    def reset(self) -> None:
        """Forget the person followed (landmark smoothing, tracking): the next image is seen afresh."""
        with native_stderr_silenced():  # the graph's engines start again, as at creation
            self._pose.reset()
        self._quiet = True

    def close(self) -> None:
        self._pose.close()


@functools.lru_cache(maxsize=None)
def _drawing():
    """controlnet-aux's ``draw_bodypose`` and the ``Keypoint`` tuple it takes."""
    open_pose = import_controlnet_aux().open_pose
    return open_pose.util.draw_bodypose, open_pose.body.Keypoint


def draw_pose(keypoints: np.ndarray, height: int, width: int, out: np.ndarray | None = None) -> np.ndarray:
    """Draw one person's float32 ``(18, 3)`` COCO-18 keypoints (x, y pixels; NaN = missing).

    Returns uint8 ``(height, width, 3)``: controlnet-aux's OpenPose skeleton on black, drawn on
    a canvas whose shorter side is 512 px (the annotator's own scale) and resized to the frame.
    ``out``: a black uint8 ``(height, width, 3)`` array to draw into (returned).
    """
    return draw_people([keypoints], height, width, out=out)


def draw_people(people: list, height: int, width: int, out: np.ndarray | None = None) -> np.ndarray:
    """Draw several people's ``(18, 3)`` keypoints on one uint8 ``(height, width, 3)`` map, as
    ``draw_pose`` draws one (same canvas, same scale)."""
    if out is None:
        out = np.zeros((height, width, 3), dtype=np.uint8)
    people = [kp for kp in people if (~np.isnan(kp[:, :2]).any(axis=1)).any()]
    if not people:
        return out
    draw_bodypose, keypoint = _drawing()
    scale = DRAW_SIZE / min(height, width)
    canvas_h, canvas_w = round(height * scale), round(width * scale)
    same_size = (canvas_h, canvas_w) == (height, width)
    canvas = out if same_size else np.zeros((canvas_h, canvas_w, 3), dtype=np.uint8)
    for keypoints in people:
        present = ~np.isnan(keypoints[:, :2]).any(axis=1)
        # draw_bodypose draws in place; it takes x, y normalised to [0, 1] and None for a missing point
        draw_bodypose(canvas, [
            keypoint(float(x) / width, float(y) / height) if ok else None
            for (x, y, _), ok in zip(keypoints, present)
        ])
    if not same_size:
        interpolation = cv2.INTER_AREA if scale > 1 else cv2.INTER_LINEAR
        cv2.resize(canvas, (width, height), dst=out, interpolation=interpolation)
    return out


def detect_keypoints(frames: np.ndarray, **options) -> np.ndarray:
    """COCO-18 keypoints of one clip, tracked across its frames.

    frames: uint8 ``(T, H, W, 3)`` RGB. options: PoseDetector's keyword arguments.
    Returns float32 ``(T, 18, 3)``: x, y in pixels and confidence; NaN x, y where missing.
    """
    with PoseDetector(**options) as detector:
        return detector.detect(frames)

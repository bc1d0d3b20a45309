"""Multi-person pose: every rendered person found and tracked, one-person maps unchanged, keypoints JSON."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from skimage import data

from vidreal.conditions import extract_conditions, extract_file, make_detector
from vidreal.conditions.keypoints import read_keypoints
from vidreal.conditions.people import cover, iou, match_boxes, nms, square_box
from vidreal.conditions.pose import COCO18_NAMES, PoseDetector
from vidreal.errors import ConfigError, ModelError
from vidreal.io import read_video

NECK = 1


@pytest.fixture(scope="module")
def pair(samples):
    """{"ground": frames, "air": frames}: two rendered humanoids, uint8 (48, 256, 384, 3) each."""
    return {view: read_video(samples / f"humanoid_pair_{view}.mp4").frames for view in ("ground", "air")}


@pytest.fixture(scope="module")
def people(pair):
    """{(view, mode): detect_people output} for single and multi mode on both pair clips."""
    out = {}
    for view, frames in pair.items():
        for mode in ("single", "multi"):
            with PoseDetector(mode=mode) as detector:
                out[view, mode] = detector.detect_people(frames)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("view", ["ground", "air"])
def test_multi_mode_finds_every_rendered_person(people, view):
    single, multi = people[view, "single"], people[view, "multi"]
    assert all(len(p) <= 1 for p in single)  # the full-frame model sees one person at most
    frames = [t for t, p in enumerate(single) if len(p) <= 1]
    found_both = sum(len(multi[t]) == 2 for t in frames)
    assert found_both >= 0.9 * len(frames)
    assert max(len(p) for p in multi) == 2  # never a third, phantom person


@pytest.mark.slow
@pytest.mark.parametrize("view", ["ground", "air"])
def test_track_ids_are_stable_for_people_who_never_cross(people, pair, view):
    multi = people[view, "multi"]
    width = pair[view].shape[2]
    assert {track for p in multi for track, _ in p} == {0, 1}
    sides = {}
    for found in multi:
        for track, kp in found:
            x = np.nanmean(kp[:, 0])
            sides.setdefault(track, set()).add(bool(x > width / 2))
    # each track stays on its own half of the frame: ids never swap between the two people
    assert all(len(s) == 1 for s in sides.values())
    assert sides[0] != sides[1]


def test_multi_map_draws_both_people_single_map_one(pair):
    frame = pair["ground"][:1]
    with PoseDetector(mode="multi") as multi, PoseDetector(mode="single") as single:
        m, s = multi(frame)[0], single(frame)[0]
    width = frame.shape[2]
    assert m[:, : width // 2].any() and m[:, width // 2:].any()
    assert s[:, : width // 2].any() != s[:, width // 2:].any()  # one person: one half only
    assert m.dtype == np.uint8 and m.shape == frame.shape[1:]


def test_a_crop_that_is_the_whole_frame_reproduces_the_full_frame_path():
    """One large person: multi mode's crop is clipped to the whole frame and its map equals
    today's full-frame drawing exactly (and auto mode keeps the full-frame path)."""
    small = cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    padded = np.pad(small, ((0, 0), (32, 32), (0, 0)), mode="edge")
    clip = np.stack([padded[:, 32 - 4 * t: 288 - 4 * t] for t in range(6)])
    with PoseDetector(mode="single") as single:
        expected = single(clip)
    with PoseDetector(mode="multi") as multi:
        maps = multi(clip)
        assert [t.box for t in multi.tracks] == [(0, 0, 256, 256)]
    with PoseDetector() as auto:
        auto_maps = auto(clip)
        assert not auto.multi
    assert expected.any()
    np.testing.assert_array_equal(maps, expected)
    np.testing.assert_array_equal(auto_maps, expected)


def test_auto_switches_to_multi_for_two_people(pair):
    with PoseDetector() as auto:
        found = auto.detect_people(pair["ground"][:4])
        assert auto.multi
    assert [len(p) for p in found] == [2, 2, 2, 2]


def test_tracks_followed_in_parallel_equal_frame_by_frame(pair):
    """A clip given at once lets each track follow its frames on its own thread between detection
    passes; given one frame per call, everything runs frame by frame. Same people, same keypoints."""
    frames = pair["ground"][:20]  # detection passes at 0, 8 and 16: runs of 7 and 3 frames between
    with PoseDetector(mode="multi") as detector:
        at_once = detector.detect_people(frames)
    with PoseDetector(mode="multi") as detector:
        one_by_one = [detector.detect_people(frame[None])[0] for frame in frames]
    assert [len(p) for p in at_once] == [2] * len(frames)
    for a, b in zip(at_once, one_by_one):
        assert [tid for tid, _ in a] == [tid for tid, _ in b]
        for (_, ka), (_, kb) in zip(a, b):
            np.testing.assert_array_equal(ka, kb)


def test_max_people_bounds_the_tracks(pair):
    with PoseDetector(mode="multi", max_people=1) as detector:
        found = detector.detect_people(pair["ground"][:6])
    assert [len(p) for p in found] == [1] * 6
    assert {track for p in found for track, _ in p} == {0}


def test_hog_detector_is_selectable(pair):
    big = np.stack([cv2.resize(f, (768, 512)) for f in pair["ground"][:1]])
    with make_detector("pose", mode="multi", detector="hog") as detector:
        boxes = detector._people(big[0])
    assert all(len(b) == 5 for b in boxes)  # (x0, y0, x1, y1, score); HOG may find few on renders


def test_box_helpers():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert cover((0, 0, 10, 10), (2, 2, 6, 6)) == 1.0
    assert nms([(0, 0, 10, 10, 0.9), (1, 1, 10, 10, 0.8), (50, 50, 60, 60, 0.7)]) == [
        (0, 0, 10, 10, 0.9), (50, 50, 60, 60, 0.7)]
    assert match_boxes([(0, 0, 10, 10), (50, 50, 60, 60)], [(51, 50, 61, 60), (1, 0, 11, 10)]) == {0: 1, 1: 0}
    assert square_box(50, 50, 400, 100, 120) == (0, 0, 120, 100)  # a big person: the whole frame


# ---------------------------------------------------------------- bad options

@pytest.mark.parametrize("options, message", [
    ({"max_people": 0}, r"pose max_people must be a positive integer, got 0"),
    ({"mode": "crowd"}, r"pose mode must be one of auto, single, multi, got 'crowd'"),
    ({"detect_every": 0}, r"pose detect_every must be a positive integer, got 0"),
    ({"detector": "yolo"}, r"pose detector must be one of blazepose, hog or a model file, got 'yolo'"),
])
def test_bad_pose_options_are_one_line_config_errors(options, message):
    with pytest.raises(ConfigError, match=message) as info:
        make_detector("pose", **options)
    assert "\n" not in str(info.value)


def test_unreadable_detector_model_is_one_line_model_error(tmp_path):
    bad = tmp_path / "people.onnx"
    bad.write_bytes(b"this is not a network")
    with pytest.raises(ModelError, match="OpenCV cannot read this person detector model") as info:
        make_detector("pose", detector=str(bad))
    assert "\n" not in str(info.value) and str(bad) in str(info.value)
    with pytest.raises(ModelError, match="person detector model file not found"):
        make_detector("pose", detector=str(tmp_path / "missing.onnx"))


def test_bad_detector_writes_nothing(samples, tmp_path):
    out = tmp_path / "out" / "pose.mp4"
    result = CliRunner().invoke(_cli(), ["conditions", str(samples / "humanoid_pair_ground.mp4"), "-o", str(out),
                                         "--kind", "pose", "--max-people", "0", "--no-progress"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["error: pose max_people must be a positive integer, got 0"]
    assert not out.parent.exists() or not any(out.parent.iterdir())



def test_cli_pose_detector_reaches_the_pose_detector(samples, tmp_path):
    """--pose-detector is the pose detector's `detector` option: an unreadable model file is its error."""
    bad = tmp_path / "people.onnx"
    bad.write_bytes(b"this is not a network")
    out = tmp_path / "out" / "pose.mp4"
    result = CliRunner().invoke(_cli(), ["conditions", str(samples / "humanoid_pair_ground.mp4"), "-o", str(out),
                                         "--kind", "pose", "--pose-mode", "multi", "--pose-detector", str(bad),
                                         "--no-progress"])
    assert result.exit_code == 1
    assert "OpenCV cannot read this person detector model" in result.output and str(bad) in result.output
    assert not out.parent.exists()

# ---------------------------------------------------------------- keypoints JSON

def _cli():
    from vidreal.cli import cli

    return cli


@pytest.mark.slow
def test_cli_keypoints_json_has_the_documented_shape(samples, tmp_path):
    clip = samples / "humanoid_pair_ground.mp4"
    out, kp_file = tmp_path / "pose.mp4", tmp_path / "pose.json"
    result = CliRunner().invoke(_cli(), ["conditions", str(clip), "-o", str(out), "--kind", "pose",
                                         "--pose-mode", "multi", "--keypoints", str(kp_file), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"keypoints: {kp_file}" in result.output.splitlines()
    doc = read_keypoints(kp_file)
    assert doc["names"] == list(COCO18_NAMES) and (doc["width"], doc["height"]) == (384, 256)
    assert [f["index"] for f in doc["frames"]] == list(range(48))
    assert len(read_video(out).frames) == 48
    for frame in doc["frames"]:
        assert set(frame) == {"index", "people"}
        for person in frame["people"]:
            assert set(person) == {"track", "keypoints"}
            assert len(person["keypoints"]) == 18 and all(len(row) == 3 for row in person["keypoints"])
            assert all(0 <= x < 384 and 0 <= y < 256 and 0 <= c <= 1 for x, y, c in person["keypoints"])
    counts = [len(f["people"]) for f in doc["frames"]]
    assert sum(c == 2 for c in counts) >= 0.9 * 48
    # the same tracks every frame, each on its own side
    assert {p["track"] for f in doc["frames"] for p in f["people"]} == {0, 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pose.json", "pose.mp4"]  # no temporary files


def test_keypoints_json_matches_detect_people_and_missing_points_are_zero(pair, tmp_path):
    from vidreal.io import write_video

    frames = pair["ground"][:5]
    clip = write_video(tmp_path / "clip.mp4", frames, fps=24, codec="libx264rgb", crf=0)
    extract_file(clip, tmp_path / "pose.mp4", kinds=("pose",), options={"pose": {"mode": "multi"}},
                 keypoints=tmp_path / "kp.json", progress=False)
    doc = json.loads((tmp_path / "kp.json").read_text())
    with PoseDetector(mode="multi") as detector:
        expected = detector.detect_people(read_video(clip).frames)
    for frame, people in zip(doc["frames"], expected):
        assert [p["track"] for p in frame["people"]] == [track for track, _ in people]
        for person, (_, kp) in zip(frame["people"], people):
            got = np.array(person["keypoints"], dtype=np.float64)
            missing = np.isnan(kp[:, 0])
            assert (got[missing] == 0).all()
            np.testing.assert_allclose(got[~missing, :2], kp[~missing, :2], atol=0.01)


def test_keypoints_need_the_pose_kind_and_a_json_path(samples, tmp_path):
    clip = samples / "humanoid_pair_ground.mp4"
    with pytest.raises(ConfigError, match="keypoints come from the pose condition"):
        extract_file(clip, tmp_path / "c.mp4", kinds=("canny",), keypoints=tmp_path / "k.json")
    with pytest.raises(ConfigError, match="must be a .json file"):
        extract_file(clip, tmp_path / "c.mp4", kinds=("pose",), keypoints=tmp_path / "k.txt")
    assert list(tmp_path.iterdir()) == []


def test_extract_conditions_accepts_pose_options(pair):
    maps = extract_conditions(pair["ground"][:2], kinds=("pose",), options={"pose": {"mode": "multi"}})
    assert maps["pose"].shape == pair["ground"][:2].shape and maps["pose"].any()


def _small_person(frames: np.ndarray, side: int = 80, height: int = 192, width: int = 256) -> np.ndarray:
    """``frames`` shrunk to ``side`` px and set in the middle of a larger frame of their background:
    one person shorter than half the frame (auto pose turns to tracks)."""
    out = np.empty((len(frames), height, width, 3), np.uint8)
    out[:] = frames[:, 2:3, 2:3]
    top, left = (height - side) // 2, (width - side) // 2
    out[:, top:top + side, left:left + side] = [cv2.resize(f, (side, side), interpolation=cv2.INTER_AREA)
                                               for f in frames]
    return out


def test_pose_graphs_are_reused_by_new_tracks_not_made_anew(samples, monkeypatch):
    """A mediapipe pose graph holds ~100 MB. Graphs made to be dropped (the single path's once auto
    turned to tracks; an ended track's) made a long clip's memory grow with each track it started
    (tools/check_memory.py: 1.14x for a clip 16x longer). Spare graphs serve the next track: one
    person, lost and found again, needs one graph in all."""
    import vidreal.conditions.pose as pose

    made = []
    real_init = pose._PoseGraph.__init__
    monkeypatch.setattr(pose._PoseGraph, "__init__", lambda self, *a: (made.append(1), real_init(self, *a))[1])
    person = _small_person(read_video(samples / "humanoid_walk_ground.mp4").frames[:16])
    empty = np.broadcast_to(person[:1, :1, :1], (12, *person.shape[1:])).copy()  # nobody: the track ends
    with PoseDetector(detect_every=4) as detector:
        found = detector.detect_people(np.concatenate([person[:8], empty, person[8:]]))
        assert detector.multi
        tracks_started = detector._next_id
    assert tracks_started == 2  # the person, lost over the empty frames, is a new track when seen again
    assert all(found[t] for t in range(8)) and not any(found[8:20]) and sum(map(bool, found[20:])) >= 6
    assert len(made) == 1


def test_a_reset_pose_graph_sees_as_a_new_one(samples):
    """What makes reuse exact: a graph reset after following one person gives a new graph's landmarks."""
    from vidreal.conditions.pose import _PoseGraph

    frames = read_video(samples / "humanoid_walk_ground.mp4").frames

    def landmarks(graph, clip):
        return [None if lm is None else [(p.x, p.y, p.visibility) for p in lm.landmark]
                for lm in map(graph.process, clip)]

    used, new = _PoseGraph(0.5, 0.5), _PoseGraph(0.5, 0.5)
    try:
        landmarks(used, frames[:10])
        used.reset()
        again, fresh = landmarks(used, frames[30:40]), landmarks(new, frames[30:40])
    finally:
        used.close()
        new.close()
    assert all(lm is not None for lm in fresh)
    assert again == fresh


def test_a_detection_pass_shared_between_two_graphs_finds_the_same_boxes(pair):
    """A pass's ten images (the frame and nine tiles) split over two graphs in two threads: same boxes."""
    from vidreal.conditions.people import BlazePoseDetector

    frames = pair["ground"][::12]
    found = {}
    for workers in (1, 2):
        detector = BlazePoseDetector(workers=workers)
        try:
            found[workers] = [detector(frame) for frame in frames]
        finally:
            detector.close()
    assert [len(boxes) for boxes in found[1]] == [2] * len(frames)
    assert found[2] == found[1]

"""Condition maps: canny equals OpenCV's, pose finds and draws the astronaut, the CLI writes videos."""
from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from skimage import data

from vidreal.conditions import (
    Detector,
    available_kinds,
    extract_conditions,
    make_detector,
    output_paths,
)
from vidreal.conditions.pose import COCO18_NAMES, detect_keypoints, draw_pose
from vidreal.errors import ConfigError, InputError, ModelError

# OpenPose colours (controlnet-aux's draw_bodypose) of the keypoint circles.
NOSE_COLOUR = (255, 0, 0)
NOSE, NECK, R_SHOULDER, L_SHOULDER = 0, 1, 2, 5


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()  # uint8 (512, 512, 3); the face is around x 170-280, y 60-185


@pytest.fixture(scope="module")
def moving_clip(astronaut) -> np.ndarray:
    """8 frames, 256 x 256: the astronaut sliding right by 4 px per frame (uint8 (8, 256, 256, 3))."""
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    padded = np.pad(small, ((0, 0), (32, 32), (0, 0)), mode="edge")
    return np.stack([padded[:, 32 - 4 * t: 288 - 4 * t] for t in range(8)])


def nan_equal(a, b):
    return np.array_equal(a, b, equal_nan=True)


# ---------------------------------------------------------------- registry and validation

def test_registry_lists_kinds_and_rejects_unknown_names():
    assert {"canny", "pose", "openpose"} <= set(available_kinds())
    with pytest.raises(ConfigError, match=r"unknown condition kind 'edges'; valid condition kinds: canny, pose"):
        make_detector("edges")
    with pytest.raises(ConfigError, match="unknown condition kind 'depth'"):
        extract_conditions(np.zeros((1, 8, 8, 3), np.uint8), kinds=("canny", "depth"))


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match=r"unknown 'canny' option 'low'; did you mean 'low_threshold'\?"):
        make_detector("canny", low=10)
    with pytest.raises(ConfigError, match="must not exceed"):
        make_detector("canny", low_threshold=200, high_threshold=100)
    with pytest.raises(ConfigError, match=r"visibility_threshold must be in \[0, 1\], got 1.5"):
        make_detector("pose", visibility_threshold=1.5)
    with pytest.raises(ConfigError, match="chunk_size"):
        extract_conditions(np.zeros((1, 8, 8, 3), np.uint8), kinds="canny", chunk_size=0)


@pytest.mark.parametrize("frames, quoted", [
    (np.zeros((2, 16, 16, 3), np.float32), r"float32 \(2, 16, 16, 3\)"),
    (np.zeros((16, 16, 3), np.uint8), r"uint8 \(16, 16, 3\)"),
    (np.zeros((2, 16, 16, 4), np.uint8), r"uint8 \(2, 16, 16, 4\)"),
    (np.zeros((0, 16, 16, 3), np.uint8), r"uint8 \(0, 16, 16, 3\)"),
])
def test_bad_frames_quote_shape_and_dtype(frames, quoted):
    with pytest.raises(InputError, match=quoted):
        extract_conditions(frames, kinds=("canny",))


# ---------------------------------------------------------------- canny

@pytest.mark.parametrize("size", [(512, 512), (120, 100)])  # multiple of 64 (controlnet-aux path) and not
def test_canny_equals_opencv_at_input_size(astronaut, size):
    h, w = size
    frames = np.stack([astronaut[:h, :w], astronaut[-h:, -w:]])
    maps = extract_conditions(frames, kinds=("canny",), options={"canny": {"low_threshold": 50, "high_threshold": 150}})
    assert set(maps) == {"canny"}
    out = maps["canny"]
    assert out.shape == frames.shape and out.dtype == np.uint8
    for frame, edge_map in zip(frames, out):
        reference = cv2.Canny(frame, 50, 150)
        assert reference.any()
        for c in range(3):
            np.testing.assert_array_equal(edge_map[..., c], reference)


def test_canny_flat_frame_is_black_and_thresholds_are_monotone(astronaut):
    flat = np.full((1, 64, 64, 3), 127, np.uint8)
    assert not make_detector("canny")(flat).any()
    frame = astronaut[None]
    counts = [np.count_nonzero(make_detector("canny", low_threshold=lo, high_threshold=hi)(frame))
              for lo, hi in [(30, 60), (100, 200), (200, 400)]]
    assert counts[0] > counts[1] > counts[2] > 0


# ---------------------------------------------------------------- pose

def test_pose_finds_the_astronaut_and_draws_openpose_colours(astronaut):
    with make_detector("pose") as detector:
        keypoints = detector.detect(astronaut[None])
        assert detector.report() is None
    assert keypoints.shape == (1, 18, 3) and keypoints.dtype == np.float32
    kp = keypoints[0]
    nose_x, nose_y = kp[NOSE, :2]
    assert 170 <= nose_x <= 280 and 80 <= nose_y <= 170
    # the neck is the shoulders' midpoint; the person's right shoulder is on the image's left
    np.testing.assert_allclose(kp[NECK, :2], (kp[R_SHOULDER, :2] + kp[L_SHOULDER, :2]) / 2, atol=1e-3)
    assert kp[R_SHOULDER, 0] < nose_x < kp[L_SHOULDER, 0]
    assert kp[NECK, 1] > nose_y
    present = ~np.isnan(kp[:, 0])
    assert present.sum() >= 10 and (kp[present, 2] >= 0.3).all()

    pose_map = draw_pose(kp, 512, 512)
    assert tuple(pose_map[int(nose_y), int(nose_x)]) == NOSE_COLOUR
    for x, y in kp[present, :2].astype(int):
        assert pose_map[y - 2:y + 3, x - 2:x + 3].any(axis=-1).all()  # a filled circle at each keypoint
    # limbs join keypoints and circles have radius 4: nothing is drawn outside their box + margin
    ys, xs = np.nonzero(pose_map.any(axis=-1))
    (x0, y0), (x1, y1) = np.nanmin(kp[:, :2], axis=0) - 8, np.nanmax(kp[:, :2], axis=0) + 8
    assert len(xs) > 0.01 * 512 * 512
    assert x0 <= xs.min() and xs.max() <= x1 and y0 <= ys.min() and ys.max() <= y1


def test_pose_map_scales_with_frame_size(astronaut):
    """A half-size frame gets the half-size map: the stick width follows the frame, not pixels."""
    kp = detect_keypoints(astronaut[None])[0]
    half = kp.copy()
    half[:, :2] /= 2
    np.testing.assert_array_equal(
        draw_pose(half, 256, 256),
        cv2.resize(draw_pose(kp, 512, 512), (256, 256), interpolation=cv2.INTER_AREA),
    )


def test_no_person_gives_black_map_and_is_reported(astronaut):
    frames = np.stack([astronaut, np.zeros_like(astronaut), np.zeros_like(astronaut)])
    with make_detector("pose") as detector:
        maps = detector(frames)
        assert detector.report() == "pose: no person found in 2/3 frames"
    assert maps.shape == frames.shape and maps.dtype == np.uint8
    assert maps[0].any() and not maps[1:].any()
    keypoints = detect_keypoints(frames)
    assert np.isnan(keypoints[1:, :, :2]).all() and (keypoints[1:, :, 2] == 0).all()


def test_chunked_pose_tracking_equals_one_call(moving_clip):
    whole = detect_keypoints(moving_clip)
    with make_detector("pose") as detector:
        chunked = np.concatenate([detector.detect(moving_clip[a:b]) for a, b in [(0, 3), (3, 4), (4, 8)]])
        maps = detector(moving_clip[:2])  # the detector keeps going after detect()
        assert detector.report() is None
    assert whole.shape == (8, 18, 3) and len(COCO18_NAMES) == 18
    assert not np.isnan(whole[:, NOSE, 0]).any()
    assert nan_equal(chunked, whole)
    assert maps.shape == (2, 256, 256, 3) and maps.any(axis=(1, 2, 3)).all()
    # the astronaut slides right by 4 px a frame: so does her nose
    assert np.all(np.diff(whole[:, NOSE, 0]) > 0)


def test_extract_conditions_returns_both_maps(moving_clip):
    maps = extract_conditions(moving_clip[:3], chunk_size=2)
    assert list(maps) == ["canny", "pose"]
    for out in maps.values():
        assert out.shape == (3, 256, 256, 3) and out.dtype == np.uint8 and out.any(axis=(1, 2, 3)).all()
    np.testing.assert_array_equal(maps["canny"][1, ..., 0], cv2.Canny(moving_clip[1], 100, 200))
    with make_detector("pose") as alone:  # kinds run in parallel threads: same maps as one by one
        np.testing.assert_array_equal(maps["pose"], alone(moving_clip[:3]))


def test_closed_pose_detector_refuses_frames(astronaut):
    detector = make_detector("pose")
    detector.close()
    detector.close()  # closing twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        detector(astronaut[None])


# ---------------------------------------------------------------- openpose

def test_openpose_without_weights_is_one_line_model_error(tmp_path):
    frames = np.zeros((1, 64, 64, 3), np.uint8)
    detector = make_detector("openpose", allow_pickle=True)  # loads lazily: construction needs no weights
    with pytest.raises(ModelError) as info:
        detector(frames)
    message = str(info.value)
    assert "\n" not in message and "lllyasviel/Annotators" in message and "hf download" in message
    with pytest.raises(ModelError, match="body_pose_model.pth, hand_pose_model.pth, facenet.pth not found"):
        make_detector("openpose", model=tmp_path, allow_pickle=True).load()


def test_openpose_annotator_pickles_need_allow_pickle(tmp_path, samples):
    from vidreal.conditions import make_detector
    from vidreal.conditions.openpose import WEIGHT_FILES

    for name in WEIGHT_FILES:  # real pickles (torch.save), not OpenPose weights
        torch.save({"not_a_layer": torch.zeros(1)}, tmp_path / name)
    with pytest.raises(ModelError, match="pass --allow-pickle if you trust them") as info:
        make_detector("openpose", model=tmp_path).load()
    assert "torch.load" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ModelError, match="cannot load OpenPose weights"):  # consent given: the files were read
        make_detector("openpose", model=tmp_path, allow_pickle=True).load()

    image = samples / "objects"
    first = sorted(p for p in image.rglob("*") if p.suffix in (".png", ".jpg"))[0]
    args = ["conditions", str(first), "-o", str(tmp_path / "out.png"), "--kind", "openpose", "--no-progress"]
    res = run_cli(*args)
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 1 and len(lines) == 1 and "--allow-pickle" in lines[0], res.output
    res = run_cli(*args, "--allow-pickle")
    assert "--allow-pickle" not in res.output and "lllyasviel/Annotators" in res.output  # next: the weights


# ---------------------------------------------------------------- files and CLI

def test_output_paths_insert_the_kind_before_the_extension(tmp_path):
    assert output_paths(tmp_path / "out.mp4", ["pose"]) == {"pose": tmp_path / "out.mp4"}
    assert output_paths(tmp_path / "out.mp4", ["canny", "pose"]) == {
        "canny": tmp_path / "out.canny.mp4", "pose": tmp_path / "out.pose.mp4"}


@pytest.fixture(scope="module")
def clip_file(moving_clip, tmp_path_factory):
    """The moving astronaut as an 8-frame, 12 fps mp4."""
    from vidreal.io import write_video

    return write_video(tmp_path_factory.mktemp("clip") / "astronaut.mp4", moving_clip, fps=Fraction(12))


def run_cli(*args):
    from vidreal.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def test_cli_writes_a_pose_video_with_the_inputs_frames_and_fps(clip_file, tmp_path):
    from vidreal.io import probe, read_video

    out = tmp_path / "pose.mp4"
    result = run_cli("conditions", clip_file, "-o", out, "--kind", "pose", "--no-progress")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"pose: {out}"]  # every frame has the person: no report
    source, written = probe(clip_file), probe(out)
    assert (written.n_frames, written.fps, written.width, written.height) == (8, Fraction(12), 256, 256)
    assert (source.n_frames, source.fps) == (written.n_frames, written.fps)
    maps = read_video(out).frames
    assert (maps.max(axis=-1) > 128).any(axis=(1, 2)).all()  # a bright skeleton on every frame
    assert np.median(maps) < 10  # on black
    assert [p.name for p in tmp_path.iterdir()] == ["pose.mp4"]  # no temporary files left


@pytest.mark.slow
def test_cli_pose_video_of_the_humanoid_sample(samples, tmp_path):
    from vidreal.io import probe, read_video

    clip = samples / "humanoid_walk_ground.mp4"
    out = tmp_path / "walk_pose.mp4"
    result = run_cli("conditions", clip, "-o", out, "--kind", "pose", "--no-progress")
    assert result.exit_code == 0, result.output
    source, written = probe(clip), probe(out)
    assert (written.n_frames, written.fps, written.width, written.height) == (
        source.n_frames, source.fps, source.width, source.height)
    person = ~np.isnan(detect_keypoints(read_video(clip).frames)[:, :, 0]).all(axis=1)
    skeleton = (read_video(out).frames.max(axis=-1) > 100).sum(axis=(1, 2)) > 50
    assert person.sum() >= 0.9 * source.n_frames
    np.testing.assert_array_equal(skeleton, person)


def test_cli_several_kinds_write_one_file_each(clip_file, tmp_path):
    from vidreal.io import read_video

    result = run_cli("conditions", clip_file, "-o", tmp_path / "maps.mp4", "--canny-low", 50,
                     "--canny-high", 120, "--chunk-size", 3, "--no-progress")
    assert result.exit_code == 0, result.output
    canny, pose = tmp_path / "maps.canny.mp4", tmp_path / "maps.pose.mp4"
    assert result.output.splitlines() == [f"canny: {canny}", f"pose: {pose}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.canny.mp4", "maps.pose.mp4"]
    assert len(read_video(canny).frames) == len(read_video(pose).frames) == 8


def test_extract_file_image_to_image_with_report(tmp_path):
    from vidreal.conditions import extract_file
    from vidreal.io import read_video, write_video

    black = write_video(tmp_path / "black.png", np.zeros((1, 64, 96, 3), np.uint8))
    result = extract_file(black, tmp_path / "out.png", progress=False)
    assert result.paths == {"canny": tmp_path / "out.canny.png", "pose": tmp_path / "out.pose.png"}
    assert result.n_frames == 1 and result.fps is None
    assert result.reports == {"pose": "pose: no person found in 1/1 frames"}
    for path in result.paths.values():
        frames = read_video(path).frames
        assert frames.shape == (1, 64, 96, 3) and not frames.any()


def test_cli_errors_are_one_line_and_leave_nothing(clip_file, tmp_path):
    result = run_cli("conditions", clip_file, "-o", tmp_path / "pose.png", "--kind", "pose")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: an image output needs a one-frame input, the input has 8 frames; "
        f"use a video extension such as .mp4 ({tmp_path / 'pose.png'})"]
    result = run_cli("conditions", tmp_path / "missing.mp4", "-o", tmp_path / "out.mp4")
    assert result.exit_code == 1 and result.output.startswith("error: file not found")
    result = run_cli("conditions", clip_file, "-o", tmp_path / "out.mp4", "--kind", "depth")
    assert result.exit_code == 2 and "'depth' is not one of" in result.output
    assert list(tmp_path.iterdir()) == []


class FailsOnSecondChunk(Detector):
    """A registered detector that breaks mid-clip, to see the outputs cleaned up."""

    name = "failing"

    def __init__(self):
        self.calls = 0

    def process(self, frames):
        self.calls += 1
        if self.calls == 2:
            raise InputError("broken on purpose")
        return frames


def test_failure_mid_clip_or_in_one_writer_leaves_no_output(clip_file, tmp_path, monkeypatch):
    from vidreal.conditions import DETECTORS, extract_file

    monkeypatch.setitem(DETECTORS, "failing", FailsOnSecondChunk)
    with pytest.raises(InputError, match="broken on purpose"):
        extract_file(clip_file, tmp_path / "out.mp4", kinds=("canny", "failing"), chunk_size=3, progress=False)
    assert list(tmp_path.iterdir()) == []

    (tmp_path / "out.pose.mp4").mkdir()  # the pose writer cannot write: canny must not stay alone
    result = run_cli("conditions", clip_file, "-o", tmp_path / "out.mp4", "--chunk-size", 2)
    assert result.exit_code == 1 and "error: output path is a folder" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["out.pose.mp4"]

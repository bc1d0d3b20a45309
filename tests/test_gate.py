"""The label-preserving gate in vidreal batch: rejected items, split list, summary, resume; keypoints beside outputs."""
from __future__ import annotations

import json
import re
import shutil
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner

from vidreal.batch import MANIFEST_NAME, read_manifest, run_batch
from vidreal.cli import cli
from vidreal.config import load_config
from vidreal.errors import ConfigError
from vidreal.gate import Gate, StructureScores
from vidreal.io import read_video, write_video
from vidreal.metrics import compute_metrics


def config(models, **overrides):
    values = dict(model=str(models["sd"]), controlnets={"canny": str(models["canny"]), "pose": str(models["pose"])},
                  size=64, steps=2, chunk_size=4, device="cpu", codec="libx264rgb", crf=0)
    values.update(overrides)
    return load_config(**values)


@pytest.fixture(scope="module")
def dataset(samples, tmp_path_factory):
    """IN_DIR with three 4-frame clips (two humanoids, one ground walk) and a split list."""
    base = tmp_path_factory.mktemp("gate")
    walk = read_video(samples / "humanoid_walk_ground.mp4").frames[:4]
    pair = read_video(samples / "humanoid_pair_ground.mp4").frames[:4]
    items = {"ground/Advance/walk.mp4": walk, "ground/Halt/pair.mp4": pair, "ground/Halt/walk_flip.mp4": walk[:, :, ::-1]}
    for rel, frames in items.items():
        write_video(base / "in" / rel, np.ascontiguousarray(frames), fps=Fraction(24), codec="libx264rgb", crf=0)
    split = base / "split.txt"
    split.write_text("".join(f"{rel} {i}\n" for i, rel in enumerate(items)))
    return base, split, list(items)


def run(models, dataset, out, **options):
    base, split, _ = dataset
    return run_batch(base / "in", out, config(models), list_file=split, progress=False, **options)


@pytest.fixture(scope="module")
def open_gate(tiny_models, dataset):
    """A run with both thresholds 0: every item scored, none rejected."""
    base = dataset[0]
    return run(tiny_models, dataset, base / "out0", min_edge_f1=0, min_pose_pck=0), base / "out0"


@pytest.mark.slow
def test_zero_thresholds_reject_nothing_and_record_scores(open_gate, dataset):
    result, out = open_gate
    rels = dataset[2]
    assert (result.done, result.rejected, result.failed) == (3, 0, 0)
    latest = read_manifest(out / MANIFEST_NAME)
    for rel in rels:
        rec = latest[rel]
        assert rec["status"] == "done" and rec["gate"] == {"min_edge_f1": 0, "min_pose_pck": 0}
        assert 0 <= rec["scores"]["edge_f1"] <= 1
    assert latest["ground/Advance/walk.mp4"]["scores"]["pose_pck"] is not None  # the humanoid is found
    assert (out / "split.txt").read_text().splitlines() == [f"{rel} {i}" for i, rel in enumerate(rels)]


@pytest.mark.slow
def test_scores_equal_vidreal_metrics_on_the_written_files(open_gate, dataset):
    _, out = open_gate
    base = dataset[0]
    rec = read_manifest(out / MANIFEST_NAME)["ground/Advance/walk.mp4"]
    source = read_video(base / "in" / rec["input"]).frames
    output = read_video(out / rec["output"]).frames  # lossless codec: the frames the gate saw
    expected = compute_metrics(source, output, flow="dis-fast")
    assert rec["scores"]["edge_f1"] == pytest.approx(expected["edge_f1"], abs=1e-9)
    assert rec["scores"]["pose_pck"] == pytest.approx(expected["pose_pck"], abs=1e-9)


@pytest.mark.slow
def test_impossible_thresholds_reject_every_item_and_keep_outputs(open_gate, tiny_models, dataset):
    _, out0 = open_gate
    out = dataset[0] / "out1"
    shutil.copytree(out0, out)
    result = run(tiny_models, dataset, out, min_edge_f1=1, min_pose_pck=1)
    assert (result.done, result.rejected, result.skipped) == (0, 3, 0)  # thresholds changed: redone
    assert re.search(r"^rejected\s+3\s", result.table(), re.M)
    latest = read_manifest(out / MANIFEST_NAME)
    for rel in dataset[2]:
        assert latest[rel]["status"] == "rejected" and "edge_f1" in latest[rel]["rejected"]
        assert (out / latest[rel]["output"]).is_file()
    assert (out / "split.txt").read_text() == ""


@pytest.mark.slow
def test_split_list_excludes_exactly_the_rejected_items_and_resume_keeps_them(open_gate, tiny_models, dataset):
    _, out0 = open_gate
    rels = dataset[2]
    f1 = {rel: rec["scores"]["edge_f1"] for rel, rec in read_manifest(out0 / MANIFEST_NAME).items()}
    threshold = float(np.median(list(f1.values())))
    assert min(f1.values()) < threshold  # the clips score differently: some pass, some do not
    out = dataset[0] / "out_mid"
    first = run(tiny_models, dataset, out, min_edge_f1=threshold)
    rejected = {rel for rel, value in f1.items() if value < threshold}
    assert {rel for rel, _ in first.rejections} == rejected and first.rejected == len(rejected)
    listed = [line.split()[0] for line in (out / "split.txt").read_text().splitlines()]
    assert listed == [rel for rel in rels if rel not in rejected]
    summary = (out / "batch.vidreal.yaml").read_text()
    assert f"rejected: {len(rejected)}" in summary

    n_records = len((out / MANIFEST_NAME).read_text().splitlines())
    again = run(tiny_models, dataset, out, min_edge_f1=threshold)  # resume: nothing redone
    assert (again.done, again.skipped, again.rejected) == (0, 3 - len(rejected), len(rejected))
    assert len((out / MANIFEST_NAME).read_text().splitlines()) == n_records
    assert [line.split()[0] for line in (out / "split.txt").read_text().splitlines()] == listed


def test_structure_scores_of_chunks_equal_the_metrics_of_the_whole_clip():
    rng = np.random.default_rng(0)
    source = rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    output = source.copy()
    output[3] = 0
    scores = StructureScores(pose=False)
    scores.add(source[:2], output[:2])  # translate_file pairs each output chunk with its source frames
    scores.add(source[2:], output[2:])
    expected = compute_metrics(source, output, flow="dis-fast", pose=False)["edge_f1"]
    assert scores.result() == {"edge_f1": pytest.approx(expected), "pose_pck": None}


@pytest.mark.parametrize("option, value", [("min_edge_f1", 1.5), ("min_pose_pck", -0.1), ("min_edge_f1", "x")])
def test_thresholds_outside_zero_one_are_one_line_errors(option, value):
    with pytest.raises(ConfigError, match=rf"{option} must be a number in \[0, 1\], got") as info:
        Gate(**{option: value})
    assert "\n" not in str(info.value)


def test_cli_bad_threshold_writes_nothing(tiny_models, dataset, tmp_path):
    base = dataset[0]
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["batch", str(base / "in"), str(out), "--model", str(tiny_models["sd"]),
                                      "--min-edge-f1", "1.5", "--no-progress"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: min_edge_f1 must be a number in [0, 1], got 1.5"
    assert not out.exists()


@pytest.mark.slow
def test_keypoints_beside_batch_outputs(tiny_models, dataset, tmp_path):
    base, _, _ = dataset
    out = tmp_path / "out"
    result = run_batch(base / "in", out, config(tiny_models), pattern="pair.mp4", keypoints=True, progress=False)
    assert result.done == 1
    doc = json.loads((out / "ground/Halt/pair.mp4.keypoints.json").read_text())
    assert (doc["width"], doc["height"]) == (384, 256) and len(doc["frames"]) == 4
    assert all(len(p["keypoints"]) == 18 for f in doc["frames"] for p in f["people"])
    # pose maps are extracted at the working size (64 px short side): keypoints come back in input pixels
    xs = [x for f in doc["frames"] for p in f["people"] for x, _, c in p["keypoints"] if c > 0]
    assert xs and max(xs) > 96
    with pytest.raises(ConfigError, match="keypoints come from the pose condition"):
        run_batch(base / "in", tmp_path / "o2", config(tiny_models, controlnets={"canny": str(tiny_models["canny"])}),
                  keypoints=True, progress=False)

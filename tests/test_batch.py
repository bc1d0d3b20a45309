"""vidreal batch: walking and layout, manifest and resume, kill -9 safety, bad inputs, list files, Ray.

Translations use the tiny random models (64 px, 2 steps); clips are generated here (6 frames).
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import types
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from vidreal.batch import MANIFEST_NAME, read_manifest, run_batch
from vidreal.batch.executors import RAY_MISSING, import_ray
from vidreal.batch.items import output_rel, read_list, walk
from vidreal.prompts import Prompts
from vidreal.batch.manifest import TEMP_NAME, Manifest, clean_temp_files
from vidreal.cli import cli
from vidreal.config import load_config
from vidreal.errors import ConfigError, InputError, OutputError
from vidreal.io import read_video, write_video

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- helpers


def moving_square(n=6, h=64, w=64, seed=0) -> np.ndarray:
    """uint8 (n, h, w, 3): a gradient background with a square moving right."""
    rng = np.random.default_rng(seed)
    base = np.zeros((h, w, 3), np.uint8)
    base[..., 0] = np.linspace(0, 200, w, dtype=np.uint8)[None]
    base[..., 2] = rng.integers(0, 255)
    frames = np.repeat(base[None], n, axis=0)
    for t in range(n):
        x = 4 + 3 * t
        frames[t, h // 4:h // 4 + h // 3, x:x + w // 3] = (250, 250, 60)
    return frames


def make_dataset(root: Path, n_frames=6) -> dict[str, int]:
    """A small RoCoG/VisDA-like tree; returns {relative path: frame count}."""
    items = {"ground/Advance/c0.mp4": n_frames, "ground/Advance/c1.mp4": n_frames,
             "ground/Halt/c0.mp4": n_frames, "img/car/a.png": 1}
    for i, (rel, n) in enumerate(items.items()):
        write_video(root / rel, moving_square(n, seed=i), fps=Fraction(12))
    (root / "ground" / "notes.txt").write_text("not media")
    (root / ".hidden").mkdir()
    write_video(root / ".hidden" / "x.mp4", moving_square(2), fps=12)
    return items


# Outputs are compared across runs: encode them losslessly (libx264 at crf 18 is not bit-reproducible
# across runs, so equal frames could decode differently).
def tiny_args(models) -> list[str]:
    return ["--model", str(models["sd"]), "--controlnet", f"canny={models['canny']}",
            "--controlnet", f"pose={models['pose']}", "--size", "32", "--steps", "2", "--chunk-size", "4",
            "--device", "cpu", "--prompt", "a {class_name} in the style of sks person", "--codec", "libx264rgb", "--crf", "0"]


def tiny_config(models, **overrides):
    values = dict(model=str(models["sd"]), controlnets={"canny": str(models["canny"]), "pose": str(models["pose"])},
                  size=32, steps=2, chunk_size=4, device="cpu", prompt="a {class_name} in the style of sks person",
                  codec="libx264rgb", crf=0)
    values.update(overrides)
    return load_config(**values)


def records(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / MANIFEST_NAME).read_text().splitlines()]


def temp_files(out_dir: Path) -> list[Path]:
    return [p for p in out_dir.rglob("*") if TEMP_NAME.match(p.name)]


def run_cli(*args):
    return CliRunner().invoke(cli, ["batch", *map(str, args)])


# ----------------------------------------------------------------------------- items, no model


def test_walk_is_sorted_recursive_and_filtered(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "ground" / "Halt" / ".c9.tmp-0123abcd.mp4").write_bytes(b"x")  # hidden: skipped
    assert [e.rel for e in walk(tmp_path)] == ["ground/Advance/c0.mp4", "ground/Advance/c1.mp4",
                                              "ground/Halt/c0.mp4", "img/car/a.png"]
    assert [e.rel for e in walk(tmp_path, extensions=".png")] == ["img/car/a.png"]
    assert [e.rel for e in walk(tmp_path, pattern="Halt/*")] == ["ground/Halt/c0.mp4"]
    assert [e.rel for e in walk(tmp_path, pattern="c1*")] == ["ground/Advance/c1.mp4"]
    assert [e.rel for e in walk(tmp_path, pattern="ground/*", extensions=["mp4"])] == [
        "ground/Advance/c0.mp4", "ground/Advance/c1.mp4", "ground/Halt/c0.mp4"]
    with pytest.raises(ConfigError, match="'.txt'"):
        walk(tmp_path, extensions=".mp4,.txt")


@pytest.mark.parametrize("rel, out", [("a/b.mp4", "a/b.mp4"), ("a/b.MOV", "a/b.MOV"), ("b.avi", "b.mp4"),
                                      ("b.webm", "b.mp4"), ("x/y.png", "x/y.png"), ("y.jpg", "y.jpg"),
                                      ("y.tiff", "y.png"), ("y.bmp", "y.png")])
def test_output_names(rel, out):
    assert output_rel(rel) == out


def test_read_list_keeps_label_columns(tmp_path):
    lst = tmp_path / "split.txt"
    lst.write_text("# comment\nsyn/Advance/a.mp4 0\n\nsyn/Halt/b.mp4\t3 extra\nsyn/Advance/a.mp4 0\n")
    entries = read_list(lst)
    assert [(e.rel, e.rest) for e in entries] == [("syn/Advance/a.mp4", " 0"), ("syn/Halt/b.mp4", "\t3 extra")]


def test_prompts_template_mapping_and_random_captions(tmp_path):
    config = load_config(prompt="a {class_name} ({stem})")
    assert Prompts(config, tmp_path)("train/car/x1.png") == "a car (x1)"
    assert Prompts(config, tmp_path / "car")("x1.png") == "a car (x1)"  # top-level item: the root's name

    mapping = tmp_path / "map.txt"
    mapping.write_text(f"car/x1.png\ta red car\n{tmp_path}/bus/x2.png\ta {{class_name}} on a street\n")
    prompts = Prompts(load_config(prompts_file=str(mapping)), tmp_path)
    assert prompts("car/x1.png") == "a red car"
    assert prompts("bus/x2.png") == "a bus on a street"  # absolute keys are made relative
    with pytest.raises(InputError, match="no caption"):
        prompts("car/x3.png")

    plain = tmp_path / "captions.txt"
    captions = [f"caption number {i}" for i in range(8)]
    plain.write_text("\n".join(captions) + "\n")
    rels = [f"c{k}/{i}.png" for k in range(3) for i in range(20)]
    first = Prompts(load_config(prompts_file=str(plain), seed=3), tmp_path)
    drawn = [first(rel) for rel in rels]
    again = Prompts(load_config(prompts_file=str(plain), seed=3), tmp_path)
    assert [again(rel) for rel in reversed(rels)] == drawn[::-1]  # reproducible, order-independent
    assert set(drawn) <= set(captions) and len(set(drawn)) >= 5  # draws spread over the captions
    other = Prompts(load_config(prompts_file=str(plain), seed=4), tmp_path)
    assert [other(rel) for rel in rels] != drawn  # the seed matters

    bad = tmp_path / "bad.txt"
    bad.write_text("a.png\tone\nno tab here\n")
    with pytest.raises(InputError, match="line 2"):
        Prompts(load_config(prompts_file=str(bad)), tmp_path)


def test_text_inputs_may_start_with_a_bom(tmp_path):
    """Windows editors start a UTF-8 file with a byte order mark: it is not part of the first
    item, key or caption (it made the list's first item a missing file)."""
    bom = "\ufeff"
    lst = tmp_path / "split.txt"
    lst.write_text(f"{bom}syn/a.mp4 0\nsyn/b.mp4 1\n", encoding="utf-8")
    assert [e.rel for e in read_list(lst)] == ["syn/a.mp4", "syn/b.mp4"]
    mapping = tmp_path / "map.txt"
    mapping.write_text(f"{bom}car/x1.png\ta red car\n", encoding="utf-8")
    assert Prompts(load_config(prompts_file=str(mapping)), tmp_path)("car/x1.png") == "a red car"
    plain = tmp_path / "captions.txt"
    plain.write_text(f"{bom}a street\n", encoding="utf-8")
    assert Prompts(load_config(prompts_file=str(plain)), tmp_path)("car/x1.png") == "a street"
    lst.write_bytes(b"syn/a\xff.mp4 0\n")  # not UTF-8: one line naming the file
    with pytest.raises(InputError, match="cannot read list file") as info:
        read_list(lst)
    assert info.value.path == str(lst)


# ----------------------------------------------------------------------------- manifest, no model


def test_manifest_tolerates_torn_line_and_latest_wins(tmp_path):
    path = tmp_path / MANIFEST_NAME
    with Manifest(path) as manifest:
        manifest.append({"input": "a.mp4", "status": "failed", "error": "x"})
        manifest.append({"input": "b.mp4", "status": "done"})
        manifest.append({"input": "a.mp4", "status": "done"})
    with open(path, "ab") as f:  # what kill -9 in the middle of a write leaves
        f.write(b'{"input": "c.mp4", "stat')
    latest = read_manifest(path)
    assert {k: v["status"] for k, v in latest.items()} == {"a.mp4": "done", "b.mp4": "done"}
    with Manifest(path) as manifest:  # opening for a new run cuts the torn line off
        assert set(manifest.latest) == {"a.mp4", "b.mp4"}
        manifest.append({"input": "c.mp4", "status": "done"})
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line) for line in lines)
    assert read_manifest(path)["c.mp4"]["status"] == "done"


def test_manifest_is_locked_while_a_batch_holds_it(tmp_path):
    with Manifest(tmp_path / MANIFEST_NAME):
        with pytest.raises(OutputError, match="another vidreal batch"):
            Manifest(tmp_path / MANIFEST_NAME)
    Manifest(tmp_path / MANIFEST_NAME).close()  # free again


def test_clean_temp_files_only_removes_our_temporaries(tmp_path):
    ours = [tmp_path / ".c0.tmp-0123abcd.mp4", tmp_path / "a" / ".x.tmp-deadbeef.png", tmp_path / ".y.tmp-00ff00ff"]
    theirs = [tmp_path / "c0.mp4", tmp_path / ".c0.tmp-xyz.mp4", tmp_path / "a" / "x.tmp-deadbeef.png",
              tmp_path / ".hidden"]
    for p in ours + theirs:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert sorted(clean_temp_files(tmp_path)) == sorted(ours)
    assert all(p.exists() for p in theirs) and not any(p.exists() for p in ours)


# ----------------------------------------------------------------------------- refusals, no model


def test_refuses_overlapping_folders(tmp_path):
    make_dataset(tmp_path / "in")
    for out in (tmp_path / "in", tmp_path / "in" / "out"):
        with pytest.raises(ConfigError, match="IN_DIR"):
            run_batch(tmp_path / "in", out, progress=False)
    with pytest.raises(ConfigError, match="inside OUT_DIR"):
        run_batch(tmp_path / "in" / "ground", tmp_path / "in", progress=False)
    result = run_cli(tmp_path / "in", tmp_path / "in" / "out")
    assert result.exit_code == 2
    assert result.output.startswith("error: OUT_DIR") and result.output.count("\n") == 1
    assert not (tmp_path / "in" / "out").exists()


def test_out_dir_that_cannot_be_created_is_one_line(tmp_path):
    """OUT_DIR under a regular file (as a read-only parent, also for root): an OutputError, exit 1,
    one line; it was an OSError traceback."""
    make_dataset(tmp_path / "in")
    (tmp_path / "file").write_text("x")
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(OutputError, match="cannot create OUT_DIR"):
        run_batch(tmp_path / "in", tmp_path / "file" / "out", progress=False)
    result = run_cli(tmp_path / "in", tmp_path / "file" / "out")
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("error: cannot create OUT_DIR (Not a directory)")
    assert sorted(tmp_path.rglob("*")) == before and (tmp_path / "file").read_text() == "x"  # nothing written


def test_missing_ray_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError) as info:
        import_ray()
    assert str(info.value) == RAY_MISSING
    make_dataset(tmp_path / "in")
    result = run_cli(tmp_path / "in", tmp_path / "out", "--executor", "ray")
    assert result.exit_code == 1 and result.output == f"error: {RAY_MISSING}\n"
    assert not (tmp_path / "out").exists()  # refused before touching OUT_DIR


class FakeRay:
    """What RayExecutor.connect and close call, no cluster: ``up`` while a cluster this process
    started would run."""

    up = False

    def is_initialized(self):
        return self.up

    def init(self, **kwargs):
        self.up = True

    def shutdown(self):
        self.up = False

    def cluster_resources(self):
        return {"CPU": 2}

    def remote(self, cls):
        return types.SimpleNamespace(options=lambda **kwargs: cls)


def test_a_batch_that_fails_after_starting_ray_shuts_it_down(tmp_path, monkeypatch):
    ray = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", ray)
    make_dataset(tmp_path / "in")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot create OUT_DIR"):
        run_batch(tmp_path / "in", tmp_path / "file" / "out", executor="ray", progress=False)
    assert not ray.up  # it was left running


# ----------------------------------------------------------------------------- translating (tiny models)


@pytest.fixture(scope="module")
def first_run(tiny_models, tmp_path_factory):
    """One CLI batch over a small tree; (base folder, {rel: frames}, click result)."""
    base = tmp_path_factory.mktemp("batch")
    items = make_dataset(base / "in")
    result = run_cli(base / "in", base / "out", *tiny_args(tiny_models), "--no-progress")
    return base, items, result


@pytest.mark.slow
def test_layout_mirrored_and_manifest_complete(first_run, tiny_models):
    base, items, result = first_run
    assert result.exit_code == 0, result.output
    assert re.search(r"^done\s+4\s+19$", result.output, re.M) and re.search(r"^failed\s+0\s", result.output, re.M)
    out = base / "out"
    media = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.suffix in (".mp4", ".png"))
    assert media == sorted(items)  # same relative layout; .hidden/ and notes.txt are not items
    for rel, n in items.items():
        clip = read_video(out / rel)
        assert clip.frames.shape[0] == n
        assert clip.fps == (None if rel.endswith(".png") else Fraction(12))
    fingerprint = tiny_config(tiny_models).fingerprint()
    recs = records(out)
    assert sorted(r["input"] for r in recs) == sorted(items)
    for rec in recs:
        assert rec["status"] == "done" and rec["error"] is None and rec["output"] == rec["input"]
        assert rec["frames"] == items[rec["input"]] and rec["config"] == fingerprint
        assert rec["prompt"] == f"a {Path(rec['input']).parent.name} in the style of sks person"
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", rec["time"])
    assert all(isinstance(rec["seconds"], float) and math.isfinite(rec["seconds"]) for rec in recs)  # recorded, not timed
    assert load_config(out / "batch.vidreal.yaml").fingerprint() == fingerprint
    assert temp_files(out) == []


@pytest.mark.slow
def test_rerun_skips_done_items_and_redoes_the_rest(first_run, tiny_models):
    base, items, _ = first_run
    out = base / "out_rerun"  # a copy: other tests compare with the first run's outputs
    shutil.copytree(base / "out", out)
    stamps = {rel: (out / rel).stat().st_mtime_ns for rel in items}
    again = run_cli(base / "in", out, *tiny_args(tiny_models), "--no-progress")
    assert again.exit_code == 0 and re.search(r"^skipped\s+4\s+19$", again.output, re.M)
    assert re.search(r"^done\s+0\s", again.output, re.M)
    assert len(records(out)) == 4  # nothing appended
    assert {rel: (out / rel).stat().st_mtime_ns for rel in items} == stamps

    (out / "ground/Advance/c1.mp4").unlink()  # a missing output is redone
    again = run_cli(base / "in", out, *tiny_args(tiny_models), "--no-progress")
    assert re.search(r"^done\s+1\s+6$", again.output, re.M) and re.search(r"^skipped\s+3\s", again.output, re.M)
    assert read_video(out / "ground/Advance/c1.mp4").frames.shape[0] == 6

    again = run_cli(base / "in", out, *tiny_args(tiny_models), "--no-progress", "--overwrite", "--pattern", "Halt/*")
    assert re.search(r"^done\s+1\s", again.output, re.M) and re.search(r"^skipped\s+0\s", again.output, re.M)

    again = run_cli(base / "in", out, *tiny_args(tiny_models), "--no-progress", "--seed", "7", "--extensions", ".png")
    assert re.search(r"^done\s+1\s+1$", again.output, re.M)  # another config: redone
    latest = read_manifest(out / MANIFEST_NAME)
    assert latest["img/car/a.png"]["config"] == tiny_config(tiny_models, seed=7).fingerprint()
    assert len(records(out)) == 4 + 3 and temp_files(out) == []


@pytest.mark.slow
def test_list_file_in_list_file_out(first_run, tiny_models):
    base, _, _ = first_run
    (base / "annotations").mkdir(exist_ok=True)
    split = base / "annotations" / "syn_ground_train.txt"
    split.write_text("ground/Advance/c0.mp4 0\nground/Halt/c0.mp4 3\nground/Missing/x.mp4 2\n../escape.mp4 1\n")
    out = base / "out_list"
    result = run_cli(base / "in", out, *tiny_args(tiny_models), "--no-progress", "--list", split, "--overlap")
    assert result.exit_code == 1, result.output  # two entries failed
    assert (out / "syn_ground_train.txt").read_text() == "ground/Advance/c0.mp4 0\nground/Halt/c0.mp4 3\n"
    latest = read_manifest(out / MANIFEST_NAME)
    assert latest["ground/Missing/x.mp4"]["error"] == "file not found"
    assert "leaves the input folder" in latest["../escape.mp4"]["error"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4")) == ["ground/Advance/c0.mp4", "ground/Halt/c0.mp4"]
    for rel in ("ground/Advance/c0.mp4", "ground/Halt/c0.mp4"):  # with overlap (off by default on CPU): the same frames
        assert np.abs(read_video(out / rel).frames.astype(int) - read_video(base / "out" / rel).frames).max() <= 1


@pytest.mark.slow
def test_metrics_per_item_and_mean_over_the_dataset(tiny_models, tmp_path):
    from vidreal.metrics import compute_file_metrics

    src, out = tmp_path / "in", tmp_path / "out"
    write_video(src / "a" / "c0.mp4", moving_square(6, seed=1), fps=12)
    write_video(src / "a" / "c1.mp4", moving_square(6, seed=2), fps=12)
    Image.fromarray(moving_square(1, seed=3)[0]).save(src / "still.png")
    result = run_cli(src, out, *tiny_args(tiny_models), "--no-progress", "--metrics")
    assert result.exit_code == 0, result.output
    latest = read_manifest(out / MANIFEST_NAME)
    # each item's numbers are those `vidreal metrics` gives for its source and output
    again = compute_file_metrics(src / "a" / "c0.mp4", out / "a" / "c0.mp4", clip_model=None)
    for key in ("warp_error", "warp_error_source", "edge_f1"):
        assert latest["a/c0.mp4"]["metrics"][key] == pytest.approx(again[key], abs=1e-6), key
    assert latest["still.png"]["metrics"]["warp_error"] is None  # no time axis in a still
    assert 0 <= latest["still.png"]["metrics"]["edge_f1"] <= 1
    # means over the items that have each metric, printed and recorded
    warp = np.mean([latest[f"a/c{i}.mp4"]["metrics"]["warp_error"] for i in (0, 1)])
    edge = np.mean([rec["metrics"]["edge_f1"] for rec in latest.values()])
    assert re.search(r"^metrics, mean over 3 item", result.output, re.M)
    assert re.search(rf"^  warp_error\s+{warp:.4f}$", result.output, re.M), result.output
    recorded = yaml.safe_load((out / "batch.vidreal.yaml").read_text())["result"]
    assert recorded["metrics_items"] == 3 and recorded["metrics_mean"]["edge_f1"] == pytest.approx(edge)
    # a resumed run that skips everything still reports the whole dataset's means
    rerun = run_batch(src, out, tiny_config(tiny_models), progress=False, metrics=True)
    assert (rerun.done, rerun.skipped) == (0, 3)
    assert rerun.metrics_items == 3 and rerun.metrics["warp_error"] == pytest.approx(warp)


def write_vfr(path: Path, frames: np.ndarray, pts=(0, 40, 120, 130, 200, 330)) -> None:
    """A variable-frame-rate mp4: irregular timestamps in a 1/1000 time base."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for frame, t in zip(frames, pts):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts, video_frame.time_base = t, Fraction(1, 1000)
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode())


@pytest.mark.slow
def test_bad_inputs_are_recorded_and_the_rest_finishes(tiny_models, tmp_path):
    src = tmp_path / "in"
    good = {"one_frame.mp4": 1, "vfr.mp4": 6, "alpha.png": 1, "gray.png": 1, "deep16.png": 1,
            "odd_70x50.png": 1, "large.jpg": 1, "ok.mp4": 6}
    write_video(src / "ok.mp4", moving_square(6), fps=12)
    write_video(src / "one_frame.mp4", moving_square(1), fps=12)
    write_vfr(src / "vfr.mp4", moving_square(6))
    rgba = np.dstack([moving_square(1, 48, 64)[0], np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))])
    Image.fromarray(rgba, "RGBA").save(src / "alpha.png")
    Image.fromarray(moving_square(1)[0, ..., 0], "L").save(src / "gray.png")
    Image.fromarray((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)).save(src / "deep16.png")
    Image.fromarray(moving_square(1, 50, 70)[0]).save(src / "odd_70x50.png")
    Image.fromarray(moving_square(1, 1000, 1500)[0]).save(src / "large.jpg")
    bad = {"zero.mp4": "empty", "truncated.mp4": "", "text.mp4": "video",
           "outside_link.mp4": "symlink points outside", "pipe.mp4": "not a regular file"}
    (src / "zero.mp4").write_bytes(b"")
    os.mkfifo(src / "pipe.mp4")  # unreadable even for root; opening it would block
    write_video(tmp_path / "full.mp4", moving_square(6), fps=12)
    data = (tmp_path / "full.mp4").read_bytes()
    (src / "truncated.mp4").write_bytes(data[:len(data) // 2])
    (src / "text.mp4").write_text("this is not a video\n" * 10)
    (tmp_path / "elsewhere").mkdir()
    write_video(tmp_path / "elsewhere" / "secret.mp4", moving_square(6), fps=12)
    (src / "outside_link.mp4").symlink_to(tmp_path / "elsewhere" / "secret.mp4")

    out = tmp_path / "out"
    result = run_cli(src, out, *tiny_args(tiny_models), "--no-progress")
    assert result.exit_code == 1
    assert re.search(rf"^done\s+{len(good)}\s+{sum(good.values())}$", result.output, re.M), result.output
    assert re.search(rf"^failed\s+{len(bad)}\s", result.output, re.M)
    latest = read_manifest(out / MANIFEST_NAME)
    assert set(latest) == set(good) | set(bad)
    for rel, n in good.items():
        assert latest[rel]["status"] == "done", (rel, latest[rel]["error"])
        clip = read_video(out / rel)
        assert clip.frames.shape[0] == n and latest[rel]["frames"] == n
    # translated at the working size (32 px), written back at the input's size
    assert read_video(out / "large.jpg").frames.shape[1:3] == (1000, 1500)
    for rel, reason in bad.items():
        error = latest[rel]["error"]
        assert latest[rel]["status"] == "failed" and reason in error, (rel, error)
        assert error and "\n" not in error and len(error) <= 300
        assert f"  {rel}: {error}" in result.output  # listed in the summary
        assert not (out / rel).exists()
    assert not (out / "outside_link.mp4").exists() and temp_files(out) == []


@pytest.mark.slow
def test_file_names_that_are_not_utf8_are_translated_recorded_and_resumed(tiny_models, tmp_path):
    """Linux file names are bytes: one that is not UTF-8 (os.fsdecode makes it "bad\\udcff.png") is
    translated, recorded, read back to the same path by a rerun and shown escaped. It stopped the
    whole batch at the manifest, which stayed empty."""
    src, out = tmp_path / "in", tmp_path / "out"
    write_video(src / "ok.png", moving_square(1))
    bad, broken = os.fsdecode(b"bad\xff.png"), os.fsdecode(b"text\xfe.mp4")
    shutil.copy(src / "ok.png", src / bad)
    (src / broken).write_text("this is not a video\n")  # fails as an item, named in the summary
    result = run_cli(src, out, *tiny_args(tiny_models), "--no-progress", "--sheet", out / "sheet.png")
    assert result.exit_code == 1 and "failed items:" in result.output, result.output
    assert "  text\\udcfe.mp4: " in result.output  # printed as manifest.jsonl writes it
    data = (out / MANIFEST_NAME).read_bytes()
    assert b'"input":"bad\\udcff.png"' in data and data.decode("utf-8")  # a JSON escape, valid UTF-8
    latest = read_manifest(out / MANIFEST_NAME)
    assert {rel: rec["status"] for rel, rec in latest.items()} == {"ok.png": "done", bad: "done", broken: "failed"}
    assert read_video(out / bad).frames.shape == (1, 64, 64, 3)
    assert (out / "sheet.png").is_file() and (out / "report.html").is_file()
    again = run_cli(src, out, *tiny_args(tiny_models), "--no-progress")
    assert re.search(r"^skipped\s+2\s", again.output, re.M), again.output  # the same paths, read back


def _without_root_file_access():
    """preexec_fn for a child of root: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding
    set, so the exec'd process is root without the power to read a file whose mode forbids it."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.mark.slow
def test_unreadable_file_is_recorded(tiny_models, tmp_path):
    # The batch runs in a child process; when the suite runs as root (CI), the child drops root's
    # file-access override, so chmod 000 really stops it from reading.
    write_video(tmp_path / "in" / "ok.mp4", moving_square(6), fps=12)
    write_video(tmp_path / "in" / "locked.mp4", moving_square(6), fps=12)
    (tmp_path / "in" / "locked.mp4").chmod(0)
    cmd = [sys.executable, "-m", "vidreal", "batch", str(tmp_path / "in"), str(tmp_path / "out"),
           *tiny_args(tiny_models), "--no-progress"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                              preexec_fn=_without_root_file_access if os.geteuid() == 0 else None)
    finally:
        (tmp_path / "in" / "locked.mp4").chmod(0o644)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # a failed item: exit 1, the rest done
    latest = read_manifest(tmp_path / "out" / MANIFEST_NAME)
    assert latest["ok.mp4"]["status"] == "done"
    assert latest["locked.mp4"]["status"] == "failed" and "ermission" in latest["locked.mp4"]["error"]
    assert not (tmp_path / "out" / "locked.mp4").exists()


# A batch that stops before recording its second item (the item's output is already written) and
# says so by creating the file named by its first argument; the rest of argv is vidreal's.
PAUSE_BEFORE_SECOND_RECORD = """
import sys
from vidreal.batch.manifest import Manifest
from vidreal.cli import main

record = Manifest.append

def record_or_pause(manifest, rec):
    if manifest.latest:  # the second record: say so on stdout, then wait on stdin until killed
        sys.__stdout__.write("paused\\n")
        sys.__stdout__.flush()
        sys.stdin.read()
    record(manifest, rec)

Manifest.append = record_or_pause
main()
"""


@pytest.mark.slow
def test_killed_batch_resumes_to_a_complete_consistent_output(tiny_models, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    items = {f"c/clip{i}.mp4": 6 for i in range(4)}
    for i, rel in enumerate(items):
        write_video(src / rel, moving_square(6, seed=i), fps=12)
    cmd = [sys.executable, "-c", PAUSE_BEFORE_SECOND_RECORD, "batch", str(src), str(out),
           *tiny_args(tiny_models), "--no-progress"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            cwd=ROOT, text=True)
    try:
        lines = iter(proc.stdout.readline, "")  # blocks until the child pauses (or ends: then no "paused")
        paused = any(line.strip() == "paused" for line in lines)
        running = proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    assert paused and running  # killed mid-batch, never after it finished
    assert proc.returncode == -signal.SIGKILL
    first, second = list(items)[:2]
    assert list(read_manifest(out / MANIFEST_NAME)) == [first]
    assert (out / second).is_file()  # written, not recorded: the rerun redoes it

    result = run_cli(src, out, *tiny_args(tiny_models), "--no-progress")
    assert result.exit_code == 0, result.output
    assert re.search(r"^done\s+3\s", result.output, re.M) and re.search(r"^skipped\s+1\s", result.output, re.M)
    done = [rec["input"] for rec in records(out) if rec["status"] == "done"]
    assert sorted(done) == sorted(items)  # every item recorded done exactly once over both runs
    assert temp_files(out) == []
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4")) == sorted(items)
    for rel, n in items.items():
        assert read_video(out / rel).frames.shape[0] == n


@pytest.fixture
def ray_local(monkeypatch):
    ray = pytest.importorskip("ray")
    # CI machines are shared: keep Ray's memory monitor from killing the test's workers.
    monkeypatch.setenv("RAY_memory_monitor_refresh_ms", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_executor_matches_local(first_run, tiny_models, ray_local):
    base, items, _ = first_run
    out = base / "out_ray"
    result = run_batch(base / "in", out, tiny_config(tiny_models), executor="ray", workers=2, progress=False)
    assert (result.done, result.failed, result.frames) == (4, 0, sum(items.values()))
    recs = records(out)
    assert sorted(r["input"] for r in recs) == sorted(items) and {r["status"] for r in recs} == {"done"}
    for rel in items:
        ray_frames = read_video(out / rel).frames.astype(int)
        local_frames = read_video(base / "out" / rel).frames.astype(int)
        assert ray_frames.shape == local_frames.shape
        assert np.abs(ray_frames - local_frames).max() <= 1, rel


@pytest.mark.slow
def test_gpus_per_worker_reaches_the_ray_cluster_plan(tiny_models, ray_local, tmp_path):
    make_dataset(tmp_path / "in")
    result = run_cli(tmp_path / "in", tmp_path / "out", *tiny_args(tiny_models), "--executor", "ray",
                     "--gpus-per-worker", "1", "--no-progress")
    assert result.exit_code == 1
    assert "1 worker(s) x 1 GPU(s) need 1 GPUs; the Ray cluster has 0" in result.output
    assert not (tmp_path / "out").exists()  # the plan is checked before OUT_DIR is touched


def test_estimate_with_an_unreachable_ray_cluster_is_one_line(monkeypatch):
    # the estimate counts the cluster's workers: joining it fails as the batch itself fails, one ConfigError
    from vidreal.batch.executors import ray_workers

    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    monkeypatch.setenv("RAY_ADDRESS", "")
    with pytest.raises(ConfigError, match="cannot start or join the Ray cluster at 'auto'"):
        ray_workers("auto")
    assert not ray.is_initialized()


@pytest.mark.slow
def test_ray_address_reaches_ray_init(tiny_models, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    monkeypatch.setenv("RAY_ADDRESS", "")
    make_dataset(tmp_path / "in")
    # "auto" joins a running cluster only: there is none, so ray.init(address="auto") refuses, one line
    result = run_cli(tmp_path / "in", tmp_path / "out", *tiny_args(tiny_models), "--executor", "ray",
                     "--ray-address", "auto", "--no-progress")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "ray" in lines[0].lower(), result.output
    assert not ray.is_initialized()
    assert not (tmp_path / "out").exists()  # no manifest or config left behind either

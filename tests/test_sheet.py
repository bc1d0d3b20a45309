"""Contact sheet and report.html of a batch: layout, choice of items, self-contained HTML, atomic writes."""
from __future__ import annotations

import base64
import re
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image
from click.testing import CliRunner

from vidreal.batch import MANIFEST_NAME, read_manifest, run_batch
from vidreal.batch.manifest import TEMP_NAME
from vidreal.cli import cli
from vidreal.config import load_config
from vidreal.errors import ConfigError, InputError
from vidreal.io import read_video, write_video
from vidreal.batch.sheet import LABEL, PANEL, choose_items, write_report


def _read_png(path) -> np.ndarray:
    # Pillow, as the sheet is written: in a full run another extension module's zlib can break
    # OpenCV's bundled libpng ("bad parameters to zlib"), which is OpenCV's problem, not the sheet's.
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def batch(tiny_models, samples, tmp_path_factory):
    """A finished batch of three 3-frame clips, gated so that some are rejected; (in, out, result)."""
    base = tmp_path_factory.mktemp("sheet")
    walk = read_video(samples / "humanoid_walk_ground.mp4").frames[:3]
    for i, rel in enumerate(("a/walk.mp4", "a/walk_flip.mp4", "b/pair.mp4")):
        frames = read_video(samples / "humanoid_pair_ground.mp4").frames[:3] if "pair" in rel else walk
        write_video(base / "in" / rel, np.ascontiguousarray(frames[:, :, ::-1] if "flip" in rel else frames),
                    fps=Fraction(24))
    config = load_config(model=str(tiny_models["sd"]), controlnets={"canny": str(tiny_models["canny"]),
                         "pose": str(tiny_models["pose"])}, size=64, steps=2, device="cpu")
    result = run_batch(base / "in", base / "out", config, min_edge_f1=1.0, progress=False,
                       sheet=base / "out" / "sheet.png")
    return base / "in", base / "out", result


@pytest.mark.slow
def test_batch_sheet_has_one_row_per_item_with_four_panels(batch):
    _, out, result = batch
    assert result.sheet == out / "sheet.png" and result.rejected == 3
    sheet = _read_png(out / "sheet.png")
    # per item a label strip and a row of 4 panels (source, canny, pose, output) PANEL px tall; every row as
    # wide as the widest, scaled: b/pair.mp4 (384 x 256) gives 4 x 240 px; the square clips' 4 x 160 px rows
    # are scaled to that width, 240 px tall
    width = 4 * round(384 * PANEL / 256)
    heights = [round(PANEL * width / (4 * PANEL))] * 2 + [PANEL]
    assert sheet.shape[:2] == (LABEL + sum(LABEL + h for h in heights), width)
    tops = np.cumsum([LABEL] + [LABEL + h for h in heights])
    rows = [sheet[top + LABEL:top + LABEL + h] for top, h in zip(tops, heights)]
    for row, h in zip(rows, heights):
        assert row.shape[0] == h and row.any()
        assert row[:, :width // 4].mean() > 20  # the source panel shows the source, not black
    pair_pose = rows[2][:, 2 * 240:3 * 240]  # b/pair.mp4's pose panel: both skeletons
    assert pair_pose[:, :120].any() and pair_pose[:, 120:].any()
    # rejected labels are drawn in red
    labels = [sheet[top:top + LABEL] for top in tops[:3]]
    assert all(((lab[..., 0] > 200) & (lab[..., 1] < 120)).any() for lab in labels)
    assert not [p for p in out.rglob("*") if TEMP_NAME.match(p.name)]


@pytest.mark.slow
def test_report_is_self_contained_and_lists_the_rejected_items(batch):
    _, out, _ = batch
    page = (out / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and "src=\"data:image/png;base64," in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2  # the sheet and the histograms
    sheet_bytes = base64.b64decode(images[0])
    assert sheet_bytes == (out / "sheet.png").read_bytes()
    for rel in ("a/walk.mp4", "a/walk_flip.mp4", "b/pair.mp4"):
        assert f"<td>{rel}</td>" in page
    assert "3 translated item(s), 3 rejected" in page


def test_choice_is_seeded_or_the_worst_by_a_score():
    records = [{"input": f"x{i}", "scores": {"edge_f1": v, "pose_pck": None}} for i, v in
               enumerate([0.5, 0.1, 0.9, 0.3, 0.7])]
    assert choose_items(records, 2, seed=1) == choose_items(records, 2, seed=1)
    assert [r["input"] for r in choose_items(records, 2, worst="edge_f1")] == ["x1", "x3"]
    assert choose_items(records, 9) == records
    assert choose_items(records, 2, worst="pose_pck") == []
    with pytest.raises(ConfigError, match="worst must be one of edge_f1, pose_pck"):
        choose_items(records, 2, worst="speed")


@pytest.mark.slow
def test_sheet_verb_on_a_finished_out_dir(batch, tmp_path):
    _, out, _ = batch
    target = tmp_path / "worst.png"
    result = CliRunner().invoke(cli, ["sheet", str(out), "-o", str(target), "-n", "2", "--worst", "edge_f1"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"sheet: {target}", f"report: {tmp_path / 'report.html'}"]
    sheet = _read_png(target)
    assert sheet.shape[0] == LABEL + 2 * (LABEL + PANEL)
    latest = read_manifest(out / MANIFEST_NAME)
    worst = sorted(latest.values(), key=lambda r: r["scores"]["edge_f1"])[0]
    assert worst["input"] in (tmp_path / "report.html").read_text()


def test_sheet_errors_are_one_line_and_write_nothing(tmp_path):
    result = CliRunner().invoke(cli, ["sheet", str(tmp_path)])
    assert result.exit_code == 1 and result.output.startswith("error: no batch manifest here")
    with pytest.raises(ConfigError, match="must be a .png file"):
        write_report(tmp_path, tmp_path / "sheet.jpg")
    (tmp_path / MANIFEST_NAME).write_text('{"input": "x.mp4", "status": "failed", "output": "x.mp4"}\n')
    with pytest.raises(InputError, match="no translated items"):
        write_report(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST_NAME]


@pytest.mark.slow
def test_missing_sources_are_said_not_drawn_silently(batch, tmp_path, caplog):
    _, out, _ = batch
    with caplog.at_level("WARNING", logger="vidreal.batch.sheet"):
        write_report(out, tmp_path / "s.png", root=tmp_path / "nowhere", n=1, report=False)
    assert "source of" in caplog.text and "not found" in caplog.text
    assert not (tmp_path / "report.html").exists()


def test_batch_record_names_the_input_root(tiny_models, tmp_path):
    import yaml

    write_video(tmp_path / "in" / "x.mp4", np.zeros((1, 32, 32, 3), np.uint8), fps=Fraction(12))
    config = load_config(model=str(tiny_models["sd"]), controlnets={"canny": str(tiny_models["canny"])},
                         size=32, steps=1, device="cpu")
    # (written when the batch starts and again in its summary; `vidreal sheet` finds the sources there)
    (tmp_path / "list.txt").write_text("missing.mp4 0\n")
    run_batch(tmp_path / "in", tmp_path / "out", config, list_file=tmp_path / "list.txt", progress=False)
    data = yaml.safe_load((tmp_path / "out" / "batch.vidreal.yaml").read_text())
    assert data["result"]["root"] == str((tmp_path / "in").resolve())


def test_report_without_rejections_has_no_empty_table(tmp_path):
    from vidreal.batch.sheet import _html

    page = _html(tmp_path, b"png", None, [{"input": "a.mp4", "status": "done"}], 1)
    assert "Rejected items" not in page and "<table" not in page and "0 rejected" in page


def test_preview_panels_are_labelled():
    import numpy as np

    from vidreal.translate import _panel

    frames = np.full((2, 64, 64, 3), 128, np.uint8)
    plain, labelled = _panel(frames), _panel(frames, "source")
    changed = np.argwhere((plain != labelled).any(axis=(0, 3)))
    assert len(changed) > 20 and changed[:, 0].max() < 24 and changed[:, 1].max() < 80  # small, top-left


def test_sheet_rows_are_equally_wide_without_black_padding():
    from vidreal.batch.sheet import render_sheet

    wide, square = np.full((90, 160, 3), 200, np.uint8), np.full((100, 100, 3), 200, np.uint8)
    sheet = render_sheet([("wide", "done", [wide] * 4), ("square", "done", [square] * 4)])
    assert not (sheet[:, -3:] == 0).all(axis=2).any()  # no black column at the right of any row


@pytest.mark.slow
def test_sheet_detects_with_the_batchs_condition_settings(batch, tmp_path):
    """The pose panel is drawn with the detector settings the batch translated with (its record's
    conditions: section): the two-person clip shows two skeletons by default, one with mode single."""
    import shutil

    import yaml

    _, out, _ = batch
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    record = yaml.safe_load((copy / "batch.vidreal.yaml").read_text())

    def pair_pose_halves(conditions):
        record["conditions"] = conditions
        (copy / "batch.vidreal.yaml").write_text(yaml.safe_dump(record))
        write_report(copy, copy / "sheet.png", n=3, report=False)
        sheet = _read_png(copy / "sheet.png")
        top = sheet.shape[0] - PANEL  # b/pair.mp4 is the last row (sorted), 240 px panels
        pose = sheet[top:, 2 * 240:3 * 240]
        return pose[:, :120].any(), pose[:, 120:].any()

    assert pair_pose_halves({}) == (True, True)
    assert sorted(pair_pose_halves({"pose": {"mode": "single"}})) == [False, True]

"""The VisDA protocol end to end on tiny models: images -> `vidreal batch` -> classify train -> eval."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import vidreal
from vidreal.cli import cli
from vidreal.classify.train import train

TINY_SWIN = dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window_size=4)


@pytest.mark.slow
def test_images_to_batch_to_classifier(tiny_models, samples, tmp_path):
    src = samples / "objects"
    out = tmp_path / "translated"
    res = CliRunner().invoke(cli, [
        "batch", str(src), str(out), "--list", str(src / "image_list.txt"),
        "--model", str(tiny_models["sd"]), "--controlnet", f"canny={tiny_models['canny']}",
        "--prompt", "a {class_name} in the style of sks object", "--consistency", "per-frame",
        "--size", "32", "--steps", "2",
    ])
    assert res.exit_code == 0, res.output

    # every listed image translated once, same size, class folders mirrored, list written for the next tool
    listed = [line.split() for line in (src / "image_list.txt").read_text().splitlines() if line.strip()]
    written = [line.split() for line in (out / "image_list.txt").read_text().splitlines() if line.strip()]
    assert [label for _, label in written] == [label for _, label in listed]
    for (rel_in, _), (rel_out, _) in zip(listed, written):
        a, b = vidreal.read_video(src / rel_in).frames, vidreal.read_video(out / rel_out).frames
        assert b.shape == a.shape and b.dtype == np.uint8 and not np.array_equal(a, b)
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["status"] for r in records) == ["done"] * len(listed)
    prompts = {r["input"]: r.get("prompt") for r in records}
    assert prompts["car/car_000.png"] == "a car in the style of sks object"

    # classifier on the translated class folders, validated and evaluated on the source renders
    run = tmp_path / "run"
    result = train(out, src, run, pretrained=False, img_size=64, backbone_kwargs=TINY_SWIN, epochs=2, batch_size=4,
                   eval_batch_size=8, device="cpu", progress=False)
    losses = json.loads((run / "metrics.json").read_text())
    assert np.isfinite([e["train_loss"] for e in losses["epochs"]]).all()
    assert result.run_dir == run and result.classes == ["bicycle", "car", "person", "plant"]
    assert len(losses["epochs"]) == 2 and result.metrics == losses
    assert (run / "config.yaml").is_file()

    res = CliRunner().invoke(cli, ["classify", "eval", str(run), "--data", str(src), "--no-progress"])
    assert res.exit_code == 0, res.output
    header = res.output.splitlines()[0]
    for name in ("bcycl", "car", "person", "plant", "Avg"):
        assert name in header
    assert (run / "confusion.png").stat().st_size > 0

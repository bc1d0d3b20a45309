"""Issue 24 items 1-3: metrics and classify meet a missing hub as translate does (every missing model
named at once, no retries; metrics still scores without CLIP), timm backbones without ``img_size``,
and the shipped object samples train with README's command."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from vidreal.classify import create_backbone
from vidreal.classify.model import DEFAULT_BACKBONE, backbone_need
from vidreal.cli import cli
from vidreal.errors import ModelError
from vidreal.io import write_video
from vidreal.metrics.clip import DEFAULT_CLIP_MODEL

ROOT = Path(__file__).resolve().parents[1]
TINY_SWIN = dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window_size=4)


@pytest.fixture
def unreachable_hub(empty_hub, monkeypatch):
    """An empty cache, not offline by switch, and a hub that does not answer (a closed local port)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    return empty_hub


@pytest.fixture
def clips(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (4, 48, 48, 3), dtype=np.uint8)
    source = write_video(tmp_path / "source.mp4", frames, fps=8)
    output = write_video(tmp_path / "output.mp4", np.roll(frames, 1, axis=2), fps=8)
    return source, output


def _metrics_without_clip(clips, tmp_path):
    source, output = clips
    res = CliRunner().invoke(cli, ["metrics", str(source), str(output), "-o", str(tmp_path / "m.json"),
                                   "--no-pose", "--no-progress"])
    assert res.exit_code == 0, res.output
    scores = json.loads((tmp_path / "m.json").read_text())
    assert scores["warp_error"] is not None and scores["edge_f1"] is not None
    assert scores["clip_consistency"] is None
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, res.stderr
    assert "CLIP metrics unavailable" in warnings[0] and f"\n  hf download {DEFAULT_CLIP_MODEL}" in res.stderr
    assert "--no-clip" in res.stderr
    assert "Retrying" not in res.output
    return warnings[0]


def test_metrics_offline_writes_the_other_scores_and_one_warning(empty_hub, clips, tmp_path):
    assert "offline" in _metrics_without_clip(clips, tmp_path)


def test_metrics_with_an_unreachable_hub_skips_clip_without_retries(unreachable_hub, clips, tmp_path):
    assert "unreachable (http://127.0.0.1:9)" in _metrics_without_clip(clips, tmp_path)


@pytest.mark.parametrize("hub", ["empty_hub", "unreachable_hub"])
def test_classify_train_with_the_default_backbone_names_its_missing_weights(hub, request, tmp_path):
    request.getfixturevalue(hub)
    objects = ROOT / "samples" / "objects"
    res = CliRunner().invoke(cli, ["classify", "train", "--train", str(objects), "--val", str(objects),
                                   "-o", str(tmp_path / "run"), "--no-progress"])
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 1 and lines[0].startswith("error: ") and all(line.startswith("  ") for line in lines[1:])
    hub_id = backbone_need(DEFAULT_BACKBONE).repo
    assert hub_id.startswith("timm/swin_base_patch4_window7_224") and f"  hf download {hub_id}" in res.output
    assert "huggingface-cli" not in res.output and "--weights" in res.output and "--no-pretrained" in res.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("hub", ["empty_hub", "unreachable_hub"])
def test_caption_and_personalize_name_their_missing_models_at_once(hub, request, tmp_path):
    from vidreal.config import DEFAULT_MODEL
    from vidreal.personalize.caption import DEFAULT_CAPTION_MODEL
    from vidreal.personalize.models import check_model

    request.getfixturevalue(hub)
    res = CliRunner().invoke(cli, ["caption", str(ROOT / "samples" / "objects"), "-o", str(tmp_path / "p.txt"),
                                   "--no-progress"])
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 1 and lines[0].startswith("error: ") and all(line.startswith("  ") for line in lines[1:])
    assert f"  hf download {DEFAULT_CAPTION_MODEL}" in res.output and "Retrying" not in res.output
    with pytest.raises(ModelError, match=f"hf download {DEFAULT_MODEL} .*--exclude 'safety_checker/\\*'"):
        check_model(DEFAULT_MODEL)


def test_cached_backbone_weights_load_without_the_hub(unreachable_hub):
    """The hub unreachable but the weights cached: read from the cache (no request)."""
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = create_backbone("resnet18", pretrained=False)
    need = backbone_need("resnet18")
    repo = unreachable_hub / "hub" / f"models--{need.repo.replace('/', '--')}"
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()},
              str(repo / "snapshots" / ("0" * 40) / need.filename))
    torch.manual_seed(2)
    loaded = create_backbone("resnet18", pretrained=True)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


@pytest.mark.parametrize("backbone, kwargs", [("resnet18", {}), ("swin_base_patch4_window7_224", TINY_SWIN)])
def test_img_size_reaches_only_backbones_that_take_it(backbone, kwargs):
    model = create_backbone(backbone, pretrained=False, img_size=32, backbone_kwargs=kwargs)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, model.num_features)


def test_classify_train_resnet18_at_size_32(tmp_path):
    objects = ROOT / "samples" / "objects"
    res = CliRunner().invoke(cli, ["classify", "train", "--train", str(objects), "--val", str(objects), "-o",
                                   str(tmp_path / "run"), "--backbone", "resnet18", "--no-pretrained", "--size", "32",
                                   "--epochs", "1", "--device", "cpu", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "run" / "classifier.json").read_text())["img_size"] == 32


def _readme_command(prefix: str) -> list[str]:
    """The README's shell command that starts with ``prefix`` (continuation lines joined)."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith(prefix))
    return line.split("#")[0].split()


def test_readme_classify_command_trains_on_the_shipped_samples(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = _readme_command("vidreal classify train --train samples/")
    args[args.index("-o") + 1] = str(tmp_path / "run")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"classify": {"backbone_kwargs": TINY_SWIN}}))
    res = CliRunner().invoke(cli, args[1:] + ["--no-pretrained", "--size", "64", "--epochs", "1", "--config",
                                              str(config), "--device", "cpu", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert not re.search(r"no training samples", res.output)
    info = json.loads((tmp_path / "run" / "classifier.json").read_text())
    assert info["classes"] == ["bicycle", "car", "person", "plant"]
    # the list and the class folders agree: same classes, same labels
    listed = [line.split() for line in (ROOT / "samples/objects/image_list.txt").read_text().splitlines()]
    assert {(path.split("/")[0], int(label)) for path, label in listed} == set(
        (name, i) for i, name in enumerate(info["classes"]))

"""vidreal.classify: data layouts, the report's head, training, the feature cache, evaluation, CLI.

Everything runs on a tiny random Swin (embed_dim 32, depths (1,1,2,1), 64 px input) and coloured
squares generated here: each class has its own colour, so even random features separate them.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file
from torch import nn

import vidreal.classify.features as features_mod
from vidreal.classify import (
    VISDA_CLASSES,
    TrainConfig,
    confusion_matrix,
    create_backbone,
    evaluate,
    format_table,
    load_run,
    load_samples,
    load_train_config,
    make_head,
    per_class_accuracy,
    train,
)
from vidreal.cli import cli
from vidreal.errors import ConfigError, InputError, ModelError

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window_size=4)
TINY_TRAIN = dict(pretrained=False, img_size=64, backbone_kwargs=TINY, batch_size=8, eval_batch_size=16, device="cpu")
COLOURS = {"blue": (40, 40, 220), "green": (40, 200, 40), "red": (220, 40, 40)}


def make_split(folder: Path, n_per_class: int, seed: int) -> Path:
    """folder/<colour>/<i>.png: a coloured square on dark noise; plus folder/image_list.txt."""
    rng = np.random.default_rng(seed)
    lines = []
    for label, (name, colour) in enumerate(COLOURS.items()):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = rng.integers(0, 60, (40, 40, 3)).astype(np.uint8)
            x, y = rng.integers(2, 20, 2)
            img[y:y + 18, x:x + 18] = colour
            Image.fromarray(img).save(folder / name / f"{i:03d}.png")
            lines.append(f"{name}/{i:03d}.png {label}")
    (folder / "image_list.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("toy")
    return {"train": make_split(root / "train", 12, 0), "val": make_split(root / "val", 5, 1)}


# --- model -------------------------------------------------------------------------------------

def test_head_has_exactly_the_reports_layers():
    head = make_head(1024, 12)
    assert [type(m) for m in head] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert (head[0].in_features, head[0].out_features) == (1024, 512)
    assert head[2].p == pytest.approx(0.3)
    assert (head[3].in_features, head[3].out_features) == (512, 12)
    assert head(torch.zeros(2, 1024)).shape == (2, 12)


def test_tiny_backbone_gives_features_and_offline_pretrained_fails_clearly():
    backbone = create_backbone(pretrained=False, img_size=64, backbone_kwargs=TINY)
    assert backbone(torch.zeros(2, 3, 64, 64)).shape == (2, backbone.num_features) == (2, 256)
    with pytest.raises(ModelError, match="--weights weights/.*/model.safetensors or --no-pretrained"):
        create_backbone(pretrained=True, img_size=64, backbone_kwargs=TINY)  # HF_HUB_OFFLINE=1
    with pytest.raises(ConfigError, match="unknown backbone 'swin_bse_patch4_window7_224'; did you mean"):
        create_backbone("swin_bse_patch4_window7_224", pretrained=False)


def test_local_weights_file_is_loaded(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = create_backbone(pretrained=False, img_size=64, backbone_kwargs=TINY)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.manual_seed(2)
    loaded = create_backbone(weights=tmp_path / "w.safetensors", img_size=64, backbone_kwargs=TINY)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


# --- data --------------------------------------------------------------------------------------

def test_both_layouts_load_the_same_samples(toy, tmp_path):
    folder = load_samples(toy["train"])
    listed = load_samples(toy["train"] / "image_list.txt")
    assert folder.classes == listed.classes == ["blue", "green", "red"]
    assert folder.paths == listed.paths and folder.labels == listed.labels
    assert folder.class_counts() == [12, 12, 12]
    # a list kept elsewhere, with its paths relative to --root
    (tmp_path / "split.txt").write_text((toy["train"] / "image_list.txt").read_text())
    rooted = load_samples(tmp_path / "split.txt", root=toy["train"])
    assert rooted.paths == folder.paths and rooted.labels == folder.labels


def test_a_list_file_may_start_with_a_bom(toy, tmp_path):
    (tmp_path / "split.txt").write_text("\ufeff" + (toy["train"] / "image_list.txt").read_text(), encoding="utf-8")
    listed = load_samples(tmp_path / "split.txt", root=toy["train"])
    assert listed.paths == load_samples(toy["train"]).paths


def test_visda_list_class_names_come_from_folders(tmp_path):
    lines = []
    for label, name in enumerate(VISDA_CLASSES):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / name / "a.png")
        lines.append(f"{name}/a.png {label}")
    (tmp_path / "image_list.txt").write_text("\n".join(reversed(lines)))
    samples = load_samples(tmp_path / "image_list.txt")
    assert samples.classes == list(VISDA_CLASSES)
    assert samples.labels == list(range(11, -1, -1))


def _bad_data(tmp_path, case):
    good = Image.new("RGB", (8, 8))
    (tmp_path / "a").mkdir()
    good.save(tmp_path / "a" / "x.png")
    if case == "empty class folder":
        (tmp_path / "b").mkdir()
        return dict(src=tmp_path), "class folder 'b' has no images"
    if case == "unknown label":
        (tmp_path / "l.txt").write_text("a/x.png 0\na/x.png 3\n")
        return dict(src=tmp_path / "l.txt", classes=["a", "b"]), r"line 2: unknown label 3 \(classes are 0..1"
    if case == "negative label":
        (tmp_path / "l.txt").write_text("a/x.png -1\n")
        return dict(src=tmp_path / "l.txt"), "line 1: unknown label -1"
    if case == "label not a number":
        (tmp_path / "l.txt").write_text("a/x.png car\n")
        return dict(src=tmp_path / "l.txt"), "line 1: label must be an integer, got 'car'"
    if case == "missing file":
        (tmp_path / "l.txt").write_text("a/x.png 0\na/gone.png 0\n")
        return dict(src=tmp_path / "l.txt"), "listed image is missing"
    if case == "unknown class folder":
        return dict(src=tmp_path, classes=["b", "c"]), "unknown class folder 'a'; known classes: b, c"
    if case == "no class folders":
        return dict(src=tmp_path / "a"), "no class folders"
    if case == "list not UTF-8":
        (tmp_path / "l.txt").write_bytes(b"a/x\xff.png 0\n")
        return dict(src=tmp_path / "l.txt"), "cannot read list file"
    if case == "empty list":
        (tmp_path / "l.txt").write_text("# nothing\n")
        return dict(src=tmp_path / "l.txt"), "list file has no entries"
    if case == "only unreadable images":
        (tmp_path / "a" / "x.png").write_bytes(b"not a png")
        return dict(src=tmp_path), "no readable images"
    if case == "not a folder or list":
        return dict(src=tmp_path / "a" / "x.png"), "expected a folder of class folders or a .txt list file"
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "empty class folder", "unknown label", "negative label", "label not a number", "missing file",
    "unknown class folder", "no class folders", "list not UTF-8", "empty list", "only unreadable images", "not a folder or list",
])
def test_bad_data_gets_a_clear_one_line_error(tmp_path, case):
    kwargs, message = _bad_data(tmp_path, case)
    with pytest.raises(InputError, match=message) as info:
        load_samples(**kwargs)
    assert "\n" not in str(info.value) and info.value.path


def test_unreadable_images_are_skipped_and_counted_or_fail(toy, tmp_path):
    data = make_split(tmp_path / "d", 3, 5)
    (data / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (data / "green" / "empty.jpg").write_bytes(b"")
    samples = load_samples(data, on_bad_image="skip")
    assert len(samples) == 9 and sorted(p.name for p in samples.skipped) == ["broken.png", "empty.jpg"]
    assert samples.class_counts() == [3, 3, 3]
    with pytest.raises(InputError, match="unreadable image") as info:
        load_samples(data, on_bad_image="fail")
    assert info.value.path.endswith(("broken.png", "empty.jpg"))
    with pytest.raises(ConfigError, match="on_bad_image must be one of skip, fail, got 'ignore'"):
        load_samples(data, on_bad_image="ignore")


# --- training ------------------------------------------------------------------------------------

def test_training_lowers_the_loss_and_learns_the_toy_set(toy, tmp_path):
    result = train(toy["train"], toy["val"], tmp_path / "run", epochs=4, progress=False, **TINY_TRAIN)
    losses = [e["train_loss"] for e in result.metrics["epochs"]]
    assert len(losses) == 4 and all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.75 * losses[0]
    assert result.metrics["epochs"][-1]["val_acc"] >= 80  # %; chance is 33
    # StepLR(step 3, gamma 0.97) on the head lr
    assert [e["lr"] for e in result.metrics["epochs"]] == pytest.approx([1e-3, 1e-3, 1e-3, 0.97e-3])
    assert result.classes == ["blue", "green", "red"]
    for name in ("head.safetensors", "backbone.safetensors", "classifier.json", "metrics.json", "config.yaml"):
        assert (tmp_path / "run" / name).is_file(), name
    head = load_file(str(tmp_path / "run" / "head.safetensors"))
    assert head["0.weight"].shape == (512, 256) and head["3.weight"].shape == (3, 512)
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert resolved["classify"]["epochs"] == 4 and resolved["data"]["train"] == str(toy["train"])
    # the saved run reproduces the trained model's outputs
    model, info = load_run(tmp_path / "run")
    x = torch.randn(3, 3, 64, 64)
    result.model.eval()
    torch.testing.assert_close(model(x), result.model(x))


def test_cached_and_uncached_training_agree(toy, tmp_path):
    runs = {}
    for cache in (True, False):
        runs[cache] = train(toy["train"], toy["val"] / "image_list.txt", tmp_path / f"run_{cache}",
                            epochs=2, cache=cache, seed=3, progress=False, **TINY_TRAIN)
    assert runs[True].metrics["cached_features"] and not runs[False].metrics["cached_features"]
    for a, b in zip(runs[True].metrics["epochs"], runs[False].metrics["epochs"]):
        for key in ("train_loss", "val_loss", "train_acc", "val_acc"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    heads = [load_file(str(tmp_path / f"run_{c}" / "head.safetensors")) for c in (True, False)]
    for key in heads[0]:
        torch.testing.assert_close(heads[0][key], heads[1][key], atol=1e-5, rtol=1e-5)
    # a different seed gives a different head: the comparison above is not vacuous
    other = train(toy["train"], toy["val"], tmp_path / "other", epochs=1, seed=4, progress=False, **TINY_TRAIN)
    assert not torch.allclose(other.model.head[3].weight, runs[True].model.head[3].weight)


def test_unfreeze_trains_the_backbone_without_the_cache(toy, tmp_path):
    result = train(toy["train"], toy["val"], tmp_path / "run", epochs=1, unfreeze=True, cache=True,
                   progress=False, **TINY_TRAIN)
    assert result.metrics["cached_features"] is False  # a trained backbone cannot use cached features
    torch.manual_seed(0)  # the seed train() builds the random backbone under
    initial = create_backbone(pretrained=False, img_size=64, backbone_kwargs=TINY).state_dict()
    saved = load_file(str(tmp_path / "run" / "backbone.safetensors"))
    assert saved.keys() == initial.keys()
    assert any(not torch.equal(saved[k], initial[k]) for k in saved if saved[k].is_floating_point())


def test_saved_features_are_reused(toy, tmp_path, monkeypatch):
    first = train(toy["train"], toy["val"], tmp_path / "run", epochs=2, save_features=True, progress=False, **TINY_TRAIN)
    cached = load_file(str(tmp_path / "run" / "features" / "train.safetensors"))["features"]
    assert cached.shape == (36, 256) and cached.dtype == torch.float32

    def no_extraction(*args, **kwargs):
        raise AssertionError("features were computed again")

    monkeypatch.setattr(features_mod, "extract_features", no_extraction)
    second = train(toy["train"], toy["val"], tmp_path / "run", epochs=2, save_features=True, progress=False, **TINY_TRAIN)
    assert [e["train_loss"] for e in second.metrics["epochs"]] == [e["train_loss"] for e in first.metrics["epochs"]]


def test_train_config_file_and_overrides(tmp_path):
    cfg = load_train_config(ROOT / "configs" / "visda" / "sd_cn_ti_db.yaml", epochs=2, lr=None)
    assert (cfg.backbone, cfg.epochs, cfg.batch_size, cfg.eval_batch_size) == ("swin_base_patch4_window7_224", 2, 128, 32)
    assert (cfg.lr, cfg.label_smoothing, cfg.step_size, cfg.gamma) == (1e-3, 0.1, 3, 0.97)
    (tmp_path / "c.yaml").write_text("classify:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="unknown classify setting 'epoch'; did you mean 'epochs'"):
        load_train_config(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="batch_size must be a positive integer, got 0"):
        TrainConfig(batch_size=0)


@pytest.mark.parametrize("name", ["no_da", "sd_cn", "sd_cn_blip", "sd_cn_blip_ti", "sd_cn_ti_db"])
def test_visda_configs_describe_their_table_row(name):
    from vidreal.config import load_config

    path = ROOT / "configs" / "visda" / f"{name}.yaml"
    load_train_config(path)
    if name == "no_da":
        return
    tc = load_config(path)
    assert tc.controlnets == {"canny": "lllyasviel/control_v11p_sd15_canny"}
    assert (tc.steps, tc.guidance) == (20, 9.0)
    assert tc.prompt_for("visda/train/aeroplane/x.png").startswith("a aeroplane")
    assert bool(tc.prompts_file) == ("blip" in name)
    assert bool(tc.embeddings) == ("ti" in name.split("_"))


# --- evaluation ----------------------------------------------------------------------------------

def test_per_class_table_matches_a_hand_computed_confusion_matrix():
    labels = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]
    preds = [0, 0, 1, 2, 1, 0, 2, 2, 2, 2, 2, 2, 2, 2, 0, 1]
    expected = np.array([[2, 1, 1], [1, 1, 0], [1, 1, 8]])
    cm = confusion_matrix(labels, preds, 3)
    np.testing.assert_array_equal(cm, expected)
    np.testing.assert_allclose(per_class_accuracy(cm), [50.0, 50.0, 80.0])
    table = format_table({"run": per_class_accuracy(cm)}, ["cat", "dog", "eel"])
    header, row = table.splitlines()
    assert header.split() == ["Method", "cat", "dog", "eel", "Avg"]
    assert row.split() == ["run", "50.0", "50.0", "80.0", "60.00"]  # Avg = mean of per-class, not 11/16
    # VisDA classes use the report's column names; a class without samples prints "-"
    visda = format_table({"No DA": [75, 40, 81, 97, 58, 16, 80, 10, 77, 56, 83, None]}, VISDA_CLASSES)
    header, row = visda.splitlines()
    assert header.split() == ["Method", "plane", "bcycl", "bus", "car", "horse", "knife", "mcycl",
                              "person", "plant", "sktbrd", "train", "truck", "Avg"]
    assert row.split()[-2:] == ["-", f"{np.mean([75, 40, 81, 97, 58, 16, 80, 10, 77, 56, 83]):.2f}"]


def test_evaluate_writes_a_consistent_summary_and_confusion_png(toy, tmp_path):
    train(toy["train"], toy["val"], tmp_path / "run", epochs=1, progress=False, **TINY_TRAIN)
    result = evaluate(tmp_path / "run", toy["val"] / "image_list.txt", progress=False)
    cm = np.array(result.summary["confusion"])
    assert cm.sum(axis=1).tolist() == [5, 5, 5]  # rows are the true classes of the val set
    np.testing.assert_allclose(result.summary["per_class"], 100 * np.diag(cm) / 5)
    assert result.summary["avg"] == pytest.approx(np.mean(100 * np.diag(cm) / 5))
    assert json.loads(result.json_path.read_text())["confusion"] == cm.tolist()
    with Image.open(result.plot_path) as im:
        assert im.format == "PNG" and im.size[0] > 100


# --- CLI -----------------------------------------------------------------------------------------

def test_cli_train_eval_compare_end_to_end(toy, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"classify": {"img_size": 64, "backbone_kwargs": TINY, "batch_size": 8}}))
    runner = CliRunner()
    for name, epochs in (("short", "1"), ("long", "3")):
        result = runner.invoke(cli, [
            "classify", "train", "--train", str(toy["train"]), "--val", str(toy["val"] / "image_list.txt"),
            "-o", str(tmp_path / name), "--config", str(config), "--no-pretrained", "--epochs", epochs,
            "--device", "cpu", "--seed", "1", "--no-progress",
        ])
        assert result.exit_code == 0, result.output
        assert f"trained {epochs} epochs" in result.output
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        assert len(metrics["epochs"]) == int(epochs) and metrics["classes"] == ["blue", "green", "red"]
        assert json.loads((tmp_path / name / "classifier.json").read_text())["backbone_kwargs"]["embed_dim"] == 32

        result = runner.invoke(cli, ["classify", "eval", str(tmp_path / name), "--data", str(toy["val"]), "--no-progress"])
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        header, row = lines[[line.split()[:1] for line in lines].index(["Method"]):][:2]
        assert header.split() == ["Method", "blue", "green", "red", "Avg"]
        summary = json.loads((tmp_path / name / "eval.json").read_text())
        assert row.split() == [name] + [f"{v:.1f}" for v in summary["per_class"]] + [f"{summary['avg']:.2f}"]
        assert (tmp_path / name / "confusion.png").is_file()

    result = runner.invoke(cli, ["classify", "compare", str(tmp_path / "short"), str(tmp_path / "long")])
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.output.splitlines()] == ["Method", "short", "long"]

    result = runner.invoke(cli, ["classify", "eval", str(tmp_path), "--data", str(toy["val"])])
    assert result.exit_code == 1
    assert re.fullmatch(r"error: not a classifier run folder .*\(.*\)\n", result.output)

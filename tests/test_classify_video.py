"""vidreal.classify on videos (the RoCoG-v2 protocol): lists, clip sampling, decoding only the
sampled frames, the cached frozen path, temporal heads, torchvision video backbones, bad input,
`compare --by domain`, and samples -> `vidreal batch` -> classify train/eval/compare end to end.

Models are tiny and random: a 1.4 M-param Swin at 32 px per frame, r3d_18 on 8x32x32 clips.
Clips are the project's rendered samples (walk and punch, ground and air views) cut and shrunk
here, or coloured squares moving right (class 0) or down (class 1).
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file

import vidreal.io.decode as vio
from vidreal.classify import evaluate, load_samples, load_train_config, train
from vidreal.classify.evaluate import compare
from vidreal.classify.video import ClipTransform, VideoDataset, sample_clips
from vidreal.classify.video_model import VideoHead, create_video_classifier
from vidreal.cli import cli
from vidreal.errors import ConfigError, InputError, ModelError
from vidreal.io import read_frames, read_video, resize_frames, write_video

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window_size=2)
TINY_VIDEO = dict(pretrained=False, img_size=32, backbone_kwargs=TINY, batch_size=4, eval_batch_size=4, device="cpu",
                  clip_len=4, frame_interval=2, eval_clips=2, progress=False)


def moving_square(direction: int, n: int, seed: int, size: int = 32) -> np.ndarray:
    """uint8 (n, size, size, 3): noise with a bright square moving right (0) or down (1)."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 50, (n, size, size, 3)).astype(np.uint8)
    for t in range(n):
        p = 2 + (2 * t) % (size - 12)
        if direction == 0:
            frames[t, 10:18, p:p + 8] = (220, 220, 60)
        else:
            frames[t, p:p + 8, 10:18] = (40, 220, 40)
    return frames


@pytest.fixture(scope="module")
def squares(tmp_path_factory) -> Path:
    """A RoCoG-v2-like tree: syn/ground/{Advance,Halt}/cN.mp4 (moving squares, 14-25 frames),
    annotations/syn_ground_train.txt (8 clips) and syn_ground_val.txt (4 clips)."""
    root = tmp_path_factory.mktemp("rocog")
    (root / "annotations").mkdir()
    for split, seeds in (("train", range(4)), ("val", range(10, 12))):
        lines = []
        for label, name in enumerate(("Advance", "Halt")):
            for s in seeds:
                rel = f"syn/ground/{name}/c{s}.mp4"
                write_video(root / rel, moving_square(label, 14 + s, s), fps=12)
                lines.append(f"{rel} {label}")
        (root / "annotations" / f"syn_ground_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


# --- lists ---------------------------------------------------------------------------------------

def test_rocog_lists_root_override_and_combination(squares, tmp_path):
    train_list = squares / "annotations" / "syn_ground_train.txt"
    samples = load_samples(train_list)  # inside annotations/: paths start at the dataset root
    assert samples.is_video and samples.classes == ["Advance", "Halt"]
    assert samples.paths[0] == squares / "syn/ground/Advance/c0.mp4" and samples.labels == [0] * 4 + [1] * 4
    assert samples.n_frames == [14, 15, 16, 17] * 2  # probed, not decoded
    # the same list elsewhere: its own folder, or --root
    (tmp_path / "split.txt").write_text(train_list.read_text())
    with pytest.raises(InputError, match=r"line 1 of split.txt: listed video is missing \(paths are relative to"):
        load_samples(tmp_path / "split.txt")
    assert load_samples(tmp_path / "split.txt", root=squares).paths == samples.paths
    # several lists combined, in order; the first sets the classes
    both = load_samples([train_list, squares / "annotations" / "syn_ground_val.txt"])
    assert len(both) == 12 and both.paths[8:] == load_samples(squares / "annotations" / "syn_ground_val.txt").paths
    assert both.n_frames[8:] == [24, 25, 24, 25]
    # the class-folder layout gives the same clips
    folder = load_samples(squares / "syn" / "ground")
    assert folder.classes == ["Advance", "Halt"] and len(folder) == 12


@pytest.mark.parametrize("text, message", [
    ("syn/ground/Advance/c0.mp4 0\nsyn/ground/Halt/c0.mp4\n", r"line 2: expected 'relative/path label', got 'syn/ground/Halt/c0.mp4'"),
    ("syn/ground/Advance/c0.mp4 0\n\n# c\nsyn/ground/Halt/c0.mp4 one\n", r"line 4: label must be an integer, got 'one'"),
    ("syn/ground/Advance/c0.mp4 0\nsyn/ground/Halt/c9.mp4 1\n", r"line 2 of bad.txt: listed video is missing"),
    ("syn/ground/Advance/c0.mp4 0\nsyn/ground/Halt/c0.mp4 7\n", r"line 2: unknown label 7 \(classes are 0..1: Advance, Halt\)"),
])
def test_bad_list_lines_name_the_file_and_line(squares, text, message):
    bad = squares / "annotations" / "bad.txt"
    bad.write_text(text)
    with pytest.raises(InputError, match=message) as info:
        load_samples(bad, classes=["Advance", "Halt"])
    assert "\n" not in str(info.value) and info.value.path.endswith(("bad.txt", "c9.mp4"))


def test_empty_class_and_mixed_media_are_refused(squares, tmp_path):
    gap = squares / "annotations" / "gap.txt"  # labels 0 and 2: class 1 has no sample
    gap.write_text("syn/ground/Advance/c0.mp4 0\nsyn/ground/Halt/c0.mp4 2\n")
    with pytest.raises(InputError, match=r"class 1 \(class_1\) has no training samples \(labels are 0..2\)"):
        train(gap, gap, tmp_path / "run", epochs=1, **TINY_VIDEO)
    assert not (tmp_path / "run").exists()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes((ROOT / "samples/objects/car/car_000.png").read_bytes())
    (tmp_path / "a" / "y.mp4").write_bytes((squares / "syn/ground/Halt/c0.mp4").read_bytes())
    with pytest.raises(InputError, match="mixes videos and images"):
        load_samples(tmp_path)


def test_unreadable_clip_is_skipped_with_one_line_or_fails(squares, tmp_path, caplog):
    broken = squares / "syn" / "ground" / "Halt" / "broken.mp4"
    broken.write_bytes((squares / "syn/ground/Halt/c0.mp4").read_bytes()[:300])
    try:
        (tmp_path / "l.txt").write_text("syn/ground/Advance/c0.mp4 0\nsyn/ground/Halt/broken.mp4 1\nsyn/ground/Halt/c1.mp4 1\n")
        with caplog.at_level(logging.WARNING, logger="vidreal.classify.data"):
            samples = load_samples(tmp_path / "l.txt", root=squares)
        assert [p.name for p in samples.paths] == ["c0.mp4", "c1.mp4"] and samples.skipped == [broken]
        warning = next(r.getMessage() for r in caplog.records if "broken.mp4" in r.getMessage())
        assert "\n" not in warning and warning.startswith(f"skipping unreadable video {broken}: ")
        with pytest.raises(InputError, match=r"unreadable video \(.*\); use on_bad_image='skip'") as info:
            load_samples(tmp_path / "l.txt", root=squares, on_bad_image="fail")
        assert info.value.path == str(broken) and "\n" not in str(info.value)
    finally:
        broken.unlink()


# --- sampling and decoding -------------------------------------------------------------------------

def test_clip_sampling_indices_looping_and_evaluation_clips():
    # one clip: the centre one (RoCoG-v2 defaults 16 x 5 = 80 frames span)
    np.testing.assert_array_equal(sample_clips(100), [np.arange(10, 90, 5)])
    # three evaluation clips spread evenly: shares of (100 - 80 + 1) / 3 = 7 frames, each started mid-share
    clips = sample_clips(100, 16, 5, n_clips=3)
    assert clips.shape == (3, 16) and clips[:, 0].tolist() == [3, 10, 17]
    assert (np.diff(clips, axis=1) == 5).all()
    # a short video is looped: 30 frames, clip of 8 every 5 -> 0, 5, ..., 25, 0, 5
    np.testing.assert_array_equal(sample_clips(30, 8, 5), [[0, 5, 10, 15, 20, 25, 0, 5]])
    np.testing.assert_array_equal(sample_clips(1, 4, 3), [[0, 0, 0, 0]])
    # training with random starts: inside each clip's share, reproducible from the generator
    draws = [sample_clips(200, 16, 5, 2, random=True, generator=torch.Generator().manual_seed(s)) for s in range(20)]
    starts = np.array([d[:, 0] for d in draws])
    assert (starts[:, 0] < 60).all() and ((starts[:, 1] >= 60) & (starts[:, 1] < 120)).all()
    assert len({tuple(s) for s in starts}) > 5
    again = sample_clips(200, 16, 5, 2, random=True, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(again, draws[3])
    with pytest.raises(ConfigError, match="clip_len must be a positive integer, got 0"):
        sample_clips(10, 0)


def test_only_the_sampled_frames_are_decoded(squares, monkeypatch):
    path = squares / "syn/ground/Halt/c2.mp4"
    whole = read_video(path).frames  # 16 frames
    asked = []
    real_open = vio._open_video

    def recording_open(p):
        info, reader = real_open(p)

        class Recorder:
            def get_batch(self, indices):
                asked.append(list(indices))
                return reader.get_batch(indices)

        return info, Recorder()

    monkeypatch.setattr(vio, "_open_video", recording_open)
    frames = read_frames(path, [9, 1, 9, 15])
    np.testing.assert_array_equal(frames, whole[[9, 1, 9, 15]])
    assert asked == [[1, 9, 15]]  # each distinct frame once, nothing else

    samples = load_samples(squares / "syn" / "ground")
    transform = ClipTransform(32, 36, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    ds = VideoDataset(samples, transform, clip_len=4, frame_interval=3, n_clips=2)
    asked.clear()
    index = samples.paths.index(path)
    x, label = ds[index]
    assert x.shape == (2, 4, 3, 32, 32) and x.dtype == torch.float32 and label == 1
    expected = sample_clips(16, 4, 3, 2)
    assert asked == [sorted(set(expected.reshape(-1).tolist()))]
    torch.testing.assert_close(x[1, 2], transform(whole[expected[1, 2]][None])[0])
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 16\)"):
        read_frames(path, [0, 16])


def test_clip_transform_resizes_crops_and_normalises():
    frames = np.zeros((2, 40, 80, 3), np.uint8)
    frames[:, :, 20:60] = 255  # the centre 40x40 is white
    x = ClipTransform(16, 20, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))(frames)
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32
    # 40x80 -> 20x40 (shorter side 20), centre crop 16x16 lies inside the white band: (1 - 0.5) / 0.5
    torch.testing.assert_close(x, torch.ones_like(x))


# --- models --------------------------------------------------------------------------------------

@pytest.mark.parametrize("temporal", ["mean", "transformer", "conv"])
def test_temporal_heads_average_clip_probabilities(temporal):
    torch.manual_seed(0)
    head = VideoHead(24, 3, temporal, clip_len=4).eval()
    feats = torch.randn(2, 3, 4, 24)  # 2 videos x 3 clips x 4 frames x 24 features
    out = head(feats)
    assert out.shape == (2, 3)
    per_clip = torch.stack([head(feats[:, k:k + 1]) for k in range(3)], 1)  # log-probabilities per clip
    torch.testing.assert_close(out, per_clip.exp().mean(1).log())
    torch.testing.assert_close(out.exp().sum(1), torch.ones(2))
    if temporal != "mean":  # frame order matters to the transformer (positions) and the conv
        assert not torch.allclose(head(feats.flip(2)), out)
    else:
        torch.testing.assert_close(head(feats.flip(2)), out)


@pytest.mark.slow
def test_torchvision_video_backbone_trains_one_step_and_reloads_from_a_weights_file(tmp_path):
    torch.manual_seed(0)
    model, transform = create_video_classifier("r3d_18", 2, pretrained=False, img_size=32, clip_len=8, frozen=False)
    assert (transform.size, transform.resize) == (32, 37) and transform.mean == (0.43216, 0.394666, 0.37645)
    clips = torch.randn(2, 1, 8, 3, 32, 32)  # 2 videos x 1 clip x 8 frames
    labels = torch.tensor([0, 1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items() if v.is_floating_point()}
    model.train()
    loss = torch.nn.functional.nll_loss(model(clips), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and model.backbone.model.stem[0].weight.grad is not None
    after = model.backbone.model.state_dict()
    assert any(not torch.equal(model.backbone.state_dict()[k], v) for k, v in before.items())  # fine-tuned
    # the trained backbone as a local weights file: loaded into a frozen classifier
    torch.save(after, tmp_path / "r3d.pth")
    frozen, _ = create_video_classifier("r3d_18", 2, weights=tmp_path / "r3d.pth", img_size=32, clip_len=8)
    assert not any(p.requires_grad for p in frozen.backbone.parameters())
    for key, value in after.items():
        torch.testing.assert_close(frozen.backbone.model.state_dict()[key], value)
    model.eval(), frozen.eval()
    with torch.no_grad():
        feats = frozen.backbone(clips)
        assert feats.shape == (2, 1, 512)
        torch.testing.assert_close(feats, model.backbone(clips))


def test_video_backbone_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty torch cache
    with pytest.raises(ModelError, match=r"Kinetics-400 weights for r3d_18 are not in the torch cache: download "
                                         r"https://download.pytorch.org/models/r3d_18-b3b3357e.pth .* --no-pretrained") as info:
        create_video_classifier("r3d_18", 7)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="temporal_head 'conv' is for image backbones"):
        create_video_classifier("r3d_18", 7, pretrained=False, temporal_head="conv")
    with pytest.raises(ConfigError, match="mvit_v2_s takes clips of exactly 16 frames at 224 px"):
        create_video_classifier("mvit_v2_s", 7, pretrained=False, clip_len=8)


# --- training and the feature cache --------------------------------------------------------------

@pytest.mark.parametrize("temporal", ["mean", "transformer"])
def test_cached_features_give_the_same_run_as_the_uncached_path(squares, tmp_path, temporal):
    lists = squares / "annotations"
    runs = {}
    for cache in (True, False):
        runs[cache] = train(lists / "syn_ground_train.txt", lists / "syn_ground_val.txt", tmp_path / f"run_{cache}",
                            epochs=2, cache=cache, seed=3, temporal_head=temporal, **TINY_VIDEO)
    assert runs[True].metrics["cached_features"] and not runs[False].metrics["cached_features"]
    for a, b in zip(runs[True].metrics["epochs"], runs[False].metrics["epochs"]):
        for key in ("train_loss", "val_loss", "train_acc", "val_acc"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    for key, value in runs[True].model.head.state_dict().items():
        torch.testing.assert_close(value, runs[False].model.head.state_dict()[key], atol=1e-5, rtol=1e-5)
    info = json.loads((tmp_path / "run_True" / "classifier.json").read_text())
    assert info["video"] == {"clip_len": 4, "frame_interval": 2, "eval_clips": 2, "temporal_head": temporal}


def test_saved_clip_features_are_reused_and_keyed_by_sampling(squares, tmp_path, monkeypatch):
    import vidreal.classify.features as features_mod

    lists = squares / "annotations"
    args = (lists / "syn_ground_train.txt", lists / "syn_ground_val.txt", tmp_path / "run")
    first = train(*args, epochs=1, save_features=True, **TINY_VIDEO)
    feats = {s: load_file(str(tmp_path / "run" / "features" / f"{s}.safetensors"))["features"]
             for s in ("train", "val")}
    assert feats["train"].shape == (8, 1, 4, 256) and feats["val"].shape == (4, 2, 4, 256)  # (videos, clips, frames, F)
    calls = []
    real = features_mod.extract_features
    monkeypatch.setattr(features_mod, "extract_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    second = train(*args, epochs=1, save_features=True, **TINY_VIDEO)
    assert calls == [] and second.metrics["epochs"] == first.metrics["epochs"]
    train(*args, epochs=1, save_features=True, **{**TINY_VIDEO, "frame_interval": 3})
    assert calls == [1, 1]  # other frames: both splits computed again


# --- evaluation and compare ------------------------------------------------------------------------

def test_compare_by_domain_rows_training_data_columns_test_domains(squares, tmp_path):
    lists = squares / "annotations"
    for name in ("synthetic", "translated"):
        train(lists / "syn_ground_train.txt", lists / "syn_ground_val.txt", tmp_path / name, epochs=1, **TINY_VIDEO)
    ev = evaluate(tmp_path / "synthetic", lists / "syn_ground_val.txt", name="real_ground", progress=False)
    assert ev.json_path == tmp_path / "synthetic" / "evals" / "real_ground.json" and ev.plot_path.is_file()
    summary = json.loads(ev.json_path.read_text())
    assert summary["clips_per_video"] == 2 and len(summary["predictions"]) == 4
    assert summary["accuracy"] == pytest.approx(100 * np.mean(np.array(summary["predictions"]) == summary["labels"]))
    evaluate(tmp_path / "synthetic", lists / "syn_ground_train.txt", name="real_air", progress=False)
    evaluate(tmp_path / "translated", lists / "syn_ground_val.txt", name="real_ground", progress=False)
    table = compare([tmp_path / "synthetic", tmp_path / "translated"], by="domain",
                    domains=["real_ground", "real_air"]).splitlines()
    assert [line.split() for line in table] == [
        ["Training", "data", "real_ground", "real_air"],
        ["synthetic", f"{summary['accuracy']:.1f}",
         f"{json.loads((tmp_path / 'synthetic/evals/real_air.json').read_text())['accuracy']:.1f}"],
        ["translated", f"{json.loads((tmp_path / 'translated/evals/real_ground.json').read_text())['accuracy']:.1f}", "-"],
    ]
    mean_class = compare([tmp_path / "synthetic"], by="domain", metric="mean-class").splitlines()
    assert mean_class[0].split()[2:] == ["real_air", "real_ground"]  # default: every name, sorted
    assert mean_class[1].split()[2] == f"{summary['avg']:.1f}"
    with pytest.raises(InputError, match="no run was evaluated on 'real_sky'"):
        compare([tmp_path / "synthetic"], by="domain", domains=["real_sky"])
    for name in ("Advance", "Halt"):
        (tmp_path / "images" / name).mkdir(parents=True)
        (tmp_path / "images" / name / "x.png").write_bytes((ROOT / "samples/objects/car/car_000.png").read_bytes())
    with pytest.raises(InputError, match="the run classifies videos; this set holds images"):
        evaluate(tmp_path / "synthetic", tmp_path / "images", progress=False)


# --- configs -------------------------------------------------------------------------------------

ROCOG_CONFIGS = sorted((ROOT / "configs" / "rocog").glob("*.yaml"))


def test_rocog_configs_cover_the_protocol():
    from vidreal.config import load_config

    names = {p.stem for p in ROCOG_CONFIGS}
    assert {"ground_syn", "ground_translated", "air_syn", "air_translated", "ground_to_air_syn",
            "ground_to_air_translated"} <= names
    for path in ROCOG_CONFIGS:
        cfg = load_train_config(path)
        assert (cfg.clip_len, cfg.frame_interval, cfg.epochs) == (16, 5, 7), path.name
        text = path.read_text()
        assert "vidreal classify train" in text and "vidreal classify eval" in text, path.name
        if "translated" in path.stem:
            tc = load_config(path)
            assert set(tc.controlnets) == {"canny", "pose"} and tc.prompt == "a person in the style of sks person"
            assert "vidreal batch" in text, path.name


# --- end to end --------------------------------------------------------------------------------------

def _cut(sample: Path, start: int, step: int, n: int) -> np.ndarray:
    return resize_frames(read_frames(sample, np.arange(start, start + step * n, step)), 48, 48)


@pytest.mark.slow
def test_samples_batch_train_eval_compare_end_to_end(tiny_models, tmp_path):
    """Two rendered motions (walk, punch) as a two-gesture RoCoG-v2: synthetic ground clips are
    translated by `vidreal batch` (tiny models), a classifier trains on raw and on translated clips,
    each is evaluated on "real" ground and air clips, and `compare --by domain` tables them."""
    data = tmp_path / "rocog"
    (data / "annotations").mkdir(parents=True)
    lists: dict[str, list[str]] = {"syn_ground_train": [], "real_ground_test": [], "real_air_test": []}
    for label, motion in enumerate(("Punch", "Walk")):
        ground = ROOT / "samples" / f"humanoid_{motion.lower()}_ground.mp4"
        air = ROOT / "samples" / f"humanoid_{motion.lower()}_air.mp4"
        for i, (split, sample, start) in enumerate([("syn_ground_train", ground, 0), ("syn_ground_train", ground, 24),
                                                    ("real_ground_test", ground, 1), ("real_air_test", air, 0)]):
            domain = "syn/ground" if split.startswith("syn") else f"real/{split.split('_')[1]}"
            rel = f"{domain}/{motion}/c{i}.mp4"
            write_video(data / rel, _cut(sample, start, 2, 8), fps=12)
            lists[split].append(f"{rel} {label}")
    for name, lines in lists.items():
        (data / "annotations" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    runner = CliRunner()

    def invoke(*args):
        result = runner.invoke(cli, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result.output

    # 1. translate the synthetic training split; the list it writes is used unchanged
    out = tmp_path / "out" / "syn_ground_translated"
    invoke("batch", data, out, "--list", data / "annotations" / "syn_ground_train.txt",
           "--model", tiny_models["sd"], "--controlnet", f"canny={tiny_models['canny']}", "--size", "32",
           "--steps", "2", "--chunk-size", "8", "--device", "cpu", "--prompt", "a person in the style of sks person",
           "--no-progress")
    translated_list = out / "syn_ground_train.txt"
    assert translated_list.read_text() == (data / "annotations" / "syn_ground_train.txt").read_text()
    translated, source = read_video(out / "syn/ground/Walk/c0.mp4").frames, read_video(data / "syn/ground/Walk/c0.mp4").frames
    assert translated.shape == source.shape == (8, 48, 48, 3)
    assert np.abs(translated.astype(int) - source).mean() > 10  # translated, not copied

    # 2. train on raw and on translated clips (video: per-frame tiny Swin + mean pooling + the head)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"classify": {
        "img_size": 32, "backbone_kwargs": TINY, "batch_size": 4, "clip_len": 4, "frame_interval": 2,
        "eval_clips": 2, "lr": 3e-3}}))
    runs = {"synthetic": data / "annotations" / "syn_ground_train.txt", "translated": translated_list}
    for name, train_list in runs.items():
        output = invoke("classify", "train", "--train", train_list, "--val", data / "annotations" / "real_ground_test.txt",
                        "-o", tmp_path / "runs" / name, "--config", config, "--no-pretrained", "--epochs", "12",
                        "--device", "cpu", "--no-progress")
        assert "trained 12 epochs" in output

    # 3. evaluate: the learnable training split itself, then the two test domains
    for name, train_list in runs.items():
        run = tmp_path / "runs" / name
        output = invoke("classify", "eval", run, "--data", train_list, "--name", "train", "--no-progress")
        header, row = output.splitlines()[:2]
        assert header.split() == ["Method", "Punch", "Walk", "Avg"] and row.split() == [name, "100.0", "100.0", "100.00"]
        summary = json.loads((run / "evals" / "train.json").read_text())
        assert summary["predictions"] == summary["labels"] == [0, 0, 1, 1]
        for domain in ("real_ground", "real_air"):
            output = invoke("classify", "eval", run, "--data", data / "annotations" / f"{domain}_test.txt",
                            "--name", domain, "--no-progress")
            assert re.search(rf"top-1 accuracy [\d.]+%, mean class accuracy [\d.]+% on 2 videos \({domain}\)", output)

    # 4. the comparison table: rows = training data, columns = test domains
    output = invoke("classify", "compare", tmp_path / "runs" / "synthetic", tmp_path / "runs" / "translated",
                    "--by", "domain", "--domain", "real_ground", "--domain", "real_air")
    rows = [line.split() for line in output.splitlines()]
    assert rows[0] == ["Training", "data", "real_ground", "real_air"] and [r[0] for r in rows[1:]] == list(runs)
    for row, name in zip(rows[1:], runs):
        for cell, domain in zip(row[1:], ("real_ground", "real_air")):
            ev = json.loads((tmp_path / "runs" / name / "evals" / f"{domain}.json").read_text())
            hits = np.array(ev["predictions"]) == np.array(ev["labels"])
            assert cell == f"{100 * hits.mean():.1f}"
    result = runner.invoke(cli, ["classify", "compare", str(tmp_path / "runs" / "synthetic"), "--metric", "mean-class"])
    assert result.exit_code == 2 and "--metric and --domain go with --by domain" in result.output

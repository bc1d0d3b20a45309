"""Metrics on constructed clips: known motion, noise, occlusion, edges, pose, CLIP, CLI."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from skimage import data

from vidreal.cli import cli
from vidreal.errors import ConfigError, InputError, ModelError
from vidreal.io import write_video
from vidreal.metrics import (
    SUMMARY_KEYS, compute_metrics, edge_metrics, edge_scores, make_flow_estimator, pose_pck,
    temporal_metrics, valid_mask,
)
from vidreal.flow import RaftFlow

SIZE = 96
SHIFT = 3  # px per frame


def texture(height: int, width: int, sigma: float = 4.0, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture, uint8 (height, width, 3): good for optical flow."""
    noise = np.random.default_rng(seed).random((height, width, 3)).astype(np.float32)
    img = cv2.GaussianBlur(noise, (0, 0), sigma)
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 255).round().astype(np.uint8)


def shifted_clip(n: int = 8, shift: int = SHIFT, size: int = SIZE) -> np.ndarray:
    """Frame t shows the window [shift*t, shift*t + size) of a wider texture: content moves left."""
    wide = texture(size, size + shift * n)
    return np.stack([wide[:, shift * t: shift * t + size] for t in range(n)])


def add_noise(frames: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, frames.shape)
    return np.clip(frames + noise, 0, 255).round().astype(np.uint8)


def astronaut(size: int = 256) -> np.ndarray:
    return cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)


# ----------------------------------------------------------------------------------- temporal


def test_static_clip_has_zero_warp_error():
    clip = np.stack([texture(SIZE, SIZE)] * 5)
    r = temporal_metrics(clip, clip)
    assert r["warp_error"] < 1e-8
    assert r["unwarped_error"] == 0.0
    assert r["masked_fraction"] < 0.01
    assert r["interp_psnr"] == 100.0  # capped: a perfect rebuild
    assert r["per_frame"]["warp_error"][-1] is None and len(r["per_frame"]["warp_error"]) == 5


def test_translation_is_undone_by_the_flow():
    clip = shifted_clip()
    flow = make_flow_estimator("dis")(clip[[0]], clip[[1]])[0]
    assert np.allclose(np.median(flow[8:-8, 8:-8].reshape(-1, 2), axis=0), (-SHIFT, 0), atol=0.05)

    r = temporal_metrics(clip, clip)
    assert r["warp_error"] < 1e-5  # warping along the flow rebuilds the frame
    assert r["unwarped_error"] > 1e-3  # ... while the frames themselves differ a lot
    assert r["unwarped_error"] > 300 * r["warp_error"]
    assert r["warp_error_source"] == r["warp_error"]  # same clip: the floor is reached
    assert r["interp_psnr"] > 45

    # the left band whose content came from outside the frame is masked, the interior is not
    mask = valid_mask(flow, make_flow_estimator("dis")(clip[[1]], clip[[0]])[0])
    assert not mask[:, :SHIFT - 1].any()
    assert mask[8:-8, 8:-8].mean() > 0.99
    assert 0 < r["masked_fraction"] < 0.1


@pytest.mark.parametrize("flow", ["dis-fast", "farneback"])
def test_other_flows_also_undo_the_translation(flow):
    clip = shifted_clip()
    r = temporal_metrics(clip, clip, flow=flow)
    assert r["warp_error"] < 1e-4 and r["unwarped_error"] > 100 * r["warp_error"]


def test_noise_makes_warp_error_worse_monotonically():
    clip = shifted_clip()
    results = [temporal_metrics(clip, add_noise(clip, s) if s else clip) for s in (0, 4, 8, 16)]
    warp = [r["warp_error"] for r in results]
    interp = [r["interp_rmse"] for r in results]
    assert warp == sorted(warp) and len(set(warp)) == 4
    assert interp == sorted(interp) and len(set(interp)) == 4
    # independent noise of sigma s adds about 2 s^2 to the squared difference
    assert warp[-1] == pytest.approx(2 * (16 / 255) ** 2, rel=0.15)
    # the source floor does not depend on the output
    assert {r["warp_error_source"] for r in results} == {results[0]["warp_error"]}


def test_a_flickering_frame_stands_out_per_frame():
    clip = shifted_clip()
    out = clip.copy()
    out[4] = np.clip(out[4].astype(int) + 40, 0, 255).astype(np.uint8)
    per = temporal_metrics(clip, out)["per_frame"]
    warp = np.array(per["warp_error"][:-1])
    assert set(np.argsort(warp)[-2:]) == {3, 4}  # the pairs (3, 4) and (4, 5)
    interp = np.array([np.nan if v is None else v for v in per["interp_rmse"]])
    assert np.nanargmax(interp) == 4
    assert per["interp_rmse"][0] is None and per["interp_rmse"][-1] is None


def test_occluded_region_is_masked():
    """A square moves 8 px/frame to the right over a static background."""
    background, square = texture(SIZE, SIZE, seed=2), texture(24, 24, sigma=2, seed=3)
    frames = []
    for t in range(4):
        frame = background.copy()
        frame[36:60, 10 + 8 * t: 34 + 8 * t] = square
        frames.append(frame)
    frames = np.stack(frames)
    estimate = make_flow_estimator("dis")
    fw, bw = estimate(frames[[0]], frames[[1]])[0], estimate(frames[[1]], frames[[0]])[0]
    mask = valid_mask(fw, bw)
    # background just right of the square at t is covered by it at t+1: occluded
    assert (~mask[36:60, 34:42]).mean() > 0.5
    # the square itself and the background far from it are trusted
    assert mask[40:56, 14:30].mean() > 0.95
    assert mask[:20].mean() > 0.99

    r = temporal_metrics(frames, frames)
    assert r["masked_fraction"] > 0.01
    assert r["warp_error"] < r["unwarped_error"] / 20


def test_one_and_two_frame_clips():
    one = texture(SIZE, SIZE)[None]
    r = compute_metrics(one, one, pose=False)
    assert r["n_frames"] == 1
    assert r["warp_error"] is None and r["interp_rmse"] is None and r["unwarped_error"] is None
    assert r["per_frame"]["warp_error"] == [None]
    assert r["edge_f1"] == 1.0
    two = shifted_clip(n=2)
    r = temporal_metrics(two, two)
    assert r["warp_error"] is not None and r["interp_rmse"] is None


# ---------------------------------------------------------------------------------- structure


def shapes(size: int = 176) -> np.ndarray:
    """Flat shapes on a flat background: sparse, well separated edges."""
    img = np.full((size, size, 3), 40, np.uint8)
    cv2.rectangle(img, (30, 40), (90, 110), (220, 60, 60), -1)
    cv2.circle(img, (120, 80), 28, (60, 200, 90), -1)
    cv2.rectangle(img, (70, 120), (150, 150), (70, 90, 230), -1)
    return img


def test_edge_f1_is_one_for_itself_and_drops_with_shift():
    wide = shapes()
    clip = np.stack([wide[16:144, 16:144]] * 2)

    def f1(shift, radius=2.0):  # the output moved diagonally by (shift, shift)
        moved = np.stack([wide[16 + shift:144 + shift, 16 + shift:144 + shift]] * 2)
        return edge_metrics(clip, moved, radius=radius)["edge_f1"]

    assert f1(0) == 1.0
    assert f1(1) > 0.95  # 1.4 px: within the 2 px tolerance
    assert 1.0 > f1(2) > f1(3)
    assert f1(3) < 0.5 and f1(8) < 0.5
    assert f1(3, radius=5) > 0.9  # a wider tolerance forgives the shift
    assert f1(0, radius=0) == 1.0


def test_edge_scores_of_empty_maps():
    empty, some = np.zeros((8, 8), bool), np.eye(8, dtype=bool)
    assert edge_scores(empty, empty) == (1.0, 1.0, 1.0)
    assert edge_scores(some, empty)[2] == 0.0
    assert edge_scores(empty, some)[2] == 0.0


def test_pose_pck_on_constructed_keypoints():
    src = np.full((4, 18, 3), np.nan, np.float32)
    src[:, :, 2] = 0
    src[:3, :4, :2] = [[0, 0], [30, 40], [0, 40], [30, 0]]  # bounding-box diagonal 50
    src[:3, :4, 2] = 1
    out = src.copy()
    out[1, :4, 0] += 4  # 4 px < 0.1 * 50
    out[2, 0, 0] += 6  # 6 px > 5 px: one of four wrong
    out[2, 1, :2] = np.nan  # missing in the output: wrong
    r = pose_pck(src, out, alpha=0.1)
    assert r["per_frame"]["pose_pck"] == [1.0, 1.0, 0.5, None]
    assert r["pose_pck"] == pytest.approx(2.5 / 3)
    assert (r["pose_frames"], r["pose_frames_excluded"]) == (3, 1)
    assert pose_pck(src, out, alpha=0.2)["per_frame"]["pose_pck"][2] == 0.75


def test_pose_pck_of_clip_with_itself_is_one():
    frames = np.stack([astronaut(), astronaut(), np.zeros((256, 256, 3), np.uint8)])
    r = compute_metrics(frames, frames, pose=True)
    assert r["pose_pck"] == 1.0
    assert r["per_frame"]["pose_pck"][:2] == [1.0, 1.0]
    assert (r["pose_frames"], r["pose_frames_excluded"]) == (2, 1)  # the black frame has nobody

    # a strongly shifted output loses keypoints
    shifted = np.roll(frames, 64, axis=2)
    assert compute_metrics(frames, shifted, pose=True)["pose_pck"] < 0.5


# --------------------------------------------------------------------------------------- CLIP


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny random CLIPModel + tokenizer + image processor saved as a hub-style folder."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from make_tiny_models import make_tokenizer

    tokenizer = make_tokenizer()
    ids = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id}
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=ids["bos"],
                         eos_token_id=ids["eos"], pad_token_id=ids["pad"]),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_clip")
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_clip_consistency_of_a_static_clip_is_one(tiny_clip):
    static = np.stack([astronaut(64)] * 4)
    r = compute_metrics(static, static, pose=False, clip_model=str(tiny_clip), prompt="a person")
    assert r["unavailable"] == {}
    assert r["clip_consistency"] == pytest.approx(1.0, abs=1e-5)
    assert r["clip_consistency_source"] == pytest.approx(1.0, abs=1e-5)
    align = r["per_frame"]["clip_prompt_alignment"]
    assert len(align) == 4 and -1 <= align[0] <= 1 and np.ptp(align) < 1e-5

    noisy = np.random.default_rng(0).integers(0, 256, static.shape, dtype=np.uint8)
    r = compute_metrics(static, noisy, pose=False, clip_model=str(tiny_clip))
    assert r["clip_consistency"] < 1 - 1e-4
    assert r["clip_prompt_alignment"] is None  # no prompt


def test_missing_clip_model_is_reported_not_raised(tmp_path):
    clip = shifted_clip(n=3)
    r = compute_metrics(clip, clip, pose=False, clip_model=str(tmp_path / "nope"))
    assert r["clip_consistency"] is None
    assert "CLIP model" in r["unavailable"]["clip"] and "\n" not in r["unavailable"]["clip"]
    assert r["warp_error"] is not None and r["edge_f1"] == 1.0
    assert set(SUMMARY_KEYS) <= set(r)


# --------------------------------------------------------------------------------- flow, input


def test_raft_without_weights_is_one_model_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clip = shifted_clip(n=2)
    with pytest.raises(ModelError, match="raft_small weights.*download"):
        compute_metrics(clip, clip, flow="raft-small", pose=False)


def test_raft_flow_runs_on_sizes_not_multiple_of_8():
    import torch
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    estimate = RaftFlow(raft_small(weights=None), device="cpu", num_flow_updates=2)
    clip = shifted_clip(n=2, size=44)[:, :36]
    flow = estimate(clip[[0]], clip[[1]])
    assert flow.shape == (1, 36, 44, 2) and flow.dtype == np.float32 and np.isfinite(flow).all()


def test_bad_inputs_raise():
    clip = shifted_clip(n=4)
    with pytest.raises(InputError, match="source has 4 frames, output has 3"):
        compute_metrics(clip, clip[:3])
    with pytest.raises(InputError, match="float32"):
        compute_metrics(clip, clip.astype(np.float32))
    with pytest.raises(ConfigError, match="'lucas'"):
        compute_metrics(clip, clip, flow="lucas")


def test_output_of_another_size_is_resized_to_the_source():
    clip = shifted_clip(n=4)
    big = np.stack([cv2.resize(f, (2 * SIZE, 3 * SIZE), interpolation=cv2.INTER_LINEAR) for f in clip])
    r = compute_metrics(clip, big, pose=False)
    assert r["output_resized_from"] == [3 * SIZE, 2 * SIZE]
    assert (r["height"], r["width"], r["n_frames"]) == (SIZE, SIZE, 4)
    assert r["warp_error"] < 1e-4

    still = np.stack([shapes()[:128, :128]] * 2)
    big = np.stack([cv2.resize(f, (256, 256), interpolation=cv2.INTER_LINEAR) for f in still])
    assert compute_metrics(still, big, pose=False)["edge_f1"] > 0.95


# ----------------------------------------------------------------------------------------- CLI


@pytest.fixture
def videos(tmp_path):
    clip = shifted_clip(n=6, size=64)
    source = write_video(tmp_path / "source.mp4", clip, fps=10)
    noisy = write_video(tmp_path / "noisy.mp4", add_noise(clip, 12), fps=10)
    short = write_video(tmp_path / "short.mp4", clip[:4], fps=10)
    return source, noisy, short


def test_cli_json_and_plot(videos, tiny_clip, tmp_path):
    source, noisy, _ = videos
    plot = tmp_path / "curves.png"
    result = CliRunner().invoke(cli, [
        "metrics", str(source), str(noisy), "--json", "--no-pose", "--no-progress",
        "--clip-model", str(tiny_clip), "--prompt", "a person", "--plot", str(plot),
    ])
    assert result.exit_code == 0, result.output
    data_ = json.loads(result.stdout)
    for key in ("warp_error", "warp_error_source", "unwarped_error", "interp_rmse", "interp_psnr", "edge_f1",
                "clip_consistency", "clip_prompt_alignment", "per_frame", "unavailable"):
        assert key in data_
    assert data_["n_frames"] == 6 and len(data_["per_frame"]["warp_error"]) == 6
    assert data_["warp_error"] > data_["warp_error_source"]  # noise on the output only
    assert data_["pose_pck"] is None and data_["clip_consistency"] is not None
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.width > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "noisy.mp4", "short.mp4", "source.mp4"]


def test_cli_edge_radius_and_pck_alpha_reach_the_scores(videos):
    """--edge-radius widens the edge match (F1 of a noisy copy rises with it); both land in the settings."""
    source, noisy, _ = videos
    scores = {}
    for radius, alpha in ((0, 0.05), (4, 0.2)):
        result = CliRunner().invoke(cli, [
            "metrics", str(source), str(noisy), "--json", "--no-pose", "--no-clip", "--no-progress",
            "--edge-radius", str(radius), "--pck-alpha", str(alpha),
        ])
        assert result.exit_code == 0, result.output
        data_ = json.loads(result.stdout)
        assert (data_["settings"]["edge_radius"], data_["settings"]["pck_alpha"]) == (radius, alpha)
        scores[radius] = data_["edge_f1"]
    assert scores[4] > scores[0]


def test_cli_table_warns_when_clip_is_unavailable(videos, tmp_path):
    source, noisy, _ = videos
    result = CliRunner().invoke(cli, [
        "metrics", str(source), str(noisy), "--no-pose", "--no-progress", "--clip-model", str(tmp_path / "nope"),
    ])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("warning: CLIP metrics unavailable:")
    assert "warp error" in result.stdout and "n/a" in result.stdout


def test_cli_images_and_bad_inputs(videos, tmp_path):
    source, _, short = videos
    image = tmp_path / "a.png"
    Image.fromarray(astronaut(64)).save(image)
    runner = CliRunner()
    result = runner.invoke(cli, ["metrics", str(image), str(image), "--no-pose", "--no-clip", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "1 frames" in result.stdout and "n/a" in result.stdout

    result = runner.invoke(cli, ["metrics", str(source), str(short), "--no-clip", "--no-progress"])
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0
    assert "source has 6 frames, output has 4" in result.stderr and "short.mp4" in result.stderr

    result = runner.invoke(cli, ["metrics", str(source), str(tmp_path / "missing.mp4"), "--no-clip"])
    assert result.exit_code == 1 and result.stderr.startswith("error:")


# ------------------------------------------------------------------- frame selection, inputs kept


def test_frame_selected_translation_is_scored_against_its_frames(tiny_models, samples, tmp_path):
    """translate --start/--every/--max-frames writes a record; metrics reads the selection from it
    (flags override), so the output is compared with the source frames it was made from."""
    source = samples / "humanoid_walk_ground.mp4"
    out = tmp_path / "out.mp4"
    runner = CliRunner()
    result = runner.invoke(cli, ["translate", str(source), "-o", str(out), "--model", str(tiny_models["sd"]),
                                 "--controlnet", f"canny={tiny_models['canny']}", "--size", "32", "--steps", "1",
                                 "--start", "0.5s", "--every", "5", "--max-frames", "4", "--no-progress"])
    assert result.exit_code == 0, result.output
    base = ["metrics", str(source), str(out), "--json", "--no-pose", "--no-clip", "--no-progress"]
    result = runner.invoke(cli, base)
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    assert scored["n_frames"] == 4 and scored["selection"]["kept"] == "12..27 step 5"

    # the same source frames written as the "output": a perfect structure score against those frames only
    from vidreal.io import read_frames
    copy = write_video(tmp_path / "copy.mp4", read_frames(source, [12, 17, 22, 27]), fps=4.8)
    (tmp_path / "copy.mp4.vidreal.yaml").write_text((tmp_path / "out.mp4.vidreal.yaml").read_text())
    same = json.loads(runner.invoke(cli, ["metrics", str(source), str(copy), "--json", "--no-pose", "--no-clip",
                                          "--no-progress"]).stdout)
    shifted = runner.invoke(cli, ["metrics", str(source), str(copy), "--json", "--no-pose", "--no-clip",
                                  "--no-progress", "--start", "0"])  # a flag over the record: frames 0, 5, ...
    assert shifted.exit_code == 0, shifted.output
    assert same["edge_f1"] > 0.95 and json.loads(shifted.stdout)["edge_f1"] < same["edge_f1"] - 0.1

    (tmp_path / "copy.mp4.vidreal.yaml").unlink()  # no record: flags alone select
    flags = runner.invoke(cli, ["metrics", str(source), str(copy), "--json", "--no-pose", "--no-clip",
                                "--no-progress", "--start", "0.5s", "--every", "5", "--max-frames", "4"])
    assert json.loads(flags.stdout)["edge_f1"] == same["edge_f1"]
    plain = runner.invoke(cli, ["metrics", str(source), str(copy), "--no-pose", "--no-clip", "--no-progress"])
    assert plain.exit_code == 1 and "frame counts differ" in plain.output


@pytest.mark.parametrize("flag, target", [("-o", "noisy"), ("-o", "source"), ("--plot", "source"),
                                          ("--plot", "noisy")])
def test_metrics_refuses_to_write_over_its_inputs(videos, tmp_path, flag, target):
    source, noisy, _ = videos
    path = {"source": source, "noisy": noisy}[target]
    before = path.read_bytes()
    result = CliRunner().invoke(cli, ["metrics", str(source), str(noisy), flag, str(path), "--no-pose", "--no-clip",
                                      "--no-progress"])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == f"error: the output would overwrite the input ({path})"
    assert path.read_bytes() == before

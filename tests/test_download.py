"""``vidreal download``: what a config needs from the hub, the offline refusal, and the download
itself with the real huggingface_hub client against a hub stand-in on 127.0.0.1 (tests/hub_server.py)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hub_server import HubServer

from vidreal.cli import cli
from vidreal.config import DEFAULT_CONTROLNETS, DEFAULT_MODEL, load_config
from vidreal.download import download, plan_downloads
from vidreal.errors import ModelError
from vidreal.hub import check_hub
from vidreal.metrics.clip import DEFAULT_CLIP_MODEL
from vidreal.personalize.caption import DEFAULT_CAPTION_MODEL

ROOT = Path(__file__).resolve().parents[1]
BACKBONE_REPO = "timm/swin_base_patch4_window7_224.ms_in22k_ft_in1k"


def _repos(fetches) -> list[str]:
    return [f.repo for f in fetches]


# ----------------------------------------------------------------------------- planning
def test_the_defaults_need_sd_controlnets_clip_blip_and_the_backbone():
    fetches = plan_downloads()
    assert _repos(fetches) == [DEFAULT_MODEL, *DEFAULT_CONTROLNETS.values(), DEFAULT_CLIP_MODEL, DEFAULT_CAPTION_MODEL,
                               BACKBONE_REPO]
    sd = fetches[0].need
    assert sd.allow == ("*.json", "*.txt", "*model.safetensors") and sd.ignore == ("safety_checker/*",)
    for fetch in fetches[1:3]:
        assert fetch.need.allow == ("config.json", "diffusion_pytorch_model.safetensors")
    assert [f.key for f in fetches] == ["model", "controlnets.canny", "controlnets.pose", None, None, "classify.weights"]
    assert fetches[-1].need.allow == ("model.safetensors",)


def test_rocog_config_and_a_config_with_lora_vae_and_local_paths(tmp_path):
    assert _repos(plan_downloads(ROOT / "configs" / "rocog.yaml")) == _repos(plan_downloads())
    local = tmp_path / "cn"
    local.mkdir()
    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "model": str(tmp_path / "model.safetensors"), "controlnets": {"canny": str(local), "openpose": "org/cn-op"},
        "lora": ["latent-consistency/lcm-lora-sdv1-5:0.8", f"{lora}:0.5"],
        "classify": {"backbone": "resnet18", "pretrained": True}}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    fetches = plan_downloads(config)
    repos = _repos(fetches)
    # the single-file model reads SD 1.5's configs; local paths are left out; openpose adds its annotator
    assert repos[:3] == [DEFAULT_MODEL, "org/cn-op", "latent-consistency/lcm-lora-sdv1-5"]
    assert fetches[0].key == "model_config" and fetches[0].need.allow == ("*.json", "*.txt", "*.model")
    assert "lllyasviel/Annotators" in repos and repos[-1] == "timm/resnet18.a1_in1k"
    assert not any(str(tmp_path) in r for r in repos)
    assert fetches[2].need.allow == ("*.safetensors", "*.json")  # a LoRA: no pickles


def test_a_classify_section_without_pretrained_weights_needs_no_backbone(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"classify": {"backbone": "resnet18", "pretrained": False}}))
    assert "timm/resnet18.a1_in1k" not in _repos(plan_downloads(config))


# ----------------------------------------------------------------------------- refusals
def test_offline_refuses_in_one_line(empty_hub):
    for args in (["download"], ["download", "--dry-run"], ["download", "--to", str(empty_hub / "w")]):
        res = CliRunner().invoke(cli, args)
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert res.exit_code == 1 and len(lines) == 1, res.output
        assert lines[0].startswith("error: cannot download: the hub is offline")
    assert not (empty_hub / "w").exists() and not (empty_hub / "hub").exists()


def test_unreachable_hub_refuses_in_one_line(empty_hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    res = CliRunner().invoke(cli, ["download", "--dry-run"])
    assert res.exit_code == 1 and "the hub is unreachable (http://127.0.0.1:9)" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- the download, on the loopback
def _placeholder(folder: Path, *names: str) -> Path:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(name.encode() * 100)
    return folder


@pytest.fixture
def hub(tiny_models, empty_hub, tmp_path, monkeypatch):
    """The tiny models as hub repos (plus files a download must leave out), served on 127.0.0.1;
    HF_ENDPOINT points at it and the hub is online for this test only."""
    from huggingface_hub import constants

    sd = tmp_path / "repos" / "sd"
    shutil.copytree(tiny_models["sd"], sd)
    _placeholder(sd, "safety_checker/config.json", "safety_checker/model.safetensors", "unet/diffusion_pytorch_model.bin",
                 "unet/diffusion_pytorch_model.fp16.safetensors", "v1-5-pruned.ckpt")
    canny = shutil.copytree(tiny_models["canny"], tmp_path / "repos" / "canny")
    _placeholder(canny, "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.safetensors")
    repos = {"test-org/tiny-sd": sd, "test-org/tiny-canny": canny, "test-org/tiny-pose": tiny_models["pose"],
             DEFAULT_CLIP_MODEL: _placeholder(tmp_path / "repos" / "clip", "config.json", "vocab.json", "merges.txt",
                                              "model.safetensors", "pytorch_model.bin", "tf_model.h5"),
             DEFAULT_CAPTION_MODEL: _placeholder(tmp_path / "repos" / "blip", "config.json", "model.safetensors",
                                                 "pytorch_model.bin"),
             BACKBONE_REPO: _placeholder(tmp_path / "repos" / "swin", "config.json", "model.safetensors",
                                         "pytorch_model.bin")}
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with HubServer(repos) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


@pytest.fixture
def tiny_config(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"model": "test-org/tiny-sd", "prompt": "a person",
                                      "controlnets": {"canny": "test-org/tiny-canny", "pose": "test-org/tiny-pose"},
                                      "steps": 2, "size": 64}))
    return config


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts}


def test_dry_run_lists_the_files_and_their_sizes(hub, tiny_config, empty_hub):
    res = CliRunner().invoke(cli, ["download", "--config", str(tiny_config), "--dry-run"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    sd_line = next(line for line in lines if line.startswith("test-org/tiny-sd"))
    repo = hub.repos["test-org/tiny-sd"]
    wanted = [n for n in repo.files if n.endswith((".json", ".txt", "model.safetensors")) and
              not n.startswith("safety_checker/")]
    size = sum(repo.files[n].stat().st_size for n in wanted)
    assert f": {len(wanted)} files," in sd_line and f"{size / 1e6:.1f} MB" in sd_line
    assert lines[-1].startswith("total ") and str(empty_hub) in lines[-1]
    assert not any(m == "GET" and "/resolve/" in p for m, p, _ in hub.requests)  # nothing fetched
    assert not (empty_hub / "hub" / "models--test-org--tiny-sd" / "snapshots").exists()


def test_download_into_the_cache_then_the_check_passes_offline(hub, tiny_config, empty_hub, monkeypatch):
    res = CliRunner().invoke(cli, ["download", "--config", str(tiny_config), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "fetched 6 models into the Hugging Face cache" in res.output
    snapshot = next((empty_hub / "hub" / "models--test-org--tiny-sd" / "snapshots").iterdir())
    files = _files(snapshot)
    assert "model_index.json" in files and "unet/diffusion_pytorch_model.safetensors" in files
    assert not any(f.startswith("safety_checker/") or f.endswith((".bin", ".ckpt", "fp16.safetensors")) for f in files)
    clip = _files(next((empty_hub / "hub" / "models--openai--clip-vit-base-patch32" / "snapshots").iterdir()))
    assert clip == {"config.json", "vocab.json", "merges.txt", "model.safetensors"}

    # a second run fetches nothing again
    before = sum(1 for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p)
    assert CliRunner().invoke(cli, ["download", "--config", str(tiny_config), "--no-progress"]).exit_code == 0
    assert sum(1 for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p) == before

    # offline now: every model the config needs is found in the cache (translate's up-front check passes)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert check_hub([f.need for f in plan_downloads(tiny_config)]) is True


def test_download_to_a_folder_writes_a_config_pointing_at_them(hub, tiny_config, tmp_path):
    weights = tmp_path / "weights"
    res = CliRunner().invoke(cli, ["download", "--config", str(tiny_config), "--to", str(weights), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in weights.iterdir()) == sorted(
        ["tiny-sd", "tiny-canny", "tiny-pose", "clip-vit-base-patch32", "blip-image-captioning-base",
         BACKBONE_REPO.split("/")[1], "vidreal.yaml"])
    assert not (weights / "tiny-sd" / "safety_checker").exists()
    assert f"--model {weights / 'tiny-sd'}" in res.output and f"--clip-model {weights / 'clip-vit-base-patch32'}" \
        in res.output and f"--controlnet canny={weights / 'tiny-canny'}" in res.output
    written = yaml.safe_load((weights / "vidreal.yaml").read_text())
    assert written["model"] == str(weights / "tiny-sd") and written["controlnets"]["pose"] == str(weights / "tiny-pose")
    assert written["classify"]["weights"] == str(weights / BACKBONE_REPO.split("/")[1] / "model.safetensors")
    assert written["prompt"] == "a person" and written["steps"] == 2  # the rest of the config kept
    cfg = load_config(weights / "vidreal.yaml")  # a valid config whose models are all local folders
    assert (Path(cfg.model) / "model_index.json").is_file()
    assert all((Path(path) / "config.json").is_file() for path in cfg.controlnets.values())


@pytest.mark.slow
def test_the_written_config_translates_offline(hub, tiny_config, samples, tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    res = CliRunner().invoke(cli, ["download", "--config", str(tiny_config), "--to", str(weights), "--no-progress"])
    assert res.exit_code == 0, res.output
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out.png"
    res = CliRunner().invoke(cli, ["translate", str(samples / "objects" / "car" / "car_000.png"), "-o", str(out),
                                   "--config", str(weights / "vidreal.yaml"), "--device", "cpu", "--no-progress"])
    assert res.exit_code == 0, res.output
    recorded = yaml.safe_load(Path(str(out) + ".vidreal.yaml").read_text())
    assert recorded["model"] == str(weights / "tiny-sd")


def test_an_interrupted_download_resumes(hub, tiny_config, empty_hub, monkeypatch):
    """The connection drops in the middle of a file: the client asks for the rest (Range) and the
    file is whole; files already fetched are not fetched again."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1000)  # the client keeps what came before the drop
    fetches = [f for f in plan_downloads(tiny_config) if f.repo == "test-org/tiny-canny"]
    repo = hub.repos["test-org/tiny-canny"]
    hub.drop_once["test-org/tiny-canny/diffusion_pytorch_model.safetensors"] = 5000
    folder = download(fetches)["test-org/tiny-canny"]
    weights = repo.files["diffusion_pytorch_model.safetensors"].read_bytes()
    assert (folder / "diffusion_pytorch_model.safetensors").read_bytes() == weights
    resolve = f"/test-org/tiny-canny/resolve/{repo.sha}/diffusion_pytorch_model.safetensors"
    ranges = [r for m, p, r in hub.requests if m == "GET" and p == resolve]
    assert ranges[0] is None and len(ranges) == 2 and 0 < int(ranges[1].removeprefix("bytes=").rstrip("-")) <= 5000
    assert _files(folder) == {"config.json", "diffusion_pytorch_model.safetensors"}


def test_repos_the_hub_does_not_have_are_named_after_the_others_are_fetched(hub, tmp_path, empty_hub):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": "test-org/tiny-sd", "controlnets": {"canny": "runs/my-canny"}}))
    with pytest.raises(ModelError, match=r"4 of 5 fetched; could not get runs/my-canny \(ControlNet canny\): no such "
                                         "repository"):
        download(plan_downloads(config))
    assert (empty_hub / "hub" / "models--test-org--tiny-sd" / "snapshots").is_dir()

"""Shared fixtures: offline hub, the project's samples, and tiny models built once per run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def samples() -> Path:
    return ROOT / "samples"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny random SD 1.5-architecture model + canny/pose ControlNets, built by the real tool.

    Returns {"sd": folder, "canny": folder, "pose": folder, "taesd": folder, "vae-kl": folder} (the last two:
    an AutoencoderTiny and another AutoencoderKL, for ``--vae``), laid out as users download them.
    """
    out = tmp_path_factory.mktemp("tiny_models")
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_tiny_models.py"), str(out)], check=True)
    return {"sd": out / "sd", "canny": out / "controlnet-canny", "pose": out / "controlnet-pose",
            "taesd": out / "taesd", "vae-kl": out / "vae-kl"}


@pytest.fixture()
def empty_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache (through HF_HOME) with the hub offline."""
    home = tmp_path / "hf_home"
    home.mkdir()
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home

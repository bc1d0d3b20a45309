"""Shared fixtures: offline hub, the project's samples, tiny models built once per run, a Translator
on them loaded once per test module, and a random clip."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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


@pytest.fixture(scope="module")
def translator(tiny_models, request):
    """A Translator on the tiny models, on the CPU in fp32, loaded once per test module (a module's
    tests may change it, e.g. compile it; other modules get their own). Its ControlNets read canny
    and pose, or the kinds the module names in ``CONTROLNETS`` (e.g. ``("canny",)``)."""
    from vidreal.pipeline import Translator

    kinds = getattr(request.module, "CONTROLNETS", ("canny", "pose"))
    return Translator.from_pretrained(tiny_models["sd"], {kind: tiny_models[kind] for kind in kinds},
                                      device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def clip() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(frames, {"canny": maps, "pose": maps}): random uint8 (6, 32, 32, 3) each, seed 0."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    return frames, {kind: rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8) for kind in ("canny", "pose")}


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

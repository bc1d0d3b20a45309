"""vidreal.runtime: one home for device/dtype, hub access, error text, frame validation, finite
numbers and shared constants, and every module using it (no copies left)."""
from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vidreal import runtime
from vidreal.errors import ConfigError, InputError
from vidreal.runtime import (
    check_finite, check_frames, first_line, hub_offline, hub_reachable, resolve_device, resolve_dtype,
)

PACKAGE = Path(runtime.__file__).parent


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE.parent).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- device / dtype
def test_resolve_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_mps_available", lambda: True)
    assert resolve_device(None) == torch.device("mps") == resolve_device("auto")
    assert resolve_device(" MPS ") == torch.device("mps")
    monkeypatch.setattr(runtime, "_mps_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(ConfigError, match="MPS is not available"):
        resolve_device("mps")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda:0")
    with pytest.raises(ConfigError, match="unknown device 'gpu0'; use auto, cpu, cuda, cuda:N or mps"):
        resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None) == torch.device("cuda")


def test_resolve_dtype_half_on_gpus_full_on_cpu():
    assert resolve_dtype(None, "cpu") == torch.float32
    assert resolve_dtype("auto", "mps") == torch.float16 == resolve_dtype(None, "cuda")
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(ConfigError, match="unknown dtype 'int8'"):
        resolve_dtype("int8", "cpu")


def test_every_module_uses_the_one_device_resolver(monkeypatch):
    """Each module that picks a device resolves it here: an MPS-only machine gets MPS everywhere."""
    import importlib

    from vidreal import flow
    from vidreal.metrics import clip
    from vidreal.personalize import caption, dreambooth, textual_inversion
    from vidreal.pipeline import loading

    train = importlib.import_module("vidreal.classify.train")  # the package exports a function `train`
    run = importlib.import_module("vidreal.classify.run")
    for module in (loading, train, run, clip, flow, dreambooth, textual_inversion, caption):
        assert getattr(module, "resolve_device", None) is runtime.resolve_device, module.__name__
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_mps_available", lambda: True)
    assert train.resolve_device(None) == torch.device("mps")  # classify had no MPS before


def test_no_module_resolves_a_device_or_the_hub_state_itself():
    """No copies: device picking, the offline switch and first-line helpers live in runtime only."""
    own = {"resolve_device", "resolve_dtype", "check_device", "hub_offline", "_hub_offline", "_first_line",
           "_one_line", "first_line", "check_frames", "_check_frames", "check_finite"}
    found = []
    for name, tree in _modules():
        if name == "vidreal/runtime.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name in own:
                found.append(f"{name}: def {node.name}")
            if isinstance(node, ast.Constant) and node.value in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
                found.append(f"{name}: reads {node.value}")
            if isinstance(node, ast.IfExp) and "torch.cuda.is_available()" in ast.unparse(node.test):
                found.append(f"{name}: {ast.unparse(node)}")  # an inline `"cuda" if ... else "cpu"`
    assert found == []


def test_shared_constants_have_one_home():
    """CONSISTENCY_MODES, IMAGE_EXTS and VIDEO_EXTS are assigned only in runtime.py.

    classify/data.py keeps its own IMAGE_EXTS for now: that package is being reworked on its
    own branch (the video-classification work) and switches to runtime.IMAGE_EXTS there.
    """
    allowed = {("vidreal/classify/data.py", "IMAGE_EXTS")}
    found = []
    for name, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id in ("CONSISTENCY_MODES", "IMAGE_EXTS", "VIDEO_EXTS"):
                        found.append((name, target.id))
    assert sorted(set(found) - allowed) == [("vidreal/runtime.py", "CONSISTENCY_MODES"),
                                            ("vidreal/runtime.py", "IMAGE_EXTS"), ("vidreal/runtime.py", "VIDEO_EXTS")]
    from vidreal import config, io, options

    assert config.CONSISTENCY_MODES is options.CONSISTENCY_MODES is runtime.CONSISTENCY_MODES
    assert io.IMAGE_EXTS is runtime.IMAGE_EXTS and io.VIDEO_EXTS is runtime.VIDEO_EXTS


def test_one_logger_convention():
    """Every module logs through logging.getLogger(__name__), i.e. under the "vidreal" logger;
    only the CLI and the logging scheme (vidreal/logs.py) name other loggers, to configure them."""
    odd = []
    for name, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "logging.getLogger":
                arg = ast.unparse(node.args[0]) if node.args else ""
                # the CLI and vidreal/logs.py (the logging scheme) configure the root, vidreal and library loggers
                if arg != "__name__" and name not in ("vidreal/cli/__init__.py", "vidreal/logs.py"):
                    odd.append(f"{name}: getLogger({arg})")
            if isinstance(node, ast.Assign) and ast.unparse(node.value) == "logging.getLogger(__name__)":
                if ast.unparse(node.targets[0]) != "log":
                    odd.append(f"{name}: {ast.unparse(node.targets[0])} = ...")
    assert odd == []


# ----------------------------------------------------------------------------- hub
def test_hub_offline_honours_both_switches(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert not hub_offline()
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    assert hub_offline()
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "true")
    assert hub_offline()
    assert not hub_reachable()  # offline: no connection is even tried


def test_hub_reachable_is_false_for_a_closed_port(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    assert runtime.hub_endpoint() == "http://127.0.0.1:9"
    assert not hub_reachable(timeout=1.0)


# ----------------------------------------------------------------------------- errors and values
def test_first_line():
    assert first_line(ValueError("\n  bad thing\nmore detail")) == "bad thing"
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(KeyError("k"), with_type=True) == "KeyError: 'k'"
    assert first_line(FileNotFoundError(2, "No such file or directory", "/x/y")) == "No such file or directory"
    assert first_line(OSError("[Errno 28] No space left on device")) == "No space left on device"
    assert first_line(RuntimeError("[12:01:02] src/video_reader.cc:83: cannot open")) == "cannot open"
    assert first_line(ValueError("x" * 500), limit=50) == "x" * 50


@pytest.mark.parametrize("frames,phrase", [
    (np.zeros((2, 8, 8, 3), np.float32), "float32 (2, 8, 8, 3)"),
    (np.zeros((8, 8, 3), np.uint8), "uint8 (8, 8, 3)"),
    (np.zeros((2, 8, 8, 4), np.uint8), "(2, 8, 8, 4)"),
    (np.zeros((0, 8, 8, 3), np.uint8), "(0, 8, 8, 3)"),
    ([[0]], "got list"),
])
def test_check_frames_one_validator_one_error_type(frames, phrase):
    with pytest.raises(InputError) as info:
        check_frames(frames, "source frames")
    assert phrase in str(info.value) and str(info.value).startswith("source frames must be")
    good = np.zeros((1, 2, 2, 3), np.uint8)
    assert check_frames(good) is good


def test_every_frame_check_raises_input_error(tmp_path):
    """io, conditions, metrics and the Translator's input check reject bad frames alike."""
    from vidreal import conditions, io, metrics

    bad = np.zeros((2, 8, 8, 3), np.float32)
    for call in (lambda: io.write_video(tmp_path / "v.mp4", bad, 24),
                 lambda: conditions.extract_conditions(bad, kinds=("canny",)),
                 lambda: metrics.compute_metrics(bad, bad, pose=False)):
        with pytest.raises(InputError, match=r"must be uint8 \(T, H, W, 3\) RGB with T, H, W >= 1, got float32"):
            call()
    assert list(tmp_path.iterdir()) == []


def test_check_finite():
    assert check_finite("guidance", 9) == 9.0
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(ConfigError, match=f"guidance must be a finite number, got {value!r}"):
            check_finite("guidance", value)
    with pytest.raises(ConfigError, match="must be a number, got 'x'"):
        check_finite("guidance", "x")
    with pytest.raises(ConfigError, match="must be a number, got True"):
        check_finite("guidance", True)

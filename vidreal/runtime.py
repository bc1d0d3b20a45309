"""Concerns every module shares, each written once: device and dtype, hub access, error text,
frame validation, finite numbers and the constants several modules name.

* :func:`resolve_device` / :func:`resolve_dtype`: ``None``/``"auto"`` pick cuda > mps > cpu and
  fp16 on a GPU (cuda, mps), fp32 on the CPU; a named device must exist here (ConfigError).
* :func:`hub_offline`: ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set, read at call time;
  :func:`hub_reachable`: a TCP connection to the hub endpoint opens within a few seconds.
* :func:`first_line`: the first line of an exception's message, for one-line errors.
* :func:`read_text`: a user's text file (split list, prompts file), UTF-8 with or without a BOM.
* :func:`check_frames`: uint8 ``(T, H, W, 3)`` RGB or InputError.
* :func:`check_finite`: a real, finite number or ConfigError (``nan``/``inf`` are refused).
* :func:`background_thread`: the calling thread at a lower scheduling priority (work with slack).

Logging convention: every module logs through ``log = logging.getLogger(__name__)``, so all
records sit under the ``vidreal`` logger that the CLI configures.

Torch is imported only inside the device/dtype functions, so ``io`` and ``conditions`` can use
this module without loading it.
"""
from __future__ import annotations

import difflib
import os
import re
import sys
import threading
from pathlib import Path

import numpy as np

from vidreal import checks
from vidreal.errors import ConfigError, InputError

CONSISTENCY_MODES = ("per-frame", "shared-noise", "cross-frame", "memory", "flow")
IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
VIDEO_EXTS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"})
DEVICES_HINT = "use auto, cpu, cuda, cuda:N or mps"
BACKGROUND_NICE = 10  # how much lower a background thread's priority is (Linux niceness; +10: ~1/10 the CPU share)


# --------------------------------------------------------------------------- device / dtype
def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def resolve_device(device=None):
    """``None``/``"auto"`` -> cuda if available, else mps, else cpu; otherwise the named device.

    Accepts a string (``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``) or a ``torch.device``;
    returns a ``torch.device``. Raises ConfigError for an unknown name or a backend that is not
    available here.
    """
    import torch

    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        dev = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"unknown device {device!r}; {DEVICES_HINT}") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type == "mps":
        if not _mps_available():
            raise ConfigError(f"device {device!r} requested but MPS is not available here")
    elif dev.type != "cpu":
        raise ConfigError(f"unsupported device {device!r}; {DEVICES_HINT}")
    return dev


def _dtypes() -> dict:
    import torch

    return {
        "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
        "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
        "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    }


def resolve_dtype(dtype=None, device=None):
    """``None``/``"auto"`` -> float16 on cuda and mps, float32 on cpu (``device`` None: auto;
    a named ``device`` is only read for its type here, :func:`resolve_device` checks it).

    Accepts "fp16"/"float16", "bf16"/"bfloat16", "fp32"/"float32" or a torch dtype. Half precision
    on the CPU is used only when asked for explicitly (it is slow there and some ops lack kernels).
    """
    import torch

    table = _dtypes()
    if isinstance(dtype, torch.dtype):
        if dtype not in table.values():
            raise ConfigError(f"unsupported dtype {dtype}; use fp16, bf16 or fp32")
        return dtype
    if dtype is None or (isinstance(dtype, str) and dtype.strip().lower() == "auto"):
        kind = torch.device(device).type if device is not None else resolve_device(None).type
        return torch.float16 if kind in ("cuda", "mps") else torch.float32
    key = str(dtype).strip().lower().removeprefix("torch.")
    if key not in table:
        raise ConfigError(f"unknown dtype {dtype!r}; use auto, fp16, bf16 or fp32")
    return table[key]


# --------------------------------------------------------------------------- hub access
def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set (read at call time), or
    huggingface_hub was imported in offline mode."""
    if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE"):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_endpoint() -> str:
    """The hub's base URL: ``HF_ENDPOINT`` as set at call time, else huggingface_hub's default."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when a TCP connection to the hub endpoint opens within ``timeout`` seconds.

    Never true in offline mode. It sends nothing: it only tells "no network / no such host"
    (which would otherwise cost tens of seconds of retries per model) from a hub that answers.
    """
    import socket
    from urllib.parse import urlsplit

    if hub_offline():
        return False
    url = urlsplit(hub_endpoint())
    if not url.hostname:
        return False
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- errors
def first_line(exc: BaseException, limit: int = 200, with_type: bool = False) -> str:
    """The first non-empty line of ``exc``'s message, at most ``limit`` characters.

    An OSError naming a file gives its ``strerror`` (the path is shown elsewhere); ``[Errno N]``
    and decord's ``[time] file.cc:123:`` prefixes are dropped. An empty message gives the type's
    name; ``with_type`` prefixes ``TypeName: `` to a non-empty one.
    """
    text = str(exc)
    if getattr(exc, "strerror", None) and getattr(exc, "filename", None):
        text = exc.strerror
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    while re.match(r"^\[[\d:]+\]\s+\S+:\d+:", line):  # decord's "[time] file.cc:123: " (nested)
        line = re.sub(r"^\[[\d:]+\]\s+\S+:\d+:\s*", "", line)
    if not line:
        return type(exc).__name__
    return (f"{type(exc).__name__}: {line}" if with_type else line)[:limit]


# --------------------------------------------------------------------------- text files
def read_text(path, what: str) -> str:
    """The text of a user's text file (``what`` names it: "list file", "prompts file"): UTF-8, a
    leading byte order mark (Windows editors write one) dropped. InputError when the file is
    missing or is not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found", path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what} ({exc})", path) from None


# --------------------------------------------------------------------------- values
def check_frames(frames, name: str = "frames") -> np.ndarray:
    """Return ``frames`` if it is a uint8 ``(T, H, W, 3)`` RGB array with T, H, W >= 1.

    Raises InputError quoting the type, or the dtype and shape, that were given.
    """
    if not isinstance(frames, np.ndarray):
        raise InputError(f"{name} must be a uint8 (T, H, W, 3) numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise InputError(f"{name} must be uint8 (T, H, W, 3) RGB with T, H, W >= 1, "
                         f"got {frames.dtype} {tuple(frames.shape)}")
    return frames


check_finite = checks.finite  # a real, finite number or ConfigError (one rule: vidreal.checks)


def check_keys(keys, valid, where: str | None = None, what: str = "config key") -> None:
    """ConfigError for the first of ``keys`` not in ``valid``: the closest valid name (by spelling,
    or the valid names it begins), else the valid names."""
    valid = [str(v) for v in valid]
    for key in keys:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1) or [v for v in valid if v.startswith(str(key))][:1]
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid {what}s: {', '.join(valid) or 'none'}"
            raise ConfigError(f"unknown {what} {key!r}{hint}", where)


def background_thread() -> bool:
    """Lower the calling thread's scheduling priority by :data:`BACKGROUND_NICE` (threads it starts
    inherit it). Linux gives each thread its own niceness; elsewhere (or when refused) nothing changes
    and False is returned. Lowering needs no privilege; only the thread's own work is affected."""
    if not sys.platform.startswith("linux"):  # elsewhere a thread id is no process id setpriority takes
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICE))
    except (AttributeError, OSError):  # no setpriority (Windows), or not per thread
        return False
    return True

"""Checkpoints of a personalization run: ``OUT/checkpoints/step-N`` (``accelerator.save_state``
+ ``vidreal_state.json``), written aside then renamed; the newest ones kept; resume from the latest.
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
from pathlib import Path

from vidreal.errors import ModelError
from vidreal.runtime import first_line

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_NAME = "vidreal_state.json"


def checkpoint_dirs(out: Path) -> list[tuple[int, Path]]:
    """(step, folder) of the complete checkpoints in ``out/checkpoints``, oldest first."""
    root = Path(out) / CHECKPOINTS
    found = []
    for path in root.glob("step-*") if root.is_dir() else ():
        match = re.fullmatch(r"step-(\d+)", path.name)
        if match and (path / STATE_NAME).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(out: Path) -> Path | None:
    found = checkpoint_dirs(out)
    return found[-1][1] if found else None


def save_checkpoint(accelerator, out: Path, step: int, keep: int | None = 2) -> Path:
    """``accelerator.save_state`` into ``out/checkpoints/step-N`` (written aside, then renamed).

    Keeps the newest ``keep`` checkpoints (None keeps all).
    """
    root = Path(out) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = root / f".step-{step}.tmp-{secrets.token_hex(4)}"
    try:
        accelerator.save_state(str(tmp), safe_serialization=True)
        (tmp / STATE_NAME).write_text(json.dumps({"step": step}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep is not None:
        for _, old in checkpoint_dirs(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def resume_step(accelerator, out: Path, resume: bool, hint: str) -> int:
    """The step to start from: the latest checkpoint's when ``resume`` (0 without one)."""
    checkpoint = latest_checkpoint(out) if resume else None
    if checkpoint is None:
        if resume:
            log.info("no checkpoint in %s: starting from step 0", out)
        return 0
    try:
        start = load_checkpoint(accelerator, checkpoint)
    except Exception as exc:
        raise ModelError(f"cannot resume from this checkpoint ({first_line(exc, 160)}); {hint}",
                         checkpoint) from exc
    log.info("resuming from %s (step %d)", checkpoint, start)
    return start


def load_checkpoint(accelerator, path: Path) -> int:
    """Restore models, optimizer and RNG states saved by :func:`save_checkpoint`; return its step."""
    accelerator.load_state(str(path))
    return int(json.loads((Path(path) / STATE_NAME).read_text())["step"])

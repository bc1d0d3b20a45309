"""What a personalization run writes besides its weights: the checked output folder, the
resolved settings (``vidreal_personalize.yaml``), sample grids, and a saved model moved into
place with ``model_index.json`` last (:func:`publish_folder`).
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from vidreal.errors import OutputError
from vidreal.io import atomic_output
from vidreal.personalize.checkpoints import checkpoint_dirs

CONFIG_NAME = "vidreal_personalize.yaml"
SAMPLES_NAME = "samples.png"


@dataclass
class TrainResult:
    """What a personalization run produced.

    output: the output folder; weights: the model folder (DreamBooth) or the embedding file
    (Textual Inversion); steps: optimizer steps done in total (resumed runs count the earlier
    ones); losses: float per optimizer step run in THIS call (mean over accumulated micro-steps);
    samples: the sample grid PNG (None when ``num_samples == 0``); config: the resolved settings
    written to ``OUT/vidreal_personalize.yaml``.
    """

    output: Path
    weights: Path
    steps: int
    losses: list[float]
    seconds: float
    samples: Path | None
    config: dict[str, Any] = field(default_factory=dict)


def prepare_output(out: str | Path, finished_marker: str, resume: bool) -> Path:
    """Check the output folder before training; create it.

    A folder that already holds a finished result or checkpoints is only accepted with
    ``resume`` (OutputError otherwise, so runs never mix).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError("output must be a folder, a file is in the way", out)
    if not resume:
        if (out / finished_marker).exists():
            raise OutputError("output folder already holds a trained result; choose another "
                              "--output or pass --resume to continue its checkpoints", out)
        if checkpoint_dirs(out):
            raise OutputError("output folder has checkpoints of an earlier run; pass --resume to "
                              "continue it or choose another --output", out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder ({exc.strerror or exc})", out) from exc
    return out


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` (Paths, tuples, numpy scalars made plain) as YAML, atomically."""
    from vidreal import __version__

    with atomic_output(path) as tmp:
        Path(tmp).write_text(yaml.safe_dump({"vidreal_version": __version__, **_plain(data)}, sort_keys=False))
    return Path(path)


def save_grid(images: Sequence[np.ndarray], path: Path, columns: int | None = None) -> Path:
    """Tile uint8 (H, W, 3) images into one PNG (row-major, ``columns`` wide), atomically."""
    from PIL import Image

    n = len(images)
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    h, w = images[0].shape[:2]
    grid = np.zeros((rows * h, columns * w, 3), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = image
    with atomic_output(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return Path(path)


def generate_samples(pipe, prompts: Sequence[str], resolution: int, steps: int, seed: int,
                     batch_size: int = 4, progress: bool = False) -> list[np.ndarray]:
    """text2img with a StableDiffusionPipeline: uint8 (R, R, 3) per prompt, seeded."""
    pipe.set_progress_bar_config(disable=not progress)
    generator = torch.Generator("cpu").manual_seed(seed)
    images: list[np.ndarray] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        with torch.no_grad():
            out = pipe(chunk, height=resolution, width=resolution, num_inference_steps=steps,
                       generator=generator, output_type="np")
        images += [np.clip(np.rint(im * 255), 0, 255).astype(np.uint8) for im in out.images]
    return images


def publish_folder(saved: Path, out: Path, last: str = "model_index.json") -> None:
    """Move every entry of the fully written folder ``saved`` into ``out``; ``last`` moves last.

    Readers look for ``last`` (diffusers: model_index.json), so they never see half a model.
    """
    entries = sorted(saved.iterdir(), key=lambda p: p.name == last)
    for entry in entries:
        target = out / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(entry, target)
    saved.rmdir()

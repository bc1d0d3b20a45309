"""Training bits shared by DreamBooth and Textual Inversion.

* image folders: :func:`find_images` (recursive, sorted), :func:`check_images` (unreadable files
  dropped with a warning, none left -> InputError), :func:`load_image` (float32 (3, R, R) in
  [-1, 1], short side resized to R then centre-cropped);
* model checks that run before any training: :func:`check_model`, :func:`check_resolution`;
* reproducible randomness: every random draw of training step ``k`` comes from
  :func:`step_generator` ``(seed, k)`` and the data order from :func:`sample_indices`
  ``(seed, stream, position)``, so a resumed run sees exactly the data and noise that an
  uninterrupted run sees;
* accelerate: :func:`make_accelerator`, the shared optimisation loop :func:`run_training`
  (gradient accumulation, clipping, progress bar with the loss, checkpoints), and
  :func:`save_checkpoint` / :func:`latest_checkpoint` / :func:`load_checkpoint`
  (``OUT/checkpoints/step-N``: ``accelerator.save_state`` + ``vidreal_state.json``);
* outputs: :func:`prepare_output`, :func:`write_yaml`, :func:`save_grid`,
  :func:`publish_folder` (a saved model moved into place, ``model_index.json`` last).
"""
from __future__ import annotations

import functools
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from vidreal.errors import ConfigError, InputError, ModelError, OutputError
from vidreal.io import IMAGE_EXTS, atomic_output, probe, read_video

log = logging.getLogger("vidreal.personalize")

CHECKPOINTS = "checkpoints"
CONFIG_NAME = "vidreal_personalize.yaml"
SAMPLES_NAME = "samples.png"
STATE_NAME = "vidreal_state.json"
MIXED_PRECISIONS = ("auto", "no", "fp16", "bf16")
WEIGHT_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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


# ----------------------------------------------------------------------------- images


def find_images(sources: str | Path | Sequence[str | Path], what: str = "images") -> list[Path]:
    """Image files of a folder (recursive) or of a list of files/folders, in sorted path order.

    Raises InputError when a source does not exist or nothing with an image extension is found.
    """
    if isinstance(sources, (str, Path)):
        sources = [sources]
    found: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found += [p for p in source.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file()]
        elif source.is_file():
            found.append(source)
        else:
            raise InputError(f"{what} folder not found", source)
    if not found:
        where = sources[0] if len(sources) == 1 else None
        raise InputError(f"no {what} found (extensions: {' '.join(sorted(IMAGE_EXTS))})", where)
    return sorted(dict.fromkeys(found))


def check_images(paths: Sequence[Path], what: str = "images") -> list[Path]:
    """Keep the images whose header reads; warn about the others; InputError when none is left."""
    good, bad = [], []
    for path in paths:
        try:
            info = probe(path)
            (good if info.is_image else bad).append(path)
        except InputError:
            bad.append(path)
    if bad:
        log.warning("skipping %d unreadable %s (first: %s)", len(bad), what, bad[0])
    if not good:
        raise InputError(f"none of the {len(paths)} {what} is a readable image", paths[0].parent)
    return good


def load_image(path: Path, resolution: int, flip: bool = False) -> torch.Tensor:
    """float32 (3, R, R) in [-1, 1]: short side resized to ``resolution`` (bicubic), centre crop."""
    from PIL import Image

    rgb = read_video(path).frames[0]
    image = Image.fromarray(rgb)
    w, h = image.size
    scale = resolution / min(w, h)
    size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
    image = image.resize(size, Image.BICUBIC)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    if flip:
        array = array[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


# ----------------------------------------------------------------------------- models


def check_model(model: str | Path) -> str:
    """A diffusers model folder or hub id; a single-file checkpoint or a bad folder -> ModelError."""
    path = Path(model)
    if path.exists():
        if not path.is_dir():
            raise ModelError("training needs a diffusers model folder (model_index.json, unet/, ...) "
                             "or a hub id, got a file", path)
        if not (path / "model_index.json").is_file():
            raise ModelError("not a diffusers model folder (no model_index.json)", path)
    return str(model)


def _missing(model: str, exc: BaseException) -> ModelError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelError(f"cannot load model {model!r} ({first[:200]}); download it with "
                      f"`hf download {model}` where there is network, or pass --model PATH to a local copy")


def load_component(cls, model: str, subfolder: str | None = None, **kwargs):
    """``cls.from_pretrained(model, subfolder=...)`` with load failures turned into ModelError."""
    try:
        if subfolder is None:
            return cls.from_pretrained(model, **kwargs)
        return cls.from_pretrained(model, subfolder=subfolder, **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        raise _missing(model, exc) from exc


def load_config(cls, model: str, subfolder: str) -> dict:
    """A component's config (no weights), load failures -> ModelError."""
    try:
        return dict(cls.load_config(model, subfolder=subfolder))
    except (OSError, ValueError) as exc:
        raise _missing(model, exc) from exc


def resolution_multiple(model: str) -> int:
    """Image sizes the model accepts are multiples of this: VAE scale factor x UNet downsampling."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    vae = load_config(AutoencoderKL, model, "vae")
    unet = load_config(UNet2DConditionModel, model, "unet")
    vae_factor = 2 ** (len(vae["block_out_channels"]) - 1)
    return vae_factor * 2 ** (len(unet["block_out_channels"]) - 1)


def check_resolution(model: str, resolution: int) -> None:
    if not isinstance(resolution, int) or resolution < 1:
        raise ConfigError(f"resolution must be a positive integer, got {resolution!r}")
    multiple = resolution_multiple(model)
    if resolution % multiple:
        lower = max(multiple, resolution // multiple * multiple)
        raise ConfigError(f"resolution {resolution} is not a multiple of {multiple} (VAE scale factor x "
                          f"UNet downsampling of this model); use e.g. {lower} or {lower + multiple}")


def check_positive(**values) -> None:
    """ConfigError for the first value that is not a positive number (int where given an int)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"{name} must be positive, got {value!r}")


# ----------------------------------------------------------------------------- randomness


def step_seed(seed: int, step: int) -> int:
    """A seed for the random draws of (micro-)step ``step`` of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0]) >> 1


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator for step ``step``; draw on the CPU, then move, so devices agree."""
    return torch.Generator("cpu").manual_seed(step_seed(seed, step))


@functools.lru_cache(maxsize=8)
def _permutation(seed: int, stream: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, stream, epoch]).permutation(n)


def sample_indices(seed: int, stream: int, n: int, start: int, count: int) -> list[int]:
    """Items ``start .. start+count-1`` of an endless epoch-wise shuffled order of ``range(n)``."""
    return [int(_permutation(seed, stream, k // n, n)[k % n]) for k in range(start, start + count)]


# ----------------------------------------------------------------------------- accelerate


def resolve_mixed_precision(mixed_precision: str, device: str | None) -> str:
    """"auto" -> bf16 on a GPU that has it, else fp16 on GPU, "no" on CPU/MPS."""
    if mixed_precision not in MIXED_PRECISIONS:
        raise ConfigError(f"mixed_precision must be one of {', '.join(MIXED_PRECISIONS)}, got {mixed_precision!r}")
    on_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if mixed_precision == "auto":
        if not on_cuda:
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if mixed_precision != "no" and not on_cuda:
        raise ConfigError(f"mixed_precision {mixed_precision!r} needs a CUDA device; use 'no' on {device or 'cpu'}")
    return mixed_precision


def check_device(device: str | None) -> str | None:
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"device {device!r} is not available (CUDA devices: {torch.cuda.device_count()})")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} is not available")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unsupported device {device!r}; use cpu, cuda, cuda:N or mps")
    return str(dev)


def make_accelerator(device: str | None, mixed_precision: str):
    """An ``accelerate.Accelerator`` on ``device`` (None = auto) with ``mixed_precision``.

    Gradient accumulation is done by :func:`run_training` itself (so resuming never depends on
    accelerate's internal micro-step counter). One process may train several times (tests, a
    notebook): a single-process state left by an earlier run with other settings is reset.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if device is not None and device.startswith("cuda:"):
        torch.cuda.set_device(torch.device(device))
    cpu = device == "cpu"
    try:
        return Accelerator(mixed_precision=mixed_precision, cpu=cpu)
    except ValueError as exc:
        if "already been initialized" not in str(exc) or AcceleratorState().num_processes != 1:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(mixed_precision=mixed_precision, cpu=cpu)


def make_optimizer(params, lr: float, device: torch.device, use_8bit: bool = True,
                   weight_decay: float = 1e-2):
    """8-bit AdamW (bitsandbytes) on CUDA when installed, else torch AdamW; the choice is logged.

    Returns (optimizer, name).
    """
    if use_8bit and device.type == "cuda":
        try:
            import bitsandbytes as bnb

            log.info("optimizer: 8-bit AdamW (bitsandbytes)")
            return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay), "adamw-8bit"
        except ImportError:
            log.info("optimizer: torch AdamW (bitsandbytes is not installed: pip install bitsandbytes for 8-bit Adam)")
    else:
        why = "8-bit Adam off" if not use_8bit else f"8-bit Adam needs CUDA, training on {device.type}"
        log.info("optimizer: torch AdamW (%s)", why)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay), "adamw"


# ----------------------------------------------------------------------------- checkpoints


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
        raise ModelError(f"cannot resume from this checkpoint ({str(exc).splitlines()[0][:160]}); {hint}",
                         checkpoint) from exc
    log.info("resuming from %s (step %d)", checkpoint, start)
    return start


def load_checkpoint(accelerator, path: Path) -> int:
    """Restore models, optimizer and RNG states saved by :func:`save_checkpoint`; return its step."""
    accelerator.load_state(str(path))
    return int(json.loads((Path(path) / STATE_NAME).read_text())["step"])


# ----------------------------------------------------------------------------- the loop


def run_training(accelerator, step_fn: Callable[[int], torch.Tensor], params: Iterable[torch.Tensor],
                 optimizer, *, steps: int, start_step: int = 0, accumulation: int = 1,
                 max_grad_norm: float | None = 1.0, after_step: Callable[[], None] | None = None,
                 out: Path, checkpoint_every: int | None = None, keep_checkpoints: int | None = 2,
                 progress: bool = True, desc: str = "training") -> list[float]:
    """Optimizer steps ``start_step .. steps-1``; returns each step's loss (float).

    ``step_fn(k)`` computes the loss of micro-step ``k = step * accumulation + i`` (all its
    randomness derives from ``k``); gradients of ``accumulation`` micro-steps are summed (loss
    divided by ``accumulation``) before each optimizer step. ``after_step()`` runs after each
    optimizer step (Textual Inversion restores frozen embedding rows there). A checkpoint is
    saved after every ``checkpoint_every``-th step.
    """
    from vidreal.progress import bar as tqdm  # tqdm on a terminal, plain lines in a log, off under -q

    params = list(params)
    losses: list[float] = []
    bar = tqdm(total=steps, initial=start_step, desc=desc, disable=not progress, unit="step")
    try:
        for step in range(start_step, steps):
            total = 0.0
            for micro in range(accumulation):
                with accelerator.autocast():
                    loss = step_fn(step * accumulation + micro)
                accelerator.backward(loss / accumulation)
                total += float(loss.detach()) / accumulation
            if max_grad_norm:
                accelerator.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if after_step is not None:
                after_step()
            if not np.isfinite(total):
                log.warning("step %d: loss is %s", step + 1, total)
            losses.append(total)
            bar.set_postfix(loss=f"{total:.4f}")
            bar.update(1)
            if checkpoint_every and (step + 1) % checkpoint_every == 0:
                save_checkpoint(accelerator, out, step + 1, keep_checkpoints)
    finally:
        bar.close()
    return losses


# ----------------------------------------------------------------------------- outputs


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


def free_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

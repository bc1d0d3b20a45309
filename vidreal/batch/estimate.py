"""``vidreal batch --estimate``: what a batch would translate and how long it would take; writes nothing.

    estimate = estimate_batch("syn/ground", "out/ground", load_config("configs/rocog.yaml"))
    print(estimate.table())

1. Items: those ``run_batch`` would translate, found by the same checks and skip rules (an
   existing ``OUT_DIR/manifest.jsonl`` is only read; OUT_DIR is not created).
2. Frames: each item's frame count after frame selection (``vidreal.selection``), read from its
   container (``vidreal.io.quick_probe``: no frame decoded). An item that cannot be opened, or
   whose selection does not fit it, is counted as one that would fail, with its reason.
3. Warm-up: the first item's first ``chunk_size`` kept frames (n) are translated through the
   real Translator exactly as the batch would (conditions, metrics and gate scores included): once
   to warm the model up (CUDA kernels, ``--compile``), then timed with n frames and with 1 frame.
   The two times give the cost of a frame, (t_n - t_1) / (n - 1), and of an item apart from its
   frames (opening, detectors, encoder), t_1 - that. Outputs go to a temporary folder that is
   removed.
4. Projection: (items x seconds per item + frames x seconds per frame) / workers. Workers: 1 for
   the local executor; for the ray executor, ``workers`` or the count it would start on the
   cluster (one per GPU), each assumed as fast as the device timed here.
"""
from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from vidreal import selection
from vidreal.batch import check_batch, is_current
from vidreal.batch.executors import import_ray, keypoints_path, one_line, ray_workers
from vidreal.batch.items import output_rel, safe_paths
from vidreal.batch.manifest import MANIFEST_NAME, read_manifest
from vidreal.config import TranslateConfig, load_config
from vidreal.errors import InputError, VidrealError
from vidreal.io import quick_probe
from vidreal.progress import bar as tqdm
from vidreal.prompts import Prompts

log = logging.getLogger(__name__)

SHOWN_FAILURES = 5  # items that would fail, listed by name


@dataclass
class Estimate:
    """What :func:`estimate_batch` found. ``seconds_per_frame`` is None when nothing is left to
    translate (then there was no warm-up)."""

    in_dir: Path
    out_dir: Path
    items: int = 0  # items to translate
    frames: int = 0  # their frames, after frame selection
    skipped: int = 0  # items a rerun skips (done with this config)
    failing: list[tuple[str, str]] = field(default_factory=list)  # (item, one-line reason)
    workers: int = 1
    warmup_item: str | None = None
    warmup_frames: int = 0
    warmup_seconds: float = 0.0  # the timed run of warmup_frames frames
    seconds_per_frame: float | None = None
    seconds_per_item: float = 0.0  # an item's cost apart from its frames
    device: str = ""

    @property
    def seconds(self) -> float:
        """The projected wall time of the translation (model loading left out)."""
        if self.seconds_per_frame is None:
            return 0.0
        return (self.items * self.seconds_per_item + self.frames * self.seconds_per_frame) / self.workers

    def table(self) -> str:
        lines = [f"estimate for {self.in_dir} -> {self.out_dir} (nothing written)",
                 f"{'items':<10} {self.items} to translate, {self.skipped} already done, "
                 f"{len(self.failing)} would fail",
                 f"{'frames':<10} {self.frames} to translate (after frame selection)"]
        if self.seconds_per_frame is not None:
            lines.append(f"{'warm-up':<10} {self.warmup_frames} frame(s) of {self.warmup_item} in "
                         f"{self.warmup_seconds:.2f} s on {self.device}: {self.seconds_per_frame:.3f} s/frame "
                         f"+ {self.seconds_per_item:.3f} s/item")
            lines.append(f"{'projected':<10} {duration(self.seconds)} = ({self.seconds_per_frame:.3f} s x "
                         f"{self.frames} frames + {self.seconds_per_item:.3f} s x {self.items} items) / "
                         f"{self.workers} worker(s)")
        else:
            lines.append(f"{'projected':<10} nothing to translate")
        if self.failing:
            lines.append("would fail:")
            lines += [f"  {rel}: {reason}" for rel, reason in self.failing[:SHOWN_FAILURES]]
            if len(self.failing) > SHOWN_FAILURES:
                lines.append(f"  ... and {len(self.failing) - SHOWN_FAILURES} more")
        return "\n".join(lines)


def duration(seconds: float) -> str:
    """``42.0 s``, ``12.5 min``, ``3.2 h``, ``15.1 days (362 h)``."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days ({seconds / 3600:.0f} h)"


def estimate_batch(in_dir, out_dir, config: TranslateConfig | None = None, *, pattern=None, extensions=None,
                   list_file=None, root=None, executor: str = "local", workers: int | None = None,
                   gpus_per_worker: float | None = None, ray_address: str | None = None, overwrite: bool = False,
                   overlap=None, progress: bool = True, metrics: bool = False, translator=None,
                   min_edge_f1=None, min_pose_pck=None, keypoints: bool = False, sheet=None,
                   warmup_frames: int | None = None, clock=time.perf_counter) -> Estimate:
    """Count what ``run_batch`` (same arguments) would translate and project its time; writes
    nothing under OUT_DIR (see the module docstring). ``warmup_frames``: frames per warm-up run
    (default ``config.chunk_size``); ``clock``: the warm-up's timer (seconds). Raises VidrealError as ``run_batch`` does for problems of the
    whole batch; ``overlap`` and ``sheet`` do not change the estimate."""
    config = config if config is not None else load_config()
    in_root, out_dir, entries, gate = check_batch(
        in_dir, out_dir, config, pattern=pattern, extensions=extensions, list_file=list_file, root=root,
        executor=executor, workers=workers, gpus_per_worker=gpus_per_worker, min_edge_f1=min_edge_f1,
        min_pose_pck=min_pose_pck, keypoints=keypoints, sheet=sheet)
    if executor == "ray":
        import_ray()
    prompts = Prompts(config, in_root)
    latest = read_manifest(out_dir / MANIFEST_NAME)
    fingerprint = config.fingerprint()
    in_res, out_res = in_root.resolve(), out_dir.resolve()
    result = Estimate(Path(in_dir), out_dir)
    todo = []  # (rel, src, prompt, kept frames)
    claimed = set()
    with tqdm(entries, unit="item", desc="counting", disable=not progress) as items:
        for entry in items:
            try:
                src, dst, output = safe_paths(in_res, out_res, entry.rel)
                if output in claimed:
                    raise InputError(f"output {output!r} is also the output of another item")
                claimed.add(output)
                prompt = prompts(entry.rel)
                if not overwrite and is_current(latest.get(entry.rel), fingerprint, prompt, output, dst, gate,
                                                keypoints):
                    result.skipped += 1
                    continue
                frames = len(selection.select(quick_probe(src), **selection.of(config)).indices)
            except VidrealError as exc:
                result.failing.append((entry.rel, one_line(exc, str(in_res / entry.rel))))
                continue
            todo.append((entry.rel, src, prompt, frames))
    result.items = len(todo)
    result.frames = sum(item[3] for item in todo)
    if not todo:
        return result
    if executor == "ray":
        result.workers = ray_workers(ray_address, workers, gpus_per_worker)
    structure = (True if gate.needs_pose else "edges") if gate.active else False
    _warm_up(result, todo, config, translator, metrics, structure, keypoints, warmup_frames, clock)
    return result


def _warm_up(result: Estimate, todo, config, translator, metrics, structure, keypoints, warmup_frames,
             clock) -> None:
    """Time the first item that translates (see the module docstring) into ``result``."""
    from vidreal.translate import load_translator, translate_file

    translator = translator if translator is not None else load_translator(config)
    want = warmup_frames or config.chunk_size
    errors = []
    for rel, src, prompt, frames in todo[:3]:  # a broken first item does not stop the estimate
        n = min(want, frames)
        try:
            with tempfile.TemporaryDirectory(prefix="vidreal-estimate-") as tmp:
                dst = Path(tmp) / output_rel(Path(src).name)  # the output type the batch writes

                def run(frames: int):
                    start = clock()
                    out = translate_file(src, dst, dataclasses.replace(config, max_frames=frames), translator=translator,
                                         progress=False, prompt=prompt, record=False, metrics=metrics,
                                         structure=structure, keypoints=keypoints_path(dst) if keypoints else None)
                    return out.n_frames, clock() - start

                run(n)  # warm-up: kernels, caches, torch.compile
                n, t_n = run(n)
                t_1 = run(1)[1] if n > 1 else t_n
        except VidrealError as exc:
            errors.append(f"{rel}: {one_line(exc, str(src))}")
            continue
        per_frame = (t_n - t_1) / (n - 1) if n > 1 else t_n
        if not 0 < per_frame <= t_n / n:  # timing noise (a shared machine): frames only
            per_frame = t_n / n
        result.warmup_item, result.warmup_frames, result.warmup_seconds = rel, n, t_n
        result.seconds_per_frame = per_frame
        result.seconds_per_item = max(t_n - n * per_frame, 0.0)
        result.device = f"{translator.device} ({str(translator.pipe.unet.dtype).replace('torch.', '')})"
        return
    raise InputError("the warm-up could not translate any of the first items: " + "; ".join(errors))

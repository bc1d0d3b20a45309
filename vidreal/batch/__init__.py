"""Batch translation of a dataset folder or split list: layout mirrored, manifest, resume, Ray.

    result = run_batch("syn/ground", "out/ground", load_config("configs/rocog.yaml"))
    print(result.table())

* Items: media files under IN_DIR (recursive, sorted, hidden names skipped, ``pattern`` and
  ``extensions`` filter them), or the lines of a split list (``relative/path label``) under
  ``root``. Outputs mirror each item's relative path under OUT_DIR; see ``items.output_rel``
  for the extension rules. With a list, the matching list of the translated items (output
  paths, the same label columns) is written to OUT_DIR under the list's file name; a list that
  lies there itself is refused before anything is done (an input is never overwritten).
* Manifest ``OUT_DIR/manifest.jsonl`` (see ``manifest.py``): a rerun skips an item whose latest
  record is "done" with the same config hash and prompt and whose output file exists; anything
  else is redone (``overwrite=True`` redoes all). Outputs are written atomically and temporary
  files of a killed run are removed at start, so killing a batch at any moment and rerunning it
  finishes the job with every output written once and whole.
* Failures are isolated: a bad item gets a "failed" record with a one-line reason and the batch
  goes on. Unsafe items (symlinks leaving IN_DIR, symlink loops, broken links, ``..`` in list
  paths) fail the same way. OUT_DIR's manifest.jsonl and batch.vidreal.yaml are never followed
  when they are symlinks (the batch refuses to start).
* Disk full (or any write error) on the batch's own files - the manifest, ``batch.vidreal.yaml`` -
  stops the batch with one line (exit 1). What is kept: every output already written (each is
  whole; those recorded in the manifest are skipped by a rerun, the others are redone). Item
  outputs that cannot be written fail as items.
* Metrics (``metrics=True``): each item's ``vidreal.metrics`` numbers (source vs output) go into
  its manifest record; the result holds their means over every item done with the current config
  (this run's and earlier runs'), printed under the summary and written to ``batch.vidreal.yaml``.
* Gate (``min_edge_f1``, ``min_pose_pck``; ``vidreal.gate``): each output's edge F1 / pose PCK
  against its source, scored from the frames in memory while it is translated. An item below a
  threshold keeps its output file but is recorded as "rejected" with its scores and the reasons,
  is left out of the written split list and is counted in the summary. A rerun skips rejected
  items like done ones, unless the thresholds or the config changed (then they are redone).
* Executors (``executors.py``): ``local`` (one model in this process) or ``ray`` (one actor per
  worker, each with its model loaded once). The Ray cluster is started or joined, and its workers
  planned, before OUT_DIR is touched: a cluster that cannot be reached leaves nothing behind. A
  cluster the batch started is shut down when it ends, also when it stops on an error.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from vidreal.progress import DatasetRate
from vidreal.progress import bar as tqdm  # tqdm on a terminal, plain lines in a log, off under -q

from vidreal.batch.executors import LocalExecutor, RayExecutor, Worker, keypoints_path, one_line
from vidreal.batch.items import Entry, check_dirs, output_rel, read_list, safe_paths, walk
from vidreal.batch.manifest import MANIFEST_NAME, Manifest, clean_temp_files, now, read_manifest, refuse_symlink
from vidreal.config import TranslateConfig, load_config, write_config
from vidreal.errors import ConfigError, InputError, OutputError, VidrealError
from vidreal.io import atomic_output
from vidreal.prompts import Prompts

__all__ = ["run_batch", "BatchResult", "read_manifest", "output_rel", "MANIFEST_NAME", "CONFIG_NAME",
           "LocalExecutor", "RayExecutor", "Worker"]

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
CONFIG_NAME = "batch.vidreal.yaml"  # the resolved config of the latest run, beside the manifest


@dataclass
class BatchResult:
    """What one run did. ``failures``: [(input rel, one-line reason)]; ``frames``: frames
    translated in this run; ``seconds``: the run's wall time."""

    out_dir: Path
    manifest: Path
    list_file: Path | None = None
    done: int = 0
    skipped: int = 0
    failed: int = 0
    rejected: int = 0  # translated (or skipped) items the gate rejected; also in ``rejections``
    frames: int = 0
    skipped_frames: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # name -> mean over items that have it
    metrics_items: int = 0  # items the means are taken over
    rejections: list[tuple[str, str]] = field(default_factory=list)  # (input rel, reasons)
    sheet: Path | None = None

    @property
    def ok(self) -> bool:
        return self.failed == 0

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def table(self) -> str:
        """The end-of-run summary: counts, frames, throughput, then each failed item."""
        rows = [("done", self.done, self.frames), ("skipped", self.skipped, self.skipped_frames),
                ("failed", self.failed, "-")]
        if self.rejected:
            rows.append(("rejected", self.rejected, "-"))
        rows.append(("total", self.done + self.skipped + self.failed + self.rejected, self.frames + self.skipped_frames))
        lines = [f"{'status':<8} {'items':>8} {'frames':>9}"]
        lines += [f"{name:<8} {items:>8} {frames:>9}" for name, items, frames in rows]
        lines.append(f"{self.seconds:.1f} s, {self.frames_per_second:.2f} frames/s translated")
        if self.metrics:
            lines.append(f"metrics, mean over {self.metrics_items} item(s) (see manifest.jsonl for each):")
            lines += [f"  {name:<26} {value:.4f}" for name, value in self.metrics.items()]
        if self.failures:
            lines.append("failed items:")
            lines += [f"  {rel}: {reason}" for rel, reason in self.failures]
        if self.rejections:
            lines.append("rejected items (outputs kept, left out of the list):")
            lines += [f"  {rel}: {reason}" for rel, reason in self.rejections]
        return "\n".join(lines)


def run_batch(in_dir, out_dir, config: TranslateConfig | None = None, *, pattern: str | None = None,
              extensions=None, list_file=None, root=None, executor: str = "local",
              workers: int | None = None, gpus_per_worker: float | None = None,
              ray_address: str | None = None, overwrite: bool = False, overlap: bool | None = None,
              progress: bool = True, metrics: bool = False, translator=None, min_edge_f1: float | None = None,
              min_pose_pck: float | None = None, keypoints: bool = False, sheet=None) -> BatchResult:
    """Translate every item of IN_DIR (or of ``list_file``) into OUT_DIR, resumably.

    in_dir: folder walked recursively; with ``list_file`` the list's paths are relative to
        ``root`` (default ``in_dir``).
    pattern: fnmatch glob on the relative path or any trailing part of it (``*.mp4``, ``Halt/*``).
    extensions: ".mp4,.png" or a list; default every supported video and image type.
    executor: "local" (default; ``translator`` may pass an already loaded Translator) or "ray"
        (``workers`` actors on ``gpus_per_worker`` GPUs each; default one per GPU of the cluster,
        or 1 on CPU; ``ray_address`` as for ``ray.init``).
    overwrite: redo every item, whatever the manifest says.
    overlap: prepare the next item while translating the current one (None: when the model runs
        on a GPU). metrics: score each item (source vs output) and report the means.
    min_edge_f1, min_pose_pck: the gate's thresholds in [0, 1] (see the module docstring).
    keypoints: write each output's source pose keypoints beside it (``OUTPUT.keypoints.json``).
    sheet: a ``.png`` path for a contact sheet of the outputs (``vidreal.batch.sheet``), with ``report.html``
        beside it.
    Returns a BatchResult; failed items are in it (and the manifest), not raised. Raises
    VidrealError for problems of the whole batch (folders, config, model, Ray).
    """
    started = time.perf_counter()
    # 1. Check everything that needs no model; start or join the Ray cluster before touching OUT_DIR.
    config = config if config is not None else load_config()
    in_root, out_dir, entries, gate = check_batch(
        in_dir, out_dir, config, pattern=pattern, extensions=extensions, list_file=list_file, root=root,
        executor=executor, workers=workers, gpus_per_worker=gpus_per_worker, min_edge_f1=min_edge_f1,
        min_pose_pck=min_pose_pck, keypoints=keypoints, sheet=sheet)
    prompts = Prompts(config, in_root)
    structure = (True if gate.needs_pose else "edges") if gate.active else False
    if executor == "ray":
        runner = RayExecutor(config, workers, gpus_per_worker, ray_address, overlap, metrics=metrics,
                             structure=structure, keypoints=keypoints)
        runner.connect()
    else:  # loads the model when it first runs: not at all when every item is skipped
        runner = LocalExecutor(config, translator, overlap, progress, metrics, structure, keypoints)

    result = BatchResult(out_dir=out_dir, manifest=out_dir / MANIFEST_NAME)
    # 2. Prepare OUT_DIR; its manifest stays locked until the report is written. The executor is
    # closed however the batch ends (a Ray cluster the batch started is shut down).
    with closing(runner), _prepare_out_dir(out_dir, config, in_root) as manifest:
        fingerprint = config.fingerprint()
        with tqdm(total=len(entries), unit="item", desc="batch", disable=not progress,
                  bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} items [{elapsed}{postfix}]") as bar:
            tally = _Tally(result, manifest, fingerprint, gate, bar)
            # 3. Plan the items: safety, output names, prompts, skip decisions.
            jobs = _plan_items(entries, in_root, out_dir, prompts, tally, overwrite=overwrite, keypoints=keypoints)
            # 4. Translate what is left.
            if jobs:
                _run_jobs(runner, jobs, tally)
        # 5. Report: the split list, the metric means, the contact sheet; then the summary.
        _report(result, entries, manifest.latest, fingerprint, in_root, list_file=list_file, metrics=metrics,
                sheet=sheet)
    result.seconds = time.perf_counter() - started
    _write_summary(result, config, in_root, gate)
    return result


@contextmanager
def _prepare_out_dir(out_dir: Path, config: TranslateConfig, in_root: Path) -> Iterator[Manifest]:
    """Create OUT_DIR and hold its manifest (locked: one batch at a time); remove the temporary files
    a killed run left and write the config, with the input root from the start (``vidreal sheet``
    finds the sources of an interrupted batch too). OutputError when OUT_DIR cannot be created."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a read-only parent, or a file on the way
        raise OutputError(f"cannot create OUT_DIR ({exc.strerror or exc})", out_dir) from None
    with Manifest(out_dir / MANIFEST_NAME) as manifest:
        removed = clean_temp_files(out_dir)
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted run", len(removed))
        write_config(out_dir / CONFIG_NAME, config, extra={"root": str(in_root.resolve())})
        yield manifest


@dataclass
class _Tally:
    """Records each item's outcome in the manifest and counts it into the BatchResult and the items
    bar (whose postfix shows the dataset's frames/s and ETA, from ``rate``, and the failures)."""

    result: BatchResult
    manifest: Manifest
    fingerprint: str  # the config's
    gate: object  # vidreal.gate.Gate
    bar: object
    rate: DatasetRate = field(default_factory=lambda: DatasetRate(0))

    def record(self, job: dict, res: dict) -> None:
        """Write the manifest record of one result (``job``: its output and prompt) and count it; the
        gate turns a done item below a threshold into a rejected one."""
        gate = self.gate
        rec = {"input": res["input"], "output": job.get("output"), "status": res["status"], "error": res["error"],
               "frames": res["frames"], "seconds": res["seconds"], "config": self.fingerprint,
               "prompt": job.get("prompt"), "time": now()}
        if "metrics" in res:
            rec["metrics"] = res["metrics"]
        if gate.active:
            rec["gate"] = gate.to_dict()
        if "scores" in res:
            rec["scores"] = res["scores"]
            reasons = gate.failures(res["scores"]) if res["status"] == "done" else []
            if reasons:
                rec["status"], rec["rejected"] = "rejected", "; ".join(reasons)
        self.manifest.append(rec)
        self._count(rec)

    def _count(self, rec: dict) -> None:
        result = self.result
        if rec["status"] in ("done", "rejected"):
            result.done += rec["status"] == "done"
            result.frames += rec["frames"] or 0
            if rec["status"] == "rejected":
                result.rejected += 1
                result.rejections.append((rec["input"], rec["rejected"]))
        else:
            result.failed += 1
            result.failures.append((rec["input"], rec["error"]))
        self.bar.set_postfix_str(f"{self.rate.text()}, {result.failed} failed", refresh=False)
        self.bar.update(1)

    def skip(self, rel: str, last: dict) -> None:
        """Count an item whose latest record ``last`` stands for this run: skipped, or rejected again."""
        if last["status"] == "rejected":  # counted as rejected, not translated again
            self.result.rejected += 1
            self.result.rejections.append((rel, last.get("rejected", "")))
        else:
            self.result.skipped += 1
            self.result.skipped_frames += last.get("frames") or 0
        self.bar.update(1)


def _plan_items(entries: list[Entry], in_root: Path, out_dir: Path, prompts: Prompts, tally: _Tally, *,
                overwrite: bool, keypoints: bool) -> list[dict]:
    """The jobs to translate, in order: each item's safety checks, output name, prompt and skip
    decision. An item that fails them is recorded as failed, a current one counted as skipped."""
    in_res, out_res = in_root.resolve(), out_dir.resolve()
    jobs, claimed = [], {}
    for entry in entries:
        info = {"output": output_rel(entry.rel), "prompt": None}
        try:
            src, dst, info["output"] = safe_paths(in_res, out_res, entry.rel)
            if info["output"] in claimed:
                raise InputError(f"output {info['output']!r} is also the output of {claimed[info['output']]!r}")
            claimed[info["output"]] = entry.rel
            info["prompt"] = prompts(entry.rel)
        except VidrealError as exc:
            tally.record(info, {"input": entry.rel, "status": "failed", "error": one_line(exc), "frames": 0,
                                "seconds": 0.0})
            continue
        last = tally.manifest.latest.get(entry.rel)
        if not overwrite and is_current(last, tally.fingerprint, info["prompt"], info["output"], dst, tally.gate,
                                        keypoints):
            tally.skip(entry.rel, last)
            continue
        jobs.append({"input": entry.rel, "src": str(src), "dst": str(dst), **info})
    return jobs


def _run_jobs(runner, jobs: list[dict], tally: _Tally) -> None:
    """Run the jobs on the executor; the driver records every result as it arrives."""
    by_rel = {job["input"]: job for job in jobs}
    tally.rate.items = len(jobs)
    for res in runner.run(jobs):
        tally.rate.add(res["frames"] or 0, res["seconds"] or 0.0)
        tally.record(by_rel[res["input"]], res)


def _report(result: BatchResult, entries: list[Entry], latest: dict, fingerprint: str, in_root: Path, *,
            list_file, metrics: bool, sheet) -> None:
    """What the run leaves beside the outputs: the split list of what was translated, the metric
    means over the dataset, the contact sheet."""
    if list_file is not None:
        result.list_file = _write_list(result.out_dir / Path(list_file).name, entries, latest, fingerprint)
    if metrics:
        records = [latest.get(entry.rel) for entry in entries]
        result.metrics, result.metrics_items = _mean_metrics(records, fingerprint)
    if sheet is not None:
        from vidreal.batch.sheet import write_report

        result.sheet = write_report(result.out_dir, sheet, root=in_root)


def _write_summary(result: BatchResult, config: TranslateConfig, in_root: Path, gate) -> None:
    """``batch.vidreal.yaml``: the config with this run's counts (and gate, metric means) under ``result:``."""
    summary = {"done": result.done, "skipped": result.skipped, "failed": result.failed,
               "root": str(in_root.resolve())}
    if gate.active:
        summary["rejected"] = result.rejected
        summary["gate"] = gate.to_dict()
    if result.metrics:
        summary["metrics_mean"] = result.metrics
        summary["metrics_items"] = result.metrics_items
    write_config(result.out_dir / CONFIG_NAME, config, extra=summary)


def check_batch(in_dir, out_dir, config: TranslateConfig, *, pattern=None, extensions=None, list_file=None,
                root=None, executor="local", workers=None, gpus_per_worker=None, min_edge_f1=None,
                min_pose_pck=None, keypoints=False, sheet=None):
    """Every check of a batch that needs no model and writes nothing (``run_batch``'s arguments):
    returns (input root, OUT_DIR, entries, Gate). Raises VidrealError naming the problem."""
    in_root, out_dir, gate = check_settings(in_dir, out_dir, config, list_file=list_file, root=root,
                                            executor=executor, workers=workers, gpus_per_worker=gpus_per_worker,
                                            min_edge_f1=min_edge_f1, min_pose_pck=min_pose_pck,
                                            keypoints=keypoints, sheet=sheet)
    entries = (read_list(list_file, pattern, extensions) if list_file is not None
               else walk(in_root, pattern, extensions))
    if not entries:
        raise InputError(f"no input files found (pattern {pattern!r}, extensions {extensions or 'all'})",
                         list_file or in_root)
    return in_root, out_dir, entries, gate


def check_settings(in_dir, out_dir, config: TranslateConfig, *, list_file=None, root=None, executor="local",
                   workers=None, gpus_per_worker=None, min_edge_f1=None, min_pose_pck=None, keypoints=False,
                   sheet=None, **_):
    """The checks of :func:`check_batch` that read no file (values and paths only; the CLI's usage
    errors): returns (input root, OUT_DIR, Gate). Raises ConfigError naming the problem."""
    if executor not in EXECUTORS:
        raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    if executor == "local" and workers not in (None, 1):
        raise ConfigError(f"workers={workers} needs the ray executor (the local one runs one model)")
    if gpus_per_worker is not None and gpus_per_worker < 0:
        raise ConfigError(f"gpus_per_worker must be >= 0, got {gpus_per_worker!r}")
    if root is not None and list_file is None:
        raise ConfigError("root is the folder of a list file's paths: give list_file too")
    from vidreal.gate import Gate

    gate = Gate(min_edge_f1, min_pose_pck)
    if keypoints and "pose" not in config.controlnets:
        raise ConfigError(f"keypoints come from the pose condition: the ControlNets read {', '.join(config.controlnets)}")
    if sheet is not None:
        from vidreal.batch.sheet import check_sheet_path

        check_sheet_path(sheet)
    in_root = Path(root if root is not None else in_dir)
    out_dir = Path(out_dir)
    check_dirs(in_root, out_dir)
    if list_file is not None and Path(list_file).name in (MANIFEST_NAME, CONFIG_NAME):
        raise ConfigError(f"the list file may not be named {Path(list_file).name!r} (the batch writes that file)")
    if list_file is not None:
        _check_list_target(Path(list_file), out_dir / Path(list_file).name)
    for own in (out_dir / MANIFEST_NAME, out_dir / CONFIG_NAME):
        refuse_symlink(own, f"OUT_DIR's {own.name}")
    return in_root, out_dir, gate


def is_current(last: dict | None, fingerprint: str, prompt, output: str, dst: Path, gate, keypoints: bool) -> bool:
    """Whether an item's latest manifest record stands for this run (a rerun skips it): done or
    rejected with the same config hash (frame selection included), prompt, output and gate, and
    its output file (and keypoints file) still there."""
    return (last is not None and last.get("status") in ("done", "rejected")
            and last.get("config") == fingerprint and last.get("prompt") == prompt
            and last.get("output") == output and dst.is_file() and last.get("gate") == gate.to_dict()
            and (not keypoints or Path(keypoints_path(dst)).is_file()))


def _check_list_target(list_file: Path, target: Path) -> None:
    """Refuse a run whose translated list (``OUT_DIR/<list name>``) would overwrite the input list
    (or any file it links to): the input list is never overwritten."""
    same = target.absolute() == list_file.absolute() or target.resolve() == list_file.resolve()
    if not same and target.exists() and list_file.exists():
        same = os.path.samefile(target, list_file)  # a hard link
    if same:
        raise ConfigError(f"the list file {list_file} is where the batch writes the list of translated items "
                          f"({target}); the input list is never overwritten: move it out of OUT_DIR or rename it")


def _mean_metrics(records: list, fingerprint: str) -> tuple[dict[str, float], int]:
    """Per-metric means over the done records (with this config) that carry metrics; a metric
    missing for an item (e.g. temporal ones for a still image) is averaged over the others."""
    values: dict[str, list[float]] = {}
    items = 0
    for rec in records:
        if not rec or rec.get("status") != "done" or rec.get("config") != fingerprint or not rec.get("metrics"):
            continue
        items += 1
        for name, value in rec["metrics"].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values.setdefault(name, []).append(float(value))
    return {name: sum(v) / len(v) for name, v in values.items()}, items


def _write_list(path: Path, entries: list[Entry], latest: dict, fingerprint: str) -> Path:
    """The split list of the translated items: each done item's output path and its label columns,
    in the input list's order (failed and rejected items are left out)."""
    lines = []
    for entry in entries:
        rec = latest.get(entry.rel)
        if rec is not None and rec.get("status") == "done" and rec.get("config") == fingerprint:
            lines.append(rec["output"] + entry.rest)
    missing = len(entries) - len(lines)
    if missing:
        log.warning("%s lists %d of %d items (the others failed or were rejected)", path.name, len(lines),
                    len(entries))
    with atomic_output(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path

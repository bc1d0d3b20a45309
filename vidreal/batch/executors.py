"""Where batch items run: one :class:`Worker` (one loaded Translator) in this process, or one per
Ray actor. Executors take jobs (plain dicts) and yield results (plain dicts) as items finish; the
driver, not the workers, writes the manifest, and closes the executor when the batch ends.

A job: ``{"input": rel, "src": absolute input path, "dst": absolute output path, "prompt": str}``.
A result: ``{"input": rel, "status": "done"|"failed", "error": str|None, "frames": int, "seconds": float}``,
plus ``"metrics": {name: number|None}`` (``vidreal.metrics.SUMMARY_KEYS``) when the worker computes them.

Overlap (``overlap=True``): ``translate_file`` runs an item as stages (``vidreal.stages``): its
decoding and condition extraction run in threads of their own, ahead of ``Translator.stream``.
The worker hands it a :class:`SharedTranslator`, which lets one item at a time use the model.
With two items in flight (a 2-thread pool locally; a Ray actor with ``max_concurrency=2`` and two
calls in flight) the next item's decoding and condition extraction run while the current one is
denoised (torch, OpenCV and mediapipe release the GIL).
``overlap=None`` (the default) overlaps when the model runs on a GPU: on a CPU both kinds of work
compete for the same cores and overlapping measured 0.95x (``tools/bench_batch.py``, 2 cores).
Without overlap a worker translates one whole item at a time (calls in flight wait their turn).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from vidreal import errors
from vidreal.errors import ConfigError, VidrealError
from vidreal.runtime import first_line

log = logging.getLogger(__name__)

RAY_MISSING = "the ray executor needs Ray: pip install 'vidreal[ray]'"


def one_line(exc: BaseException, path: str | None = None) -> str:
    """A one-line reason for a failed item: a VidrealError's message (its path dropped when it is
    the item itself), else ``Type: first line of the message``."""
    if isinstance(exc, VidrealError):
        text = exc.message if exc.path in (None, path) else str(exc)
    else:
        text = first_line(exc, 300, with_type=True)
    return text[:300]


class SharedTranslator:
    """A Translator shared by the threads of one worker, for one ``translate_file`` call.

    ``stream()`` waits for the worker's lock (the item's stages meanwhile decode and extract
    conditions ahead, as far as their queues allow) and translates; the lock is held until the
    stream ends (one item at a time uses the model and its attention processors). Everything else is the wrapped Translator's. :meth:`close` ends a
    stream that was left open (e.g. when writing failed), releasing the lock.
    ``waited``: seconds spent waiting for the lock.
    """

    def __init__(self, translator, lock: threading.Lock):
        self._translator = translator
        self._lock = lock
        self._streams: list = []
        self.waited = 0.0

    def __getattr__(self, name):
        return getattr(self._translator, name)

    def stream(self, pieces, *args, **kwargs):
        gen = self._stream(pieces, *args, **kwargs)
        self._streams.append(gen)
        return gen

    def _stream(self, pieces, *args, **kwargs):
        start = time.perf_counter()
        with self._lock:
            self.waited += time.perf_counter() - start
            yield from self._translator.stream(pieces, *args, **kwargs)

    def close(self) -> None:
        for gen in self._streams:
            gen.close()
        self._streams.clear()


class Worker:
    """Translates jobs with one Translator, loaded once (:meth:`load`), never per item.

    :meth:`process` may run in two threads at once (see the module docstring); ``overlap`` None is
    decided at :meth:`load` from the model's device.
    Every exception of an item becomes a failed result; only KeyboardInterrupt/SystemExit escape.
    """

    def __init__(self, config, translator=None, overlap: bool | None = None, progress: bool = False,
                 metrics: bool = False, structure=False, keypoints: bool = False):
        self.config = config
        self.translator = translator
        self.overlap = overlap
        self.progress = progress
        self.metrics = metrics
        self.structure = structure  # score edge F1 / pose PCK for the gate (translate_file's structure)
        self.keypoints = keypoints  # write OUTPUT.keypoints.json beside each output
        self._lock = threading.Lock()

    def load(self) -> None:
        if self.translator is None:
            from vidreal.translate import load_translator

            self.translator = load_translator(self.config, long_runs=True)  # compiled once, reused by every item
        if self.overlap is None:
            self.overlap = self.translator.device.type != "cpu"

    def process(self, job: dict) -> dict:
        """Translate and write one job; a result dict ("failed" with a one-line ``error`` on any
        failure). ``seconds`` excludes time spent waiting for the other item to finish."""
        start = time.perf_counter()
        scores = structure = None
        waited = 0.0
        try:
            self.load()
            result, waited = self._translate(job)
            status, error, frames = "done", None, result.n_frames
            if result.metrics is not None:
                scores = {key: value for key, value in result.metrics.items() if key != "settings"}
            structure = result.structure
        except Exception as exc:  # isolate the item: record it and go on
            log.debug("item %s failed", job["input"], exc_info=True)
            status, error, frames = "failed", one_line(exc, job["src"]), 0
        seconds = time.perf_counter() - start - waited
        result = {"input": job["input"], "status": status, "error": error, "frames": frames,
                  "seconds": round(seconds, 3)}
        if scores is not None:
            result["metrics"] = scores
        if structure is not None:
            result["scores"] = structure
        return result


    def _translate(self, job: dict):
        """``translate_file`` of one job, the model used by one item at a time: (TranslateResult,
        seconds spent waiting for the model)."""
        from vidreal.translate import translate_file

        def run(translator):
            return translate_file(job["src"], job["dst"], self.config, translator=translator, progress=self.progress,
                                  prompt=job["prompt"], record=False, metrics=self.metrics, structure=self.structure,
                                  keypoints=keypoints_path(job["dst"]) if self.keypoints else None)

        if not self.overlap:
            start = time.perf_counter()
            with self._lock:
                waited = time.perf_counter() - start
                return run(self.translator), waited
        shared = SharedTranslator(self.translator, self._lock)
        try:
            return run(shared), shared.waited
        finally:
            shared.close()


def keypoints_path(output) -> str:
    """Where the batch writes an output's keypoints: ``OUTPUT.keypoints.json``."""
    return str(output) + ".keypoints.json"


class LocalExecutor:
    """One Worker in this process; with overlap two jobs in flight on a 2-thread pool."""

    def __init__(self, config, translator=None, overlap: bool | None = None, progress: bool = False,
                 metrics: bool = False, structure=False, keypoints: bool = False):
        self.worker = Worker(config, translator, overlap, progress, metrics, structure, keypoints)

    def close(self) -> None:
        """Nothing to release (the executors' common interface: RayExecutor's shuts Ray down)."""

    def run(self, jobs: Iterable[dict]) -> Iterator[dict]:
        self.worker.load()  # a missing model fails the batch here, not every item; decides overlap
        if not self.worker.overlap:
            for job in jobs:
                yield self.worker.process(job)
            return
        jobs = iter(jobs)
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="vidreal-batch") as pool:
            inflight = set()
            for job in jobs:
                inflight.add(pool.submit(self.worker.process, job))
                if len(inflight) < 2:
                    continue
                finished, inflight = wait(inflight, return_when=FIRST_COMPLETED)
                yield from (future.result() for future in finished)
            while inflight:
                finished, inflight = wait(inflight, return_when=FIRST_COMPLETED)
                yield from (future.result() for future in finished)


def import_ray():
    """``ray``, or ConfigError telling how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


class RayActor:
    """The body of a Ray actor: one Worker whose Translator is loaded when the actor starts."""

    def __init__(self, config, overlap: bool | None = None, metrics: bool = False, structure=False,
                 keypoints: bool = False):
        self.error = None
        self.worker = Worker(config, overlap=overlap, metrics=metrics, structure=structure, keypoints=keypoints)
        try:
            self.worker.load()
        except Exception as exc:
            self.error = (type(exc).__name__, one_line(exc), getattr(exc, "path", None))

    def ready(self):
        """None when the model loaded, else (error class name, message, path)."""
        return self.error

    def process(self, job: dict) -> dict:
        return self.worker.process(job)


class RayExecutor:
    """Jobs spread over ``workers`` Ray actors, each holding one Translator on
    ``gpus_per_worker`` GPUs. Connects with ``ray.init(address=address)`` unless Ray is already
    initialised (None: an existing local cluster or a new one; "auto": an existing cluster).

    Defaults: one actor per GPU of the cluster (1 GPU each), or 1 CPU actor when it has none;
    1 CPU for each GPU actor, the cluster's CPUs shared out among CPU actors (Ray sets
    the actor's torch threads from it). A crashed actor is replaced (its in-flight items fail).
    """

    ready_timeout = 900.0  # seconds for actors to start and load the model

    def __init__(self, config, workers: int | None = None, gpus_per_worker: float | None = None,
                 address: str | None = None, overlap: bool | None = None,
                 metrics: bool = False, structure=False, keypoints: bool = False):
        self.config = config
        self.metrics = metrics
        self.structure, self.keypoints = structure, keypoints
        self.workers = workers
        self.gpus_per_worker = gpus_per_worker
        self.address = address
        self.overlap = overlap
        self.ray = import_ray()

    def connect(self) -> None:
        """Start or join the cluster and plan the workers (once); ConfigError when either fails."""
        if hasattr(self, "_actor_cls"):
            return
        ray = self.ray
        self._started = join_cluster(ray, self.address)
        resources = ray.cluster_resources()
        gpus, cpus = resources.get("GPU", 0), resources.get("CPU", 0)
        self.workers, self.gpus_per_worker, self.cpus_per_worker = plan_workers(
            resources, self.workers, self.gpus_per_worker)
        log.info("ray: %d worker(s), %g GPU(s) and %g CPU(s) each; cluster has %g GPUs, %g CPUs",
                    self.workers, self.gpus_per_worker, self.cpus_per_worker, gpus, cpus)
        self._actor_cls = ray.remote(RayActor).options(
            num_gpus=self.gpus_per_worker, num_cpus=self.cpus_per_worker,
            max_concurrency=1 if self.overlap is False else 2)

    def _start_actors(self, n: int) -> list:
        """``n`` new actors with their model loaded; raises VidrealError when one cannot start."""
        ray = self.ray
        actors = [self._actor_cls.remote(self.config, self.overlap, self.metrics, self.structure, self.keypoints)
                  for _ in range(n)]
        refs = [actor.ready.remote() for actor in actors]
        _, pending = ray.wait(refs, num_returns=len(refs), timeout=self.ready_timeout)
        if pending:
            for actor in actors:
                ray.kill(actor)
            raise errors.ModelError(f"{len(pending)} Ray worker(s) did not start within {self.ready_timeout:.0f} s "
                                    "(does the cluster have the resources they ask for?)")
        try:
            loaded = ray.get(refs)
        except ray.exceptions.RayError as exc:
            raise errors.ModelError(f"a Ray worker could not start: {one_line(exc)}") from None
        for error in loaded:
            if error is not None:
                name, message, path = error
                cls = getattr(errors, name, None)
                if isinstance(cls, type) and issubclass(cls, VidrealError):
                    raise cls(message, path)
                raise errors.ModelError(f"a Ray worker could not load the model: {message}")
        return actors

    def close(self) -> None:
        """Shut Ray down if this executor started it (idempotent)."""
        if getattr(self, "_started", False):
            self.ray.shutdown()
            self._started = False

    def run(self, jobs: Iterable[dict]) -> Iterator[dict]:
        self.connect()
        self._actors: list = []
        try:
            yield from self._run(iter(jobs))
        finally:
            for actor in self._actors:
                if actor is not None:
                    try:
                        self.ray.kill(actor)  # free their GPUs now, not when Ray collects them
                    except Exception:
                        pass
            self.close()

    def _run(self, jobs: Iterator[dict]) -> Iterator[dict]:
        ray = self.ray
        actors = self._actors = self._start_actors(self.workers)
        per_actor = 1 if self.overlap is False else 2
        inflight: dict = {}  # object ref -> (slot, actor, job)
        replacements_left = max(3, self.workers)

        load = [0] * len(actors)  # calls in flight per slot

        def fill(slot) -> None:
            while actors[slot] is not None and load[slot] < per_actor:
                job = next(jobs, None)
                if job is None:
                    return
                inflight[actors[slot].process.remote(job)] = (slot, actors[slot], job)
                load[slot] += 1

        for slot in range(len(actors)):
            fill(slot)
        while inflight:
            [ref], _ = ray.wait(list(inflight), num_returns=1)
            slot, actor, job = inflight.pop(ref)
            load[slot] -= 1
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                result = _failed(job, f"Ray worker died: {one_line(exc)}")
                if actors[slot] is actor:  # replace it once, not once per call it lost
                    actors[slot] = None
                    if replacements_left > 0:
                        replacements_left -= 1
                        try:
                            actors[slot] = self._start_actors(1)[0]
                        except VidrealError as error:
                            log.warning("could not replace a crashed Ray worker: %s", error)
            except Exception as exc:
                result = _failed(job, one_line(exc))
            yield result
            fill(slot)
        if next(jobs, None) is not None:
            raise VidrealError("every Ray worker crashed; rerun the batch to resume where it stopped")


def plan_workers(resources: dict, workers=None, gpus_per_worker=None) -> tuple:
    """(workers, GPUs per worker, CPUs per worker) on a Ray cluster with ``resources``
    (``ray.cluster_resources()``), the defaults filled in as :class:`RayExecutor` says; ConfigError
    when the cluster cannot hold them."""
    gpus, cpus = resources.get("GPU", 0), resources.get("CPU", 0)
    if gpus_per_worker is None:
        gpus_per_worker = 1 if gpus else 0
    if workers is None:
        workers = max(1, int(gpus // gpus_per_worker)) if gpus_per_worker else 1
    cpus_per_worker = 1 if gpus_per_worker else max(1, int(cpus // workers))
    for name, each, have in (("GPU", gpus_per_worker, gpus), ("CPU", cpus_per_worker, cpus)):
        if workers * each > have:
            raise ConfigError(f"{workers} worker(s) x {each:g} {name}(s) need {workers * each:g} "
                              f"{name}s; the Ray cluster has {have:g}")
    return workers, gpus_per_worker, cpus_per_worker


def join_cluster(ray, address: str | None) -> bool:
    """Start or join the Ray cluster at ``address`` unless Ray is already initialised; True when
    this call did. ConfigError (one line) when the cluster cannot be started or reached."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = f"at {address!r}" if address else "(a new local one)"
        raise ConfigError(f"cannot start or join the Ray cluster {where}: {first_line(exc)}") from None
    return True


def ray_workers(address=None, workers=None, gpus_per_worker=None) -> int:
    """How many workers the ray executor would start (connects to the cluster as it would, and
    disconnects again when it was not connected before). ConfigError as :func:`plan_workers`."""
    ray = import_ray()
    started = join_cluster(ray, address)
    try:
        return plan_workers(ray.cluster_resources(), workers, gpus_per_worker)[0]
    finally:
        if started:
            ray.shutdown()


def _failed(job: dict, error: str) -> dict:
    return {"input": job["input"], "status": "failed", "error": error, "frames": 0, "seconds": 0.0}

"""A file's translation as stages: threads connected by bounded queues, each timed.

    with Stages() as stages:
        chunks = stages.ahead("decode", media.chunks(8))        # a thread, up to DEPTH items ahead
        pieces = stages.ahead("conditions", extract(chunks))    # another, reading the first's queue
        encode = stages.behind("encode", writer.write)          # a thread calling writer.write(item)
        for frames in stages.iterate("denoise", translator.stream(pieces, ...)):   # this thread
            encode(frames)
        encode.finish()                                         # waits for the last item to be written

Every queue holds at most ``depth`` items, so memory does not grow with the clip. A stage that
fails stops every stage at its next queue operation (each put and get waits on the queues and on
the stop event together); leaving the ``with`` block joins every thread and raises the first
failure itself (a ``KeyboardInterrupt`` too) in the calling thread, whatever thread it happened in.
``Stages(overlap=False)`` runs the same stages one after another in the calling thread (the same
outputs; for tests and debugging).

Timing: :func:`timed` counts the time of a block as a stage's work in the run the current thread
works for (the stages' threads and the calling thread; nothing outside a run), minus the time of
timed blocks nested in it (a stage waiting on its input queue counts as no one's work). So code
anywhere (the translator's propagation, a flow estimate) can say what it is: ``with timed("flow"):``.
``stages.timings.report()`` gives each stage's ms per frame and how busy it was (work / wall time).

Priority: work with slack (a stage behind the denoiser, flows estimated ahead) can run in the
background (:func:`background_thread`: a lower OS scheduling priority), so that where the CPU is
short the chain that feeds the denoiser (decoding, conditions) is served first.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from contextlib import contextmanager

import numpy as np

from vidreal.progress import check_interrupt
from vidreal.runtime import background_thread

DEPTH = 2  # items (chunks) a stage may be ahead of the next one
POLL = 0.05  # seconds between two looks at the stop event while a queue is full or empty

_local = threading.local()  # .timings (the run this thread works for), .nested (seconds of nested blocks)
_END = object()  # the last item of a queue


class _Stopped(BaseException):
    """Raised in a stage waiting on a queue when another stage failed (never leaves :class:`Stages`)."""


class Timings:
    """Seconds of work and frames handled per stage name, from several threads (cheap counters)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.frames: dict[str, int] = defaultdict(int)
        self.start = time.perf_counter()
        self.end: float | None = None
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float, frames: int = 0) -> None:
        with self._lock:
            self.seconds[name] += seconds
            self.frames[name] += frames

    def wall(self) -> float:
        return (self.end or time.perf_counter()) - self.start

    def report(self, names=()) -> dict[str, dict]:
        """``{name: {"ms_per_frame", "busy", "seconds", "frames"}}`` for every stage seen (and every
        name in ``names``, zero when unseen); ms per frame the stage handled, busy = work / wall time."""
        wall = max(self.wall(), 1e-9)
        out = {}
        for name in [*names, *(n for n in self.seconds if n not in names)]:
            seconds, frames = self.seconds.get(name, 0.0), self.frames.get(name, 0)
            out[name] = {"ms_per_frame": round(1000 * seconds / frames, 3) if frames else 0.0,
                         "busy": round(seconds / wall, 4), "seconds": round(seconds, 4), "frames": frames}
        return out


@contextmanager
def timed(name: str | None, frames: int = 0):
    """Count the block's time (less that of timed blocks nested in it) as stage ``name``'s work,
    with ``frames`` frames handled, in the run of the current thread; ``None``: nobody's (waiting)."""
    timings = getattr(_local, "timings", None)
    if timings is None:
        yield
        return
    outer, _local.nested = _local.nested, 0.0
    start = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        if name is not None:
            timings.add(name, elapsed - _local.nested, frames)
        _local.nested = outer + elapsed


def in_run(fn):
    """``fn`` wrapped to count its :func:`timed` blocks in the current thread's run, wherever it is
    called (e.g. submitted to a worker pool from a stage)."""
    timings = getattr(_local, "timings", None)

    def call(*args, **kwargs):
        with _working_for(timings):
            return fn(*args, **kwargs)

    return call


@contextmanager
def _working_for(timings: Timings | None):
    saved = getattr(_local, "timings", None), getattr(_local, "nested", 0.0)
    _local.timings, _local.nested = timings, 0.0
    try:
        yield
    finally:
        _local.timings, _local.nested = saved


def count(item) -> int:
    """Frames in a stage's item: the length of an array, or of the first element of a tuple."""
    if isinstance(item, tuple):
        return count(item[0]) if item else 0
    return len(item) if isinstance(item, np.ndarray) else 0


class Stages:
    """The stages of one run (see the module docstring). ``overlap=False``: no threads."""

    def __init__(self, overlap: bool = True, depth: int = DEPTH):
        self.overlap, self.depth = overlap, depth
        self.timings = Timings()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._context = None

    # ------------------------------------------------------------------ the stages
    def ahead(self, name: str, items, depth: int | None = None):
        """Iterate ``items`` in a thread of its own, up to ``depth`` items ahead of the consumer;
        returns the iterator the consumer reads. Each item's making counts as ``name``'s work."""
        if not self.overlap:
            return self._timed_iter(name, items)
        channel: queue.Queue = queue.Queue(depth or self.depth)

        def produce():
            for item in self._timed_iter(name, items):
                check_interrupt()
                self._put(channel, item)
            self._put(channel, _END)

        self._start(name, produce)
        return self._drain(channel)

    def behind(self, name: str, consume, depth: int | None = None, background: bool = False) -> Behind:
        """A :class:`Behind`: ``consume(item)`` called in a thread of its own, for each item handed
        to it, in order, up to ``depth`` items behind the caller; ``background``: that thread runs at a
        lower priority (:func:`background_thread`)."""
        return Behind(self, name, consume, depth or self.depth, background)

    def iterate(self, name: str, items):
        """``items`` iterated in the calling thread, each item's making counted as ``name``'s work."""
        return self._timed_iter(name, items)

    # ------------------------------------------------------------------ context
    def __enter__(self):
        self._context = _working_for(self.timings)
        self._context.__enter__()
        self.timings.start = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb):
        self._stop.set()
        try:
            for thread in self._threads:
                thread.join()
        finally:
            self.timings.end = time.perf_counter()
            self._context.__exit__(None, None, None)
        if self._error is not None and (exc_type is None or issubclass(exc_type, _Stopped)):
            raise self._error.with_traceback(self._error.__traceback__) from None
        return False

    @property
    def alive(self) -> list[threading.Thread]:
        return [thread for thread in self._threads if thread.is_alive()]

    # ------------------------------------------------------------------ machinery
    def _timed_iter(self, name: str, items):
        it = iter(items)
        try:
            while True:
                with timed(name):
                    item = next(it, _END)
                if item is _END:
                    return
                self.timings.add(name, 0.0, count(item))
                yield item
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def _start(self, name: str, body, background: bool = False) -> None:
        def run():
            if background:
                background_thread()
            with _working_for(self.timings):
                try:
                    body()
                except _Stopped:
                    pass
                except BaseException as exc:  # raised again in the calling thread
                    self._fail(exc)

        thread = threading.Thread(target=run, name=f"vidreal-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = exc
        self._stop.set()

    def _put(self, channel: queue.Queue, item) -> None:
        with timed(None):
            while True:
                if self._stop.is_set():
                    raise _Stopped
                try:
                    channel.put(item, timeout=POLL)
                    return
                except queue.Full:
                    pass

    def _get(self, channel: queue.Queue):
        with timed(None):
            while True:
                if self._stop.is_set():
                    raise _Stopped
                try:
                    return channel.get(timeout=POLL)
                except queue.Empty:
                    pass

    def _drain(self, channel: queue.Queue):
        while True:
            item = self._get(channel)
            if item is _END:
                return
            yield item


class Behind:
    """A stage behind the caller: ``behind(item)`` hands an item over (waiting while ``depth`` are
    queued); :meth:`finish` waits until every item was consumed. Made by :meth:`Stages.behind`."""

    def __init__(self, stages: Stages, name: str, consume, depth: int, background: bool = False):
        self._stages, self._name, self._consume = stages, name, consume
        self._channel: queue.Queue | None = None
        self._thread = None
        if stages.overlap:
            self._channel = queue.Queue(depth)
            stages._start(name, self._run, background)
            self._thread = stages._threads[-1]

    def __call__(self, item) -> None:
        if self._channel is None:
            with timed(self._name, count(item)):
                self._consume(item)
        else:
            self._stages._put(self._channel, item)

    def _run(self) -> None:
        while True:
            item = self._stages._get(self._channel)
            if item is _END:
                return
            check_interrupt()
            with timed(self._name, count(item)):
                self._consume(item)

    def finish(self) -> None:
        """Wait for the items handed over to be consumed (raises :class:`_Stopped` if a stage failed:
        leaving :class:`Stages` raises that failure)."""
        if self._channel is None:
            return
        self._stages._put(self._channel, _END)
        while self._thread.is_alive():
            self._thread.join(POLL)
        if self._stages._error is not None:
            raise _Stopped

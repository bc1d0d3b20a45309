"""What a long run shows while it works, and how it stops on Ctrl-C.

* :func:`bar` is a drop-in for ``tqdm(...)``: a tqdm bar when stderr is a terminal; plain lines
  (no ``\\r``, no escape codes), at most one every ``PLAIN_INTERVAL`` seconds, when it is not (a
  log file, CI); nothing when progress is off (``--no-progress``, ``-q``: see :func:`configure`).
* :class:`DenoiseProgress` is the translation bar: it counts frames and moves at every denoising
  step of every batch (so the ETA comes from the first steps, not from the first chunk).
* :class:`DatasetRate` is what the batch bar says about the whole dataset: frames/s over the
  wall time of the run (all workers together) and the ETA of the items left.
* :func:`configure` also switches the libraries' own bars: diffusers' "Loading pipeline
  components" and transformers' "Loading weights" are the libraries' chatter, shown only at
  ``-vv`` on a terminal; huggingface_hub's downloads show where vidreal's bars would be tqdm bars.
  :func:`sync_libraries` applies that to a library imported since (call it after importing
  diffusers or transformers).
* :func:`interruptible` (the CLI runs every verb in it): Ctrl-C raises ``KeyboardInterrupt`` in
  the main thread as usual and also stops other threads (batch workers) at their next denoising
  step, where :func:`check_interrupt` is called.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager

from tqdm.auto import tqdm

PLAIN_INTERVAL = 10.0  # seconds between two plain progress lines (first and last lines always show)
PLAIN_WIDTH = 100  # characters of a plain line, bar included

_state = {"enabled": True, "set_env": False}
_interrupted = threading.Event()


def configure(enabled: bool = True) -> None:
    """Turn every progress bar on or off for this process (the CLI: ``-q``, ``--no-progress``).

    Off, :func:`bar` returns disabled bars whatever its caller asks, and the libraries' bars are
    hidden. On, download bars show when stderr is a terminal, loading bars also need ``-vv``.
    """
    _state["enabled"] = bool(enabled)
    if not download_bars_shown() and "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ:
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read by huggingface_hub (so transformers) at import
        _state["set_env"] = True
    elif download_bars_shown() and _state["set_env"]:
        del os.environ["HF_HUB_DISABLE_PROGRESS_BARS"]
        _state["set_env"] = False
    sync_libraries()


def enabled() -> bool:
    return _state["enabled"]


def is_terminal(stream=None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def download_bars_shown() -> bool:
    """Whether huggingface_hub's download bars may show."""
    return _state["enabled"] and is_terminal()


def library_bars_shown() -> bool:
    """Whether diffusers' and transformers' loading bars may show: at ``-vv`` (their chatter)."""
    from vidreal import logs

    return download_bars_shown() and logs.verbosity() >= 2


def sync_libraries() -> None:
    """Apply the bar settings to those of diffusers, transformers and huggingface_hub that are
    imported (importing them here would cost seconds; call this again after importing one)."""
    shown = library_bars_shown()
    for name in ("diffusers.utils.logging", "transformers.utils.logging"):
        module = sys.modules.get(name)
        if module is not None:  # transformers' switch also sets huggingface_hub's: set below
            (module.enable_progress_bar if shown else module.disable_progress_bar)()
    shown = download_bars_shown()
    hub = sys.modules.get("huggingface_hub.utils")
    if hub is not None and not shown:
        hub.disable_progress_bars()
    elif hub is not None and os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") is None and hub.are_progress_bars_disabled():
        hub.enable_progress_bars()


def bar(iterable=None, *, total=None, desc=None, unit="it", disable=False, leave=True, **kwargs):
    """A progress bar with tqdm's interface: tqdm on a terminal, :class:`PlainBar` in a log, a
    disabled tqdm when ``disable`` or when progress is off (:func:`configure`)."""
    if disable or not _state["enabled"]:
        return tqdm(iterable, total=total, disable=True)
    stream = kwargs.pop("file", None) or sys.stderr
    cls = tqdm if is_terminal(stream) else PlainBar
    return cls(iterable, total=total, desc=desc, unit=unit, leave=leave, file=stream, **kwargs)


class PlainBar(tqdm):
    """tqdm's numbers (count, rate, elapsed, ETA) as plain lines for a log: a line when the bar
    starts, one at its first update (the first ETA), then at most one every ``interval`` seconds,
    and a last one when it closes (also when ``leave=False``). Never ``\\r`` or escape codes."""

    def __init__(self, *args, interval: float | None = None, **kwargs):
        self._interval = PLAIN_INTERVAL if interval is None else interval
        self._line_at = self._line_n = None  # time.monotonic() and count of the last line written
        self._first_n = kwargs.get("initial", 0)
        self._moved = False
        kwargs.update(ascii=True, ncols=PLAIN_WIDTH, dynamic_ncols=False, mininterval=0, miniters=0, position=0)
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None, final=False):
        now = time.monotonic()
        first_move = not self._moved and self.n > self._first_n
        if final and self._line_n == self.n:
            return True  # the last line already says it
        if not (final or first_move or self._line_at is None or now - self._line_at >= self._interval):
            return True
        self._moved = self._moved or first_move
        self._line_at, self._line_n = now, self.n
        self.fp.write(self.format_meter(**self.format_dict).rstrip() + "\n")
        self.fp.flush()
        return True

    def close(self):
        if self.disable:
            return
        self._ema_dt = lambda: None  # the overall rate in the last line
        self.display(final=True)
        self.disable = True
        with self._lock:
            self._decr_instances(self)


class DenoiseProgress:
    """The translation bar of one clip: counts frames (``total=n_frames``) and moves at every
    denoising step, so a user sees the rate and ETA after the first step, not the first chunk.
    It says the frames finished (whole ones) and the step in the steps the user asked for
    (``step 1/2`` for ``--steps 2``, though PNDM runs a third, warm-up, timestep).

    The Translator calls :meth:`start_batch` before a batch, :meth:`step` after each denoising
    step (it also stops the run there on Ctrl-C) and :meth:`update` with the frames a batch
    finished. ``counts`` records (frames done, step, steps) at every step, for tests and tools.
    """

    FORMAT = "{{l_bar}}{{bar}}| {frames}/{{total_fmt}} frames [{{elapsed}}<{{remaining}}, {{rate_fmt}}{{postfix}}]"

    def __init__(self, n_frames: int | None, enabled: bool = True):
        self.frames = 0  # frames finished
        self.first = self.size = 0  # the current batch: first frame index, frames in it
        self.index = self.steps = 0  # timesteps done in the current batch, timesteps per batch
        self.shown = 0  # the steps the user asked for, of those timesteps
        self.counts: list[tuple[float, int, int]] = []
        self.bar = bar(total=n_frames, desc="translating", unit="frame", disable=not enabled, leave=False,
                       bar_format=self.FORMAT.format(frames=0))

    def start_batch(self, first: int, size: int, steps: int | None = None) -> None:
        """A batch of ``size`` new frames from frame index ``first`` (``steps`` may come later)."""
        self.first, self.size, self.index = first, size, 0
        if steps is not None:
            self.steps = steps
        self._show()

    def start_steps(self, steps: int, shown: int | None = None) -> None:
        """The number of denoising steps (scheduler timesteps) the current batch will take, and
        ``shown``: the steps the user asked for, which the bar counts in (default ``steps``)."""
        self.steps, self.index = steps, 0
        self.shown = steps if shown is None else shown

    def step(self) -> None:
        """One denoising step of the current batch is done (raises KeyboardInterrupt on Ctrl-C)."""
        check_interrupt()
        self.index += 1
        done = self.frames + self.size * min(self.index, self.steps) / max(self.steps, 1)
        self.counts.append((done, self._step(), self.shown))
        self._show(done)

    def _step(self) -> int:
        """The current timestep as one of the steps asked for: 1..shown, in proportion."""
        return min(self.shown, max(1, math.ceil(self.index * self.shown / max(self.steps, 1))))

    def update(self, n: int) -> None:
        """``n`` more frames are finished (decoded)."""
        self.frames += n
        self.index = 0
        self._show(self.frames)

    def _show(self, done: float | None = None) -> None:
        last = self.first + self.size - 1
        where = f"frames {self.first}-{last}" if self.size > 1 else f"frame {self.first}"
        step = f", step {self._step()}/{self.shown}" if self.steps and self.index else ""
        self.bar.set_postfix_str(where + step, refresh=False)
        self.bar.bar_format = self.FORMAT.format(frames=self.frames)  # whole frames, though the bar moves by steps
        self.bar.update((self.bar.n if done is None else done) - self.bar.n)
        if done is None and not isinstance(self.bar, PlainBar):  # a plain bar has just decided itself
            self.bar.refresh()

    def close(self) -> None:
        self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class DatasetRate:
    """A batch's dataset-level throughput: frames/s over the wall time since its first item
    started translating (model loading left out; several workers together), and the ETA of the
    items left, their frames guessed from the mean of the items finished.

    ``items``: how many items the run translates; :meth:`add` each finished one (frames, and the
    seconds it took, from which the start of the first item is known); :meth:`text` for the bar.
    """

    def __init__(self, items: int, clock=time.monotonic):
        self.items = items
        self.done = self.frames = 0
        self._clock = clock
        self._start: float | None = None

    def add(self, frames: int, seconds: float = 0.0) -> None:
        now = self._clock()
        if self._start is None:
            self._start = now - max(float(seconds), 0.0)
        self.done += 1
        self.frames += frames

    def frames_per_second(self) -> float:
        elapsed = 0.0 if self._start is None else self._clock() - self._start
        return self.frames / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float | None:
        """Seconds until the last item is done; None before a frame is done."""
        rate = self.frames_per_second()
        if not self.frames or rate <= 0:
            return None
        return max(self.items - self.done, 0) * (self.frames / self.done) / rate

    def text(self) -> str:
        """``"480 frames, 3.80 frames/s, ETA 00:12"`` (tqdm's time format)."""
        eta = self.eta()
        return (f"{self.frames} frames, {self.frames_per_second():.2f} frames/s, "
                f"ETA {'?' if eta is None else tqdm.format_interval(eta)}")


def check_interrupt() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed inside :func:`interruptible` (any thread)."""
    if _interrupted.is_set():
        raise KeyboardInterrupt


@contextmanager
def interruptible():
    """Run a command so that Ctrl-C stops it within one denoising step.

    SIGINT raises KeyboardInterrupt in the main thread (Python's own behaviour, kept) and sets a
    flag that :func:`check_interrupt` turns into KeyboardInterrupt in every other thread at its
    next denoising step. Outside the main thread this does nothing (signals go to the main one).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        _interrupted.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    _interrupted.clear()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _interrupted.clear()

"""One logging scheme for vidreal and the libraries it drives (the CLI's ``-q`` / ``-v`` / ``-vv``).

======== ==================================== =======================================
 level    vidreal                              diffusers, transformers, huggingface_hub
======== ==================================== =======================================
 ``-q``   errors only (no bars, no status)     errors
 default  warnings (+ one status line/output)  warnings
 ``-v``   info: device, dtype, weights, files  warnings
 ``-vv``  debug                                info (and their loading bars)
======== ==================================== =======================================

Lines read ``warning: <message>`` (``warning: [<logger>] <message>`` for other libraries'
loggers), like the CLI's ``error:`` line, and go around tqdm bars on a terminal.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys

from tqdm import std as tqdm_std
from tqdm.auto import tqdm

# library -> (environment variable read when it is first imported, module with set_verbosity)
LIBRARIES = {
    "diffusers": ("DIFFUSERS_VERBOSITY", "diffusers.utils.logging"),
    "transformers": ("TRANSFORMERS_VERBOSITY", "transformers.utils.logging"),
    "huggingface_hub": ("HF_HUB_VERBOSITY", "huggingface_hub.utils.logging"),
}
_state = {"verbosity": 0, "handler": None}

# The lock every vidreal stderr writer holds while it writes: tqdm's own write lock (bars and
# tqdm.write take it), taken by Handler too, and held by native_stderr_silenced.
STDERR_LOCK = tqdm_std.tqdm.get_lock()
tqdm.set_lock(STDERR_LOCK)


def levels(verbosity: int) -> tuple[int, int]:
    """(vidreal's level, the libraries' level) for -1 (quiet), 0 (default), 1 (-v), 2+ (-vv):
    ``-v`` is vidreal's own story; the libraries' info (config dumps, loading notes) is ``-vv``'s."""
    if verbosity < 0:
        return logging.ERROR, logging.ERROR
    mine = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbosity, 2)]
    return mine, logging.INFO if verbosity >= 2 else logging.WARNING


def verbosity() -> int:
    return _state["verbosity"]


def quiet() -> bool:
    """True under ``-q``: print nothing but errors (status lines included)."""
    return _state["verbosity"] < 0


class Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        name = "" if record.name.split(".")[0] == "vidreal" else f"[{record.name}] "
        text = f"{record.levelname.lower()}: {name}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class Handler(logging.StreamHandler):
    """Writes to stderr at emit time (so a test runner's swapped stderr is used); on a terminal
    through ``tqdm.write``, so log lines do not tear progress bars."""

    def __init__(self):
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr
            message = self.format(record)
            with STDERR_LOCK:  # never while a native library's chatter is kept off fd 2
                if stream.isatty():
                    tqdm.write(message, file=stream)
                else:
                    stream.write(message + "\n")
                    stream.flush()
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def native_stderr_silenced():
    """Keep a native library's own log lines (mediapipe's absl and TFLite write them straight to
    file descriptor 2, past Python) off stderr for the block.

    fd 2 points to /dev/null while the block runs, under :data:`STDERR_LOCK`: vidreal's log lines
    and progress bars wait for it rather than being lost, whichever thread writes them. Keep the
    block short (a graph's start-up); re-entrant in one thread."""
    with STDERR_LOCK:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def configure(verbosity: int = 0) -> None:
    """Set the levels of vidreal's and the libraries' loggers (see the module docstring) and
    install one handler on the root logger (replacing the one a previous call installed)."""
    _state["verbosity"] = verbosity
    mine, theirs = levels(verbosity)
    root = logging.getLogger()
    if _state["handler"] is not None:
        root.removeHandler(_state["handler"])
    handler = _state["handler"] = Handler()
    handler.setFormatter(Formatter())
    root.addHandler(handler)
    root.setLevel(theirs)
    logging.getLogger("vidreal").setLevel(mine)
    for library, (variable, module_name) in LIBRARIES.items():
        os.environ[variable] = logging.getLevelName(theirs).lower()  # for a later import (and Ray workers)
        logging.getLogger(library).setLevel(theirs)
        module = sys.modules.get(module_name)
        if module is not None:
            module.set_verbosity(theirs)

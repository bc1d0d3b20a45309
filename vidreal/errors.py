"""Typed errors. Library code raises these; the CLI turns them into one line and an exit code.

Every error carries a short message saying *what* went wrong and, when there is one, the
*path* it concerns, so the CLI can print ``error: <what> (<path>)``.
"""
from __future__ import annotations

from pathlib import Path


class VidrealError(Exception):
    """Base class for expected failures (bad input, missing weights, ...). Exit code 1."""

    exit_code = 1

    def __init__(self, message: str, path: str | Path | None = None):
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)

    def __str__(self) -> str:
        return f"{self.message} ({self.path})" if self.path else self.message


class InputError(VidrealError):
    """An input file or folder is missing, unreadable, corrupt or of an unsupported kind."""


class OutputError(VidrealError):
    """An output cannot be written where it was asked for."""


class ModelError(VidrealError):
    """Weights are missing, unsafe to load, or do not fit together."""


class ConfigError(VidrealError):
    """A configuration value or key is invalid."""

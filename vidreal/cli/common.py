"""Pieces every verb uses the same way: status lines, ``--progress/--no-progress``, old option
spellings kept as hidden aliases, and defaults shown one way (Click's ``[default: X]``)."""
from __future__ import annotations

from contextlib import contextmanager

import click

from vidreal import logs, progress
from vidreal.errors import ConfigError


def status(message: str, err: bool = False) -> None:
    """A status line (``wrote ...``, ``config: ...``): stdout, left out under ``-q``."""
    if not logs.quiet():
        click.echo(message, err=err)


@contextmanager
def usage():
    """Checks of the values a verb was given, before it reads any file: a ConfigError raised
    inside becomes a usage error (``error: ...``, exit 2) rather than a processing failure (1)."""
    try:
        yield
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


def _progress_flag(ctx, param, value):
    if not value:
        progress.configure(enabled=False)  # also hides the libraries' loading and download bars
    return value and progress.enabled()


def progress_option(help: str = "Show progress bars (plain lines when stderr is not a terminal).", **kwargs):
    """``--progress/--no-progress``; ``--no-progress`` (like ``-q``) hides every bar, the
    libraries' included. The command receives ``progress`` (bool)."""
    return click.option("--progress/--no-progress", default=True, show_default=True, callback=_progress_flag,
                        help=help, **kwargs)


def show_default(param: click.Parameter, text: str) -> None:
    """Show ``text`` as the default of an option whose real default is None (so that a preset or
    the library decides), written as Click writes defaults: ``[default: text]``."""
    param.help = f"{param.help or ''}  [default: {text}]".strip()
    param.show_default = False


class AliasOption(click.Option):
    """An option whose old spellings (``aliases``) still parse but are left out of ``--help``.
    A string ``show_default`` is written ``[default: text]`` (see :func:`show_default`)."""

    def __init__(self, param_decls, aliases=(), **kwargs):
        self.aliases = tuple(aliases)
        text = kwargs.pop("show_default", None)
        super().__init__([*param_decls, *self.aliases], **kwargs)
        if isinstance(text, str):
            show_default(self, text)
        elif text is not None:
            self.show_default = text

    def get_help_record(self, ctx):
        shown, self.opts = self.opts, [name for name in self.opts if name not in self.aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown


def option(*param_decls, aliases=(), **kwargs):
    """``click.option`` with hidden ``aliases`` (old spellings that have shipped)."""
    return click.option(*param_decls, cls=AliasOption, aliases=aliases, **kwargs)

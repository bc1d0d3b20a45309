"""Pieces every verb uses the same way: status lines, ``--progress/--no-progress``, old option
spellings kept as hidden aliases, and defaults shown one way (Click's ``[default: X]``)."""
from __future__ import annotations

import click

from vidreal import logs, progress


def status(message: str, err: bool = False) -> None:
    """A status line (``wrote ...``, ``config: ...``): stdout, left out under ``-q``."""
    if not logs.quiet():
        click.echo(message, err=err)


def _progress_flag(ctx, param, value):
    if not value:
        progress.configure(enabled=False)  # also hides the libraries' loading and download bars
    return value and progress.enabled()


def progress_option(help: str = "Show progress bars (plain lines when stderr is not a terminal).", **kwargs):
    """``--progress/--no-progress``; ``--no-progress`` (like ``-q``) hides every bar, the
    libraries' included. The command receives ``progress`` (bool)."""
    return click.option("--progress/--no-progress", default=True, show_default=True, callback=_progress_flag,
                        help=help, **kwargs)


class AliasOption(click.Option):
    """An option whose old spellings (``aliases``) still parse but are left out of ``--help``."""

    def __init__(self, param_decls, aliases=(), **kwargs):
        self.aliases = tuple(aliases)
        super().__init__([*param_decls, *self.aliases], **kwargs)

    def get_help_record(self, ctx):
        shown, self.opts = self.opts, [name for name in self.opts if name not in self.aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown


def option(*param_decls, aliases=(), **kwargs):
    """``click.option`` with hidden ``aliases`` (old spellings that have shipped)."""
    return click.option(*param_decls, cls=AliasOption, aliases=aliases, **kwargs)

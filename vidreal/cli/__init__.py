"""The ``vidreal`` command line: a Click group whose verbs each live in their own module.

Commands only parse options and call one library function; ``VidrealError`` becomes a one-line
``error: ...`` message and exit code 1 (``--debug`` shows the traceback). Usage errors (a value that
is wrong before any file is read: Click's own parse errors, and ConfigErrors a verb raises inside
``cli.common.usage()``) print the same ``error: ...`` line and exit 2.
"""
from __future__ import annotations

import importlib
import io
import sys

import click

from vidreal import __version__, logs, progress
from vidreal.errors import VidrealError

EPILOG = """\b
Examples:
  vidreal translate samples/humanoid_walk_ground.mp4 -o out.mp4 --config configs/rocog.yaml
  vidreal conditions samples/humanoid_walk_ground.mp4 -o pose.mp4 --kind pose
  vidreal batch syn/ground out/ground --config configs/rocog.yaml
  vidreal metrics samples/humanoid_walk_ground.mp4 out.mp4 --plot metrics.png
"""

# verb module -> attribute holding the click command; each module owns one verb.
COMMANDS = {
    "translate": "vidreal.cli.translate_cmd:translate",
    "conditions": "vidreal.cli.conditions_cmd:conditions",
    "batch": "vidreal.cli.batch_cmd:batch",
    "metrics": "vidreal.cli.metrics_cmd:metrics",
    "sheet": "vidreal.cli.sheet_cmd:sheet",
    "personalize": "vidreal.cli.personalize_cmd:personalize",
    "caption": "vidreal.cli.personalize_cmd:caption",
    "classify": "vidreal.cli.classify_cmd:classify",
    "download": "vidreal.cli.download_cmd:download",
}


class VidrealGroup(click.Group):
    """Loads verbs lazily (torch is only imported by the verb that needs it) and maps errors."""

    def list_commands(self, ctx):
        return [name for name in COMMANDS if self._load(name) is not None]

    def get_command(self, ctx, name):
        return self._load(name)

    @staticmethod
    def _load(name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:  # a verb whose module is not written yet
            if exc.name == module:
                return None
            raise

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as exc:  # the group's own options (vidreal --bogus)
            usage_error(exc)

    def invoke(self, ctx):
        try:
            with progress.interruptible():  # Ctrl-C stops within one denoising step
                return super().invoke(ctx)
        except click.ClickException as exc:
            usage_error(exc)
        except VidrealError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)


def usage_error(exc: click.ClickException):
    """Click's errors written as vidreal's: one ``error: ...`` line, exit 2 for a usage error
    (``NoArgsIsHelpError``, a verb group called with nothing, still shows its help)."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        exc.show()
    else:
        click.echo(f"error: {exc.format_message()}", err=True)
    sys.exit(exc.exit_code)


@click.group(cls=VidrealGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vidreal")
@click.option("--debug", is_flag=True, help="Show tracebacks for expected errors.")
@click.option("-v", "--verbose", count=True, help="More log output: -v info (device, dtype, weights, files), -vv debug.")
@click.option("-q", "--quiet", is_flag=True, help="Errors only: no warnings, progress bars or status lines.")
@click.pass_context
def cli(ctx, debug, verbose, quiet):
    """vidreal: make rendered (synthetic) videos and images look real, keeping their structure.

    Videos are decoded with decord, edge and pose conditions are extracted per frame, and the
    frames are translated by Stable Diffusion 1.5 + MultiControlNet with shared noise and
    cross-frame attention so the clip stays consistent over time.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if quiet and verbose:
        raise click.UsageError("-q/--quiet and -v/--verbose exclude each other")
    logs.configure(-1 if quiet else verbose)  # vidreal's and the libraries' loggers (see vidreal/logs.py)
    # A file name that is not UTF-8 (os.fsdecode's lone surrogates) prints as "\udcff", as
    # manifest.jsonl writes it, instead of failing the print (stderr already does this).
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    progress.configure(enabled=not quiet)  # bars; a verb's --no-progress turns them off too


def main():
    cli(prog_name="vidreal")

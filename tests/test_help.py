"""Every verb's --help: ends with examples; one option name per concept, as README's table says."""
from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from vidreal.cli import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def verbs() -> dict[str, click.Command]:
    """'translate', 'personalize dreambooth', ... -> leaf command (groups included under their name)."""
    ctx = click.Context(cli)
    out = {}
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        out[name] = command
        if isinstance(command, click.Group):
            for sub in command.list_commands(ctx):
                out[f"{name} {sub}"] = command.get_command(ctx, sub)
    return out


def visible_options(command: click.Command) -> set[str]:
    ctx = click.Context(command)
    names = set()
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
        if record:
            names |= set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", record[0]))
    return names


def readme_table() -> list[tuple[str, str, set[str]]]:
    text = README.read_text()
    section = text[text.index("## Commands"):text.index("### Configuration")]
    rows = re.findall(r"^\| ([^|]+) \| `([^`]+)` \| ([^|]+) \|$", section, re.M)
    return [(concept.strip(), option, {v.strip() for v in verbs_.split(",")}) for concept, option, verbs_ in rows]


@pytest.mark.parametrize("verb", sorted(verbs()))
def test_every_help_ends_with_examples(verb):
    result = CliRunner().invoke(cli, [*verb.split(), "--help"])
    assert result.exit_code == 0, result.output
    text = result.output.rstrip()
    tail = text[text.rfind("Examples:"):]
    assert "Examples:" in text and text.rfind("Examples:") > max(text.find("Options:"), text.rfind("Commands:"))
    lines = tail.splitlines()[1:]
    assert lines and all(line.strip().startswith("vidreal ") or line.startswith("      ") for line in lines), tail
    assert not re.search(r"\(default[ :]|\[\d[^<\]]*\]", result.output), f"{verb}: a default not written [default: X]"


def test_readme_table_matches_the_code():
    table = readme_table()
    assert len(table) >= 12
    commands = verbs()
    for concept, option, listed in table:
        primary = option.split("/")[-1] if option.startswith("-o/") else option
        having = {name for name, cmd in commands.items() if primary in visible_options(cmd)}
        assert having == listed, f"{concept} ({option}): README lists {sorted(listed)}, the code has {sorted(having)}"


@pytest.mark.parametrize("verb, old, new", [
    ("personalize dreambooth", "--instance-dir", "--train-dir"),
    ("personalize dreambooth", "--resolution", "--size"),
    ("personalize dreambooth", "--steps", "--train-steps"),
    ("personalize textual-inversion", "--mixed-precision", "--dtype"),
    ("classify train", "--img-size", "--size"),
    ("classify train", "--workers", "--decode-workers"),
    ("classify eval", "--workers", "--decode-workers"),
    ("personalize dreambooth", "--preset", "--prompt-set"),  # not a second "preset" beside --config
])
def test_old_spellings_parse_as_hidden_aliases(verb, old, new):
    command = verbs()[verb]
    assert new in visible_options(command) and old not in visible_options(command)
    option = next(p for p in command.params if new in p.opts)
    value = {"--dtype": "fp32", "--prompt-set": "rocog"}.get(new, "64")
    args = {"personalize dreambooth": ["--train-dir", "x", "-o", "y"],
            "personalize textual-inversion": ["--train-dir", "x", "-o", "y"],
            "classify train": ["--train", ".", "--val", ".", "-o", "y"],
            "classify eval": ["run", "--data", "."]}[verb]
    by_old = command.make_context(verb, [*args, old, value]).params[option.name]
    by_new = command.make_context(verb, [*args, new, value]).params[option.name]
    assert by_old == by_new and str(by_new) == value


def test_canny_thresholds_are_integers_everywhere():
    for name in ("translate", "batch", "conditions"):
        param = next(p for p in verbs()[name].params if "--canny-low" in p.opts)
        assert isinstance(param.type, click.IntRange) and param.type.min == 0 and param.type.max == 255


@pytest.mark.parametrize("verb", sorted(verbs()))
def test_help_shows_no_empty_range_and_no_deprecated_flag(verb):
    result = CliRunner().invoke(cli, [*verb.split(), "--help"])
    assert "None]" not in result.output and "x<=None" not in result.output, result.output
    assert not visible_options(verbs()[verb]) & {"--canny-low", "--canny-high", "--preset"}
    assert "preset" not in result.output.lower() or verb in {"translate", "batch"}, result.output


def test_deprecated_canny_flags_still_parse():
    command = verbs()["conditions"]
    params = command.make_context("conditions", ["in.mp4", "-o", "o.mp4", "--canny-low", "50"]).params
    assert params["canny_low"] == 50

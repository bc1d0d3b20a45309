"""README tells the truth: its quick-start, offline and command examples parse as written, and
the offline example downloads every model it then uses."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from vidreal.cli import cli
from vidreal.config import DEFAULT_CONTROLNETS, DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(title)
    end = README.find("\n## ", start + len(title))
    return README[start:end if end > 0 else None]


def commands(text: str, program: str) -> list[list[str]]:
    """The ``program ...`` command lines in the fenced code blocks of ``text`` (comments dropped)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"\s&&\s", line.split(" # ")[0].strip()):
                words = shlex.split(part, comments=True)
                if words and words[0].split("/")[-1] == program:
                    out.append(words[1:])
    return out


def parse(args: list[str]) -> tuple[str, dict]:
    """Resolve ``vidreal ARGS`` to its command and parse its options, without running it."""
    ctx = cli.make_context("vidreal", list(args), resilient_parsing=False)
    command, name = cli, None
    rest = ctx.protected_args + ctx.args
    names = []
    while isinstance(command, click.Group):
        name, command, rest = command.resolve_command(ctx, rest)
        names.append(name)
    return " ".join(names), command.make_context(name, rest).params


def test_offline_example_downloads_every_model_it_uses():
    text = section("### Offline")
    downloads = {}
    for args in commands(text, "hf"):
        assert args[0] == "download"
        downloads[args[args.index("--local-dir") + 1]] = args[1]
    assert set(downloads.values()) == {DEFAULT_MODEL, *DEFAULT_CONTROLNETS.values()}
    runs = commands(text, "vidreal")
    assert [args[0] for args in runs][:3] == ["download"] * 3  # the section starts with `vidreal download`
    [run] = [args for args in runs if args[0] == "translate" and "--model" in args]
    verb, params = parse(run)
    assert verb == "translate"
    used = [run[i + 1] for i, word in enumerate(run) if word == "--model"]
    used += [run[i + 1].split("=", 1)[1] for i, word in enumerate(run) if word == "--controlnet"]
    assert sorted(used) == sorted(downloads)  # every folder used was downloaded, and nothing more
    kinds = dict(run[i + 1].split("=", 1) for i, word in enumerate(run) if word == "--controlnet")
    assert {kind: downloads[path] for kind, path in kinds.items()} == DEFAULT_CONTROLNETS  # right net per kind
    assert (ROOT / run[1]).is_file()  # the input is one of the samples


@pytest.mark.parametrize("title", ["## Quick start", "## Commands"])
def test_example_commands_parse(title):
    found = commands(section(title), "vidreal")
    assert found
    for args in found:
        verb, params = parse(args)
        assert verb, args
        for value in params.values():  # configs and samples the examples name exist
            for item in value if isinstance(value, tuple) else [value]:
                if isinstance(item, str) and re.match(r"(configs|samples)/", item):
                    assert (ROOT / item).exists(), item


def test_quick_start_names_the_venv_tools_and_the_cpu_wheel():
    text = section("## Quick start")
    assert "source .venv/bin/activate" in text and ".venv/bin/hf" in text
    assert "https://download.pytorch.org/whl/cpu" in text and "CUDA build" in text
    assert "downsamples by 2" in section("## Development")


def test_quick_start_cpu_hint_precedes_the_install_and_selection_example_fits_the_samples():
    import re

    from vidreal.io import probe

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert text.index("download.pytorch.org/whl/cpu") < text.index(".venv/bin/pip install -e .")
    for line in re.findall(r"^vidreal translate (samples/\S+) .*--start (\d+(?:\.\d+)?)s", text, re.M):
        info = probe(Path(__file__).resolve().parents[1] / line[0])
        assert float(line[1]) < info.n_frames / float(info.fps), line  # the start lies inside the sample
    assert not re.search(r"^vidreal translate clip\.mp4 .*--start 2\.5s", text, re.M)

"""One rule for usage errors: a value that is wrong before any file is read exits 2 with one
``error: ...`` line (Click's own parse errors included), and nothing is written."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from vidreal.cli import cli

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
CLIP = str(SAMPLES / "humanoid_walk_ground.mp4")

TRANSLATE_CASES = [
    ["--steps", "0"],
    ["--every", "0"],
    ["--start", "-3"],
    ["--max-frames", "0"],
    ["--guidance", "nan"],
    ["--lora-scale", "inf"],
    ["--scheduler", "bogus"],
    ["--controlnet", "canny=a", "--controlnet", "canny=b"],
    ["--size", "abc"],
]


def run(args):
    result = CliRunner().invoke(cli, args)
    lines = result.output.strip().splitlines()
    return result, lines


def assert_usage_error(result, lines):
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output and "Error: " not in result.output


@pytest.mark.parametrize("flags", TRANSLATE_CASES, ids=lambda flags: " ".join(flags))
def test_bad_translate_values_are_usage_errors(flags, tmp_path):
    out = tmp_path / "out.mp4"
    assert_usage_error(*run(["translate", CLIP, "-o", str(out), *flags]))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [
    ["batch", str(SAMPLES), "{tmp}/out", "--min-edge-f1", "2"],
    ["batch", str(SAMPLES), "{tmp}/out", "--every", "0"],
    ["batch", str(SAMPLES), str(SAMPLES)],
    ["sheet", "{tmp}", "-n", "0"],
    ["conditions", CLIP, "-o", "{tmp}/c.mp4", "--every", "0"],
    ["conditions", CLIP, "-o", "{tmp}/c.mp4", "--start", "-3"],
    ["metrics", CLIP, CLIP, "--edge-radius", "-1"],
    ["--bogus", "translate"],
    ["no-such-verb"],
], ids=lambda args: " ".join(a for a in args if "{tmp}" not in a and not a.startswith("/")))
def test_bad_values_of_every_verb_are_usage_errors(args, tmp_path):
    before = sorted(SAMPLES.rglob("*"))
    assert_usage_error(*run([a.replace("{tmp}", str(tmp_path)) for a in args]))
    assert list(tmp_path.iterdir()) == [] and sorted(SAMPLES.rglob("*")) == before


def test_a_verb_group_called_alone_still_shows_its_help():
    result = CliRunner().invoke(cli, ["classify"])
    assert "Usage:" in result.output and "train" in result.output

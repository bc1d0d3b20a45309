"""Output options (issue #24, as ComfyUI VideoHelperSuite users expect them): --fps, --no-audio,
--pix-fmt, PNG-frame folder outputs and frame-folder inputs, for `vidreal translate` and `vidreal batch`.

Translations use the tiny random models (32 px, 1 step, at most 3 frames)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from vidreal import checks
from vidreal.cli import cli
from vidreal.config import load_config
from vidreal.errors import ConfigError
from vidreal.io import probe, read_video

AUDIO_CLIP = "humanoid_walk_audio.mp4"  # 48 frames, 256x256, 24 fps, with an audio track


def tiny_args(tiny_models, *extra):
    return ["--model", str(tiny_models["sd"]), "--controlnet", f"canny={tiny_models['canny']}",
            "--controlnet", f"pose={tiny_models['pose']}", "--size", "32", "--steps", "1", "--max-frames", "3",
            "--no-progress", *extra]


def translate(tiny_models, source, output, *extra):
    result = CliRunner().invoke(cli, ["translate", str(source), "-o", str(output), *tiny_args(tiny_models, *extra)])
    assert result.exit_code == 0, result.output
    return result


def video_stream(path: Path) -> dict:
    """What PyAV reads back: frame count (decoded), rate, pixel format, whether there is audio."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        return {"frames": frames, "fps": Fraction(stream.average_rate), "pix_fmt": stream.codec_context.pix_fmt,
                "audio": len(container.streams.audio) > 0}


def one_error_line(result, code: int) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == code, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp-" in p.name or ".old-" in p.name)


# ------------------------------------------------------------------------------ rates, checked once
@pytest.mark.parametrize("written, rate", [
    (30, Fraction(30)), ("30", Fraction(30)), ("30000/1001", Fraction(30000, 1001)), ("29.97", Fraction(30000, 1001)),
    (29.97, Fraction(30000, 1001)), ("23.976", Fraction(24000, 1001)), ("12.5", Fraction(25, 2)),
])
def test_rates_are_read_exactly(written, rate):
    assert checks.rate("output_fps", written) == rate
    assert load_config(output_fps=written).output_fps == str(rate)  # written one way in the config


@pytest.mark.parametrize("written", [0, -24, "abc", "nan", "inf", "1/0", True])
def test_bad_rates_are_config_errors(written):
    with pytest.raises(ConfigError, match="output_fps must be a positive frame rate"):
        load_config(output_fps=written)


def test_output_options_at_their_defaults_keep_the_hash():
    base = load_config().fingerprint()
    assert load_config(audio=True, output_fps=None, pix_fmt=None, input_fps=None).fingerprint() == base
    changed = [load_config(audio=False), load_config(output_fps=30), load_config(pix_fmt="yuv444p")]
    assert len({base, *(c.fingerprint() for c in changed)}) == 4  # a batch redoes its items


# ------------------------------------------------------------------------------ --fps, --no-audio, --pix-fmt
def test_fps_forces_the_rate_and_keeps_the_frames(tiny_models, samples, tmp_path):
    out = tmp_path / "out.mp4"
    translate(tiny_models, samples / AUDIO_CLIP, out, "--fps", "30000/1001")
    read = video_stream(out)
    assert (read["frames"], read["fps"]) == (3, Fraction(30000, 1001))
    assert probe(out).fps == Fraction(30000, 1001) and read["audio"]  # the audio is still copied
    record = yaml.safe_load((tmp_path / "out.mp4.vidreal.yaml").read_text())
    assert record["output_fps"] == "30000/1001" and record["result"]["fps"] == "30000/1001"
    assert record["result"]["source_fps"] == "24" and record["result"]["frames"] == 3


def test_no_audio_leaves_the_audio_out_and_the_default_keeps_it(tiny_models, samples, tmp_path):
    kept, dropped = tmp_path / "kept.mp4", tmp_path / "dropped.mp4"
    translate(tiny_models, samples / AUDIO_CLIP, kept)
    translate(tiny_models, samples / AUDIO_CLIP, dropped, "--no-audio")
    assert video_stream(kept)["audio"] and not video_stream(dropped)["audio"]
    assert video_stream(dropped)["frames"] == 3
    assert yaml.safe_load((tmp_path / "dropped.mp4.vidreal.yaml").read_text())["audio"] is False


def test_pix_fmt_is_the_files(tiny_models, samples, tmp_path):
    out = tmp_path / "out.mp4"
    translate(tiny_models, samples / AUDIO_CLIP, out, "--pix-fmt", "yuv444p")
    assert video_stream(out)["pix_fmt"] == "yuv444p"  # libx264's usual is yuv420p


@pytest.mark.parametrize("verb", ["translate", "batch"])
@pytest.mark.parametrize("flags, message", [
    (["--pix-fmt", "rgb24"], "pix_fmt 'rgb24' is not one libx264 encodes; valid: yuv420p, "),
    (["--codec", "libx264rgb", "--pix-fmt", "yuv420p"], "valid: bgr0, bgr24, rgb24"),
    (["--fps", "0"], "output_fps must be a positive frame rate"),
    (["--fps", "fast"], "output_fps must be a positive frame rate"),
])
def test_bad_output_values_are_one_usage_error_before_any_model(tmp_path, samples, verb, flags, message):
    inputs = [str(samples / AUDIO_CLIP), "-o", str(tmp_path / "out" / "o.mp4")] if verb == "translate" \
        else [str(samples), str(tmp_path / "out")]
    result = CliRunner().invoke(cli, [verb, *inputs, "--model", str(tmp_path / "no-such-model"), *flags])
    assert message in one_error_line(result, 2)
    assert not (tmp_path / "out").exists()


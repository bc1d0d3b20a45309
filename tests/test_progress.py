"""Progress that moves within a chunk, plain lines in logs, -q, --no-progress and Ctrl-C (issue 15)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import vidreal
from vidreal import logs, progress
from vidreal.cli import cli

ROOT = Path(__file__).resolve().parents[1]
ESCAPE = re.compile(r"\x1b\[")
PROMPT = "a person"


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("progress") / "in.mp4"
    frames = np.random.default_rng(1).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    vidreal.write_video(path, frames, 8)
    return path


@pytest.fixture(autouse=True)
def progress_on():
    progress.configure(enabled=True)
    yield
    progress.configure(enabled=True)
    logs.configure(0)  # a -v run must not leave the libraries at info for later tests


def model_args(tiny_models):
    return ["--model", str(tiny_models["sd"]), "--controlnet", f"canny={tiny_models['canny']}",
            "--controlnet", f"pose={tiny_models['pose']}", "--size", "32", "--steps", "2", "--chunk-size", "2"]


def test_plain_lines_advance_at_every_denoising_step_within_a_chunk(translator, clip, capsys, monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_INTERVAL", 0.0)  # a line per update (captured stderr is no terminal)
    frames, conds = clip[0][:3], {k: v[:3] for k, v in clip[1].items()}  # 3 frames, 2 chunks
    out = translator(frames, conds, PROMPT, num_inference_steps=2, chunk_size=2, size=None, progress=True)
    assert out.shape == frames.shape  # the frame count is kept
    err = capsys.readouterr().err
    assert "\r" not in err and not ESCAPE.search(err)
    lines = [line for line in err.splitlines() if line.startswith("translating")]
    steps = [line for line in lines if ", step " in line]
    # PNDM (the tiny model's scheduler, as SD 1.5's) runs steps + 1 timesteps; 3 frames at chunk 2 in
    # cross-frame mode are two batches ([0, 1], then the anchor + [2]): a line at every timestep of
    # both, counted in the 2 steps the user asked for (never "step 1/3").
    scheduler = translator.pipe.scheduler.__class__.from_config(translator.pipe.scheduler.config)
    scheduler.set_timesteps(2)
    n = len(scheduler.timesteps)
    assert n == 3  # 2 steps + PNDM's warm-up step
    counts = [(int(m[1]), int(m[2])) for m in (re.search(r"step (\d+)/(\d+)", line) for line in steps)]
    assert counts == [(1, 2), (2, 2), (2, 2)] * 2
    # Within the first chunk (frames 0-1) no frame is finished, yet the bar moves at each step, with a rate.
    first_chunk = [line for line in steps if "frames 0-1, step" in line]
    assert len(first_chunk) == n
    assert all("| 0/3 frames" in line for line in first_chunk)  # whole frames only: no "0.7/3"
    done = [int(re.search(r"(\d+)%", line)[1]) for line in first_chunk]
    assert done == sorted(done) and 0 < done[0] < done[-1] <= 67
    assert all(re.search(r"frame/s|s/frame", line) for line in first_chunk)  # a rate, hence an ETA
    assert "3/3 frames" in lines[-1] and "100%" in lines[-1]
    assert not any(re.search(r"\d\.\d/3 frames", line) for line in lines)


def test_terminal_gets_a_tqdm_bar_and_no_progress_gets_nothing(translator, clip, capsys, monkeypatch):
    frames, conds = clip
    monkeypatch.setattr(progress, "is_terminal", lambda stream=None: True)
    translator(frames[:1], {k: v[:1] for k, v in conds.items()}, PROMPT, num_inference_steps=2, size=None, progress=True)
    assert "\r" in capsys.readouterr().err  # tqdm's bar
    translator(frames[:1], {k: v[:1] for k, v in conds.items()}, PROMPT, num_inference_steps=2, size=None,
               progress=False)
    assert capsys.readouterr().err == ""


def test_plain_bar_throttles_lines_but_keeps_first_and_last(capsys, monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_INTERVAL", 3600.0)
    with progress.bar(total=100, desc="work", unit="item") as bar:
        for _ in range(100):
            bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3  # the start, the first move (first rate), the end
    assert lines[0].startswith("work:   0%") and lines[1].startswith("work:   1%") and "100/100" in lines[2]


def test_quiet_prints_nothing_on_success(tiny_models, video, tmp_path):
    out = tmp_path / "out.mp4"
    result = CliRunner().invoke(cli, ["-q", "translate", str(video), "-o", str(out), *model_args(tiny_models)])
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and result.stderr == ""
    assert vidreal.read_video(out).frames.shape[0] == 3


@pytest.mark.slow
def test_default_run_prints_one_line_per_output_and_each_warning_once(tiny_models, video, tmp_path):
    out = tmp_path / "out.mp4"
    result = CliRunner().invoke(cli, ["translate", str(video), "-o", str(out), *model_args(tiny_models),
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith(f"wrote {out} (3 frame(s)")
    assert "info:" not in result.stderr  # info needs -v
    warnings = [line for line in result.stderr.splitlines() if "no person" in line]  # random noise: no pose
    assert len(warnings) == 1 and warnings[0].startswith("warning: ")
    verbose = CliRunner().invoke(cli, ["-v", "translate", str(video), "-o", str(out), *model_args(tiny_models),
                                       "--no-progress"])
    assert "info: loaded" in verbose.stderr and "on cpu (float32)" in verbose.stderr


@pytest.mark.slow
def test_no_progress_hides_the_libraries_bars_too(tiny_models, video, tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "is_terminal", lambda stream=None: True)  # as on a terminal
    args = ["translate", str(video), "-o", str(tmp_path / "out.mp4"), *model_args(tiny_models)]
    default = CliRunner().invoke(cli, args)  # the libraries' loading bars are their chatter: -vv only
    assert default.exit_code == 0, default.output
    assert "Loading" not in default.stderr and "translating" in default.stderr
    shown = CliRunner().invoke(cli, ["-vv", *args])
    assert shown.exit_code == 0, shown.output
    assert "Loading pipeline components" in shown.stderr and "Loading weights" in shown.stderr
    hidden = CliRunner().invoke(cli, [*args, "--no-progress"])
    assert hidden.exit_code == 0, hidden.output
    assert "Loading" not in hidden.stderr and "translating" not in hidden.stderr and "\r" not in hidden.stderr


def _command(tiny_models, video, out, *extra):
    return [sys.executable, "-m", "vidreal", "translate", str(video), "-o", str(out), *model_args(tiny_models), *extra]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.mark.slow
def test_redirected_stderr_holds_plain_lines_only(tiny_models, video, tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as err:
        done = subprocess.run(_command(tiny_models, video, tmp_path / "out.mp4"), stderr=err,
                              stdout=subprocess.PIPE, env=_env(), timeout=300)
    assert done.returncode == 0
    text = log.read_text()
    assert "\r" not in text and not ESCAPE.search(text)
    assert "Loading pipeline components" not in text  # the libraries' bars are for terminals only
    assert re.search(r"^translating: +\d+%.*step \d+/2", text, re.M)


@pytest.mark.slow
def test_sigint_while_denoising_exits_130_and_writes_nothing(tiny_models, tmp_path):
    """SIGINT while denoising: exit 130, one error line, nothing written."""
    video = tmp_path / "long.mp4"
    vidreal.write_video(video, np.random.default_rng(2).integers(0, 255, (24, 32, 32, 3), dtype=np.uint8), 8)
    out = tmp_path / "out.mp4"
    cmd = _command(tiny_models, video, out, "--steps", "50")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=_env(), text=True)
    try:
        for line in proc.stderr:  # plain lines: the first step line means denoising has started
            if re.search(r"step \d+/", line):
                break
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        code = proc.wait()
    finally:
        proc.kill()
    assert code == 130
    assert "error: interrupted" in rest and "Traceback" not in rest
    assert not out.exists() and not list(tmp_path.glob("*.vidreal.yaml"))
    assert [p.name for p in tmp_path.iterdir()] == ["long.mp4"]  # no temporary file left either


def test_batch_shows_items_and_frames_for_the_dataset(translator, tmp_path, capsys, monkeypatch):
    from vidreal.batch import run_batch
    from vidreal.config import load_config

    monkeypatch.setattr(progress, "PLAIN_INTERVAL", 0.0)
    rng = np.random.default_rng(3)
    for name in ("a", "b"):
        vidreal.write_video(tmp_path / "in" / f"{name}.mp4", rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8), 8)
    config = load_config(size=32, steps=2, chunk_size=2)
    result = run_batch(tmp_path / "in", tmp_path / "out", config, translator=translator, progress=True)
    assert result.done == 2 and result.frames == 4
    err = capsys.readouterr().err
    assert "\r" not in err and not ESCAPE.search(err)
    batch = [line for line in err.splitlines() if line.startswith("batch:")]
    assert re.search(r"2/2 items .*, 4 frames, \d+\.\d\d frames/s, ETA 00:00, 0 failed", batch[-1]), batch[-1]
    assert any(re.search(r"1/2 items .*, 2 frames, \d+\.\d\d frames/s, ETA \d\d:\d\d", line) for line in batch)
    assert any(re.search(r"^translating: .*step 1/2", line) for line in err.splitlines())  # each item's steps


def test_verbose_is_vidreals_story_and_vv_adds_the_libraries(tiny_models, video, tmp_path):
    def stderr(*flags):
        cmd = [sys.executable, "-m", "vidreal", *flags, *_command(tiny_models, video, tmp_path / "out.mp4")[3:],
               "--no-progress"]
        done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stderr

    lines = stderr("-v").splitlines()
    assert any(line.startswith("info: loaded") for line in lines)
    assert all(re.match(r"(info|warning): (?!\[)", line) for line in lines), lines  # vidreal's own lines only
    assert re.search(r"CLIPTextConfig|loading weights file", stderr("-vv"))  # the libraries' info: -vv

"""The staged file pipeline (vidreal/stages.py, translate_file): same output as the serial path,
bounded queues, and a failure in any stage stops every stage, leaves nothing and gives one line."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import vidreal
from vidreal.cli import cli
from vidreal.conditions import DETECTORS, CannyDetector
from vidreal.errors import InputError, ModelError, OutputError
from vidreal.io import VideoWriter
from vidreal.stages import Stages, timed

ROOT = Path(__file__).resolve().parents[1]
CONTROLNETS = ("canny",)  # the ControlNets of the shared translator fixture (conftest.py)
STAGE_THREADS = ("vidreal-decode", "vidreal-conditions", "vidreal-encode")


def stage_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in STAGE_THREADS or t.name.startswith("vidreal-test")]


def endless():
    i = 0
    while True:  # a producer that never ends by itself: only a stop ends it
        yield np.full((2, 1, 1, 3), i % 256, np.uint8)
        i += 1


# ------------------------------------------------------------------------------ the stages alone
@pytest.mark.parametrize("overlap", [True, False])
def test_stages_keep_order_and_values(overlap):
    written = []
    with Stages(overlap) as stages:
        numbers = stages.ahead("decode", (np.full((3, 1, 1, 3), i, np.uint8) for i in range(20)))
        doubled = stages.ahead("conditions", (x * 2 for x in numbers))
        write = stages.behind("encode", lambda x: written.append(int(x[0, 0, 0, 0])))
        for x in stages.iterate("denoise", (x + 1 for x in doubled)):
            write(x)
        write.finish()
    assert written == [2 * i + 1 for i in range(20)]
    assert {name: stages.timings.frames[name] for name in ("decode", "conditions", "denoise", "encode")} == \
        dict.fromkeys(("decode", "conditions", "denoise", "encode"), 60)
    assert not stages.alive


def test_ahead_is_bounded():
    """A producer is never more than its queue (2) plus the item in hand ahead of its consumer."""
    made, taken = [0], 0
    with Stages(depth=2) as stages:
        def produce():
            for item in endless():
                made[0] += 1
                yield item

        ahead = stages.ahead("decode", produce())
        for _ in range(50):
            next(ahead)
            taken += 1
            assert made[0] <= taken + 3
    assert not stages.alive


@pytest.mark.parametrize("where", ["ahead", "behind", "caller"])
@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_failure_anywhere_stops_every_stage(where, error):
    """An endless decoder, a middle stage and a writer: whichever fails, every thread ends (no
    deadlock on a full or empty queue) and the caller gets that very exception."""
    def middle(items):
        for i, item in enumerate(items):
            if where == "ahead" and i == 5:
                raise error
            yield item

    def write(item):
        if where == "behind" and item[0, 0, 0, 0] == 7:
            raise error

    with pytest.raises(type(error)) as info:
        with Stages() as stages:
            pieces = stages.ahead("conditions", middle(stages.ahead("decode", endless())))
            encode = stages.behind("encode", write)
            for i, item in enumerate(stages.iterate("denoise", pieces)):
                if where == "caller" and i == 9:
                    raise error
                encode(item)
    assert info.value is error
    assert not stages.alive and not stage_threads()


def test_timed_blocks_count_for_their_own_stage_only():
    with Stages(overlap=False) as stages:
        def work(items):
            for item in items:
                with timed("propagation", frames=1):
                    pass
                yield item

        for _ in stages.iterate("denoise", work(stages.ahead("decode", (np.zeros((4, 1, 1, 3), np.uint8),)))):
            pass
    report = stages.timings.report(("decode", "flow"))
    assert list(report)[:2] == ["decode", "flow"] and report["flow"] == {
        "ms_per_frame": 0.0, "busy": 0.0, "seconds": 0.0, "frames": 0}
    assert report["propagation"]["frames"] == 1 and report["decode"]["frames"] == 4
    assert all(set(r) == {"ms_per_frame", "busy", "seconds", "frames"} for r in report.values())
    with timed("x"):  # outside a run: nothing is counted, nothing fails
        pass


def _priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priorities are Linux's")
def test_work_with_slack_runs_in_background_threads():
    """The encoding stage (behind the denoiser) and the flow workers (ahead of their use) run at a lower
    priority than the chain that feeds the denoiser, which keeps the caller's."""
    from vidreal.flow import FlowPool
    from vidreal.runtime import BACKGROUND_NICE

    mine, seen = _priority(), {}
    with Stages() as stages:
        decoded = stages.ahead("decode", (np.zeros((1, 1, 1, 3), np.uint8) for _ in range(2)))
        encode = stages.behind("encode", lambda item: seen.setdefault("encode", _priority()), background=True)
        plain = stages.behind("plain", lambda item: seen.setdefault("plain", _priority()))
        for item in stages.iterate("denoise", decoded):
            seen.setdefault("denoise", _priority())
            encode(item)
            plain(item)
        encode.finish()
        plain.finish()
    pool = FlowPool("dis-fast")
    try:
        seen["flow"] = pool.submit(lambda pairs: _priority()).result()
    finally:
        pool.close()
    lower = min(19, mine + BACKGROUND_NICE)
    assert seen == {"denoise": mine, "plain": mine, "encode": lower, "flow": lower}
    assert _priority() == mine  # the caller's own priority is untouched


# ---------------------------------------------------------------------------- translate_file
@pytest.fixture(scope="module")
def config(tiny_models):
    return vidreal.load_config(model=str(tiny_models["sd"]), controlnets={"canny": str(tiny_models["canny"])},
                               size=32, steps=1, chunk_size=4, max_frames=16, consistency="cross-frame")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 24-frame clip whose second half is corrupt (its first frames decode)."""
    folder = tmp_path_factory.mktemp("clips")
    frames = np.random.default_rng(0).integers(0, 255, (24, 48, 64, 3), dtype=np.uint8)
    good = vidreal.write_video(folder / "good.mp4", frames, 12)
    data = bytearray(good.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 3000, 7):
        data[i] ^= 0xFF
    (folder / "bad.mp4").write_bytes(bytes(data))
    return {"good": good, "bad": folder / "bad.mp4"}


@pytest.mark.slow
def test_overlapped_writes_the_same_frames_as_serial(translator, config, samples, tmp_path):
    src = samples / "humanoid_walk_ground.mp4"
    keyed = vidreal.load_config(**{**config.to_dict(), "keyframe_every": 3})
    out = {}
    for overlap in (False, True):
        folder = tmp_path / str(overlap)
        result = vidreal.translate_file(src, folder / "out.mp4", keyed, translator=translator, progress=False,
                                        preview=folder / "side.mp4", save_conditions=folder, overlap=overlap)
        out[overlap] = [vidreal.read_video(folder / name).frames for name in ("out.mp4", "side.mp4", "out.canny.mp4")]
        assert result.stages["decode"]["frames"] == 16 and result.stages["encode"]["frames"] == 16
        assert result.stages["denoise"]["frames"] == 6  # keyframes 0, 3, ..., 15
    for serial, overlapped in zip(out[False], out[True]):
        assert serial.shape[0] == 16 and np.array_equal(serial, overlapped)


def failing_canny(error, at_call=3):
    class Failing(CannyDetector):
        calls = 0

        def process(self, frames):
            Failing.calls += 1
            if Failing.calls == at_call:
                raise error
            return super().process(frames)

    return Failing


def full_disk(after_frames=2):
    """VideoWriter._encode_frame failing as a full disk does, after some frames of the output."""
    original = VideoWriter._encode_frame

    def encode(self, frame):
        if self.path.name == "out.mp4" and self.n_frames >= after_frames:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(self, frame)

    return encode


@pytest.mark.parametrize("case", ["corrupt", "detector", "disk full", "interrupt"])
def test_a_stage_failure_leaves_nothing_behind(translator, config, clip, tmp_path, monkeypatch, case):
    src = clip["bad" if case == "corrupt" else "good"]
    expected = {"corrupt": InputError, "detector": ModelError, "disk full": OutputError,
                "interrupt": KeyboardInterrupt}[case]
    if case in ("detector", "interrupt"):
        error = ModelError("canny detector failed") if case == "detector" else KeyboardInterrupt()
        monkeypatch.setitem(DETECTORS, "canny", failing_canny(error))
    if case == "disk full":
        monkeypatch.setattr(VideoWriter, "_encode_frame", full_disk())
    full = vidreal.load_config(**{**config.to_dict(), "max_frames": None})
    out = tmp_path / "out"
    with pytest.raises(expected) as info:
        vidreal.translate_file(src, out / "out.mp4", full, translator=translator, progress=False,
                               preview=out / "side.mp4", save_conditions=out)
    if case == "corrupt":
        assert "cannot decode frame" in str(info.value)
    if case == "disk full":
        assert str(info.value) == f"encoding failed (No space left on device) ({out / 'out.mp4'})"
    assert len(str(info.value).splitlines()) <= 1
    assert not out.exists() or not list(out.iterdir())
    assert not stage_threads()


@pytest.mark.slow
@pytest.mark.parametrize("case", ["corrupt", "detector", "disk full", "interrupt"])
def test_cli_stage_failure_is_one_line(tiny_models, clip, tmp_path, monkeypatch, case):
    src = clip["bad" if case == "corrupt" else "good"]
    if case in ("detector", "interrupt"):
        error = ModelError("canny detector failed") if case == "detector" else KeyboardInterrupt()
        monkeypatch.setitem(DETECTORS, "canny", failing_canny(error))
    if case == "disk full":
        monkeypatch.setattr(VideoWriter, "_encode_frame", full_disk())
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["translate", str(src), "-o", str(out / "out.mp4"), "--model", str(tiny_models["sd"]),
                                   "--controlnet", f"canny={tiny_models['canny']}", "--size", "32", "--steps", "1",
                                   "--chunk-size", "4", "--no-progress", "--preview", str(out / "side.mp4")])
    assert "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == (130 if case == "interrupt" else 1) and len(lines) == 1, res.output
    assert lines[0] == {"corrupt": lines[0], "detector": "error: canny detector failed",
                        "disk full": f"error: encoding failed (No space left on device) ({out / 'out.mp4'})",
                        "interrupt": "error: interrupted"}[case]
    assert not out.exists() or not list(out.iterdir())
    assert not stage_threads()


# ------------------------------------------------------------------------------ the bench tool
@pytest.mark.slow
def test_bench_pipeline_json(tiny_models, samples, tmp_path):
    """tools/bench_pipeline.py with the stand-in denoiser: one JSON line with every stage."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench_pipeline.py"), str(samples / "humanoid_walk_ground.mp4"),
         "--standin-ms", "5", "--size", "64", "--frames", "12", "--keyframe-every", "4", "--kind", "canny",
         "--kind", "pose", "--models", str(tiny_models["sd"].parent), "--json"],
        capture_output=True, text=True, check=True, cwd=tmp_path)
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(report) >= {"fps", "frames", "keyframes", "stages"} and report["frames"] == 12
    assert report["keyframes"] == 4 and isinstance(report["fps"], float)  # 0, 4, 8 and the last
    assert set(report["stages"]) == {"decode", "conditions", "flow", "propagation", "denoise", "encode"}
    for figures in report["stages"].values():
        assert set(figures) >= {"ms_per_frame", "busy"}
    # with keyframes and the stand-in, the denoising thread's own time per propagated frame is reported
    assert {"denoise_thread_ms_per_propagated", "denoise_thread_cpu_ms_per_propagated"} <= set(report)
    assert report["torch_threads"] == 1 and "cpu_cores" in report  # the stand-in's torch: one thread

"""Frame selection (--start/--end/--every/--max-frames) and `vidreal batch --estimate`.

Index rules and errors need no model; translations use the tiny random models with the canny
ControlNet only (no pose detector: fast); clips are the 48-frame 24 fps samples or made here.
"""
from __future__ import annotations

import hashlib
import json
from fractions import Fraction
from pathlib import Path

import av
import decord
import numpy as np
import pytest
from click.testing import CliRunner

from vidreal import io, selection
from vidreal.batch import read_manifest, run_batch
from vidreal.batch.estimate import estimate_batch
from vidreal.batch.executors import plan_workers
from vidreal.cli import cli
from vidreal.config import LATER_KEYS, UNSET_KEYS, load_config
from vidreal.errors import ConfigError, InputError
from vidreal.progress import DatasetRate

AUDIO_CLIP = "humanoid_walk_audio.mp4"  # 48 frames, 24 fps, 2 s of AAC


def clip_info(n=48, fps=24, timestamps=None, audio=False, path="clip.mp4"):
    return io.VideoInfo(Path(path), n, None if fps is None else Fraction(fps), 64, 64, audio, fps is None, timestamps)


# ----------------------------------------------------------------------------- index rules, no model


def test_every_5_on_48_frames_at_24_fps_keeps_10_frames_at_4_8_fps():
    plan = selection.select(clip_info(), every=5)
    assert plan.indices.tolist() == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45]
    assert plan.info.n_frames == 10 and plan.info.fps == Fraction(24, 5) and float(plan.info.fps) == 4.8


@pytest.mark.parametrize("kw, kept", [
    (dict(start=12, end=36), list(range(12, 36))),  # end is exclusive
    (dict(start="0.5s", end="1.5s"), list(range(12, 36))),  # seconds: frames with 0.5 <= t < 1.5
    (dict(start="0.51s"), list(range(13, 48))),  # the first frame at or after the time
    (dict(end=100), list(range(48))),  # an end past the clip is its end
    (dict(start=10, every=7, max_frames=3), [10, 17, 24]),
    (dict(max_frames=4), [0, 1, 2, 3]),
    (dict(start=47), [47]),
    (dict(start="0s", end="2s", every=16), [0, 16, 32]),
])
def test_kept_indices(kw, kept):
    assert selection.select(clip_info(), **kw).indices.tolist() == kept


def test_audio_span_covers_the_kept_frames():
    info = clip_info(audio=True)
    assert selection.select(info, start=12, end=36, every=2).audio_span == (0.5, 1.5)
    assert selection.select(info, start=12, every=5, max_frames=2).audio_span == (0.5, 22 / 24)  # 12, 17 (+5)
    assert selection.select(info).audio_span is None  # every frame: the audio as it is
    assert selection.select(clip_info(audio=False), start=12).audio_span is None


def test_variable_frame_rate_seconds_use_frame_times():
    times = np.array([0.0, 0.1, 0.15, 0.5, 0.9, 1.0])
    plan = selection.select(clip_info(6, fps=10, timestamps=times), start="0.15s", end="0.95s")
    assert plan.indices.tolist() == [2, 3, 4]
    assert np.allclose(plan.info.timestamps, [0.0, 0.35, 0.75])  # kept frames keep their spacing


def test_still_image_rules():
    image = clip_info(1, fps=None, path="a.png")
    for kw in (dict(), dict(start=0, end=1), dict(every=5), dict(max_frames=3), dict(end=10)):
        plan = selection.select(image, **kw)
        assert plan.indices.tolist() == [0] and not plan.active and plan.info is image
    with pytest.raises(InputError, match="start 1 is past the end of the clip .a still image: frame 0 only"):
        selection.select(image, start=1)
    with pytest.raises(InputError, match="a still image has no time"):
        selection.select(image, end="1s")


@pytest.mark.parametrize("kw, message", [
    (dict(every=0), "every must be a positive integer"),
    (dict(every=-2), "every must be a positive integer"),
    (dict(max_frames=0), "max_frames must be a positive integer"),
    (dict(start=-1), "start must be a frame index"),
    (dict(start="2.5sec"), "start must be a frame index .* or seconds such as 2.5s, got '2.5sec'"),
    (dict(end="1,5s"), "end must be a frame index"),
    (dict(start=2.5), r"write 2.5s for seconds"),
    (dict(start=10, end=5), r"end \(5\) must be after start \(10\)"),
    (dict(start="1s", end="1s"), r"end \(1s\) must be after start \(1s\)"),
    (dict(end=0), r"end \(0\) must be after start \(0\)"),
])
def test_values_wrong_for_every_clip_are_config_errors(kw, message):
    with pytest.raises(ConfigError, match=message):
        selection.check(**kw)
    with pytest.raises(ConfigError, match=message):
        load_config(**kw)


@pytest.mark.parametrize("kw, message", [
    (dict(start=48), r"start 48 is past the end of the clip \(48 frames, 2.00 s\)"),
    (dict(start="3s"), r"start 3s \(frame 72\) is past the end"),
    (dict(start="1s", end=10), r"end 10 is not after start 1s \(frame 24\)"),
])
def test_values_wrong_for_this_clip_are_input_errors(kw, message):
    with pytest.raises(InputError, match=message):
        selection.select(clip_info(), **kw)


def test_config_normalises_and_hashes_the_selection():
    default = load_config()
    data = default.to_dict()
    for key in ("device", "compile", "kv_cache", *UNSET_KEYS, *LATER_KEYS, *selection.KEYS):  # unset (vae, output keys)
        data.pop(key)
    # every frame kept: the hash configs had before selection existed (old manifests stay valid)
    assert default.fingerprint() == hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    assert load_config(start="0", every=1).fingerprint() == default.fingerprint()
    cli_like = load_config(start="12", end="2.50s", every=5)
    assert (cli_like.start, cli_like.end, cli_like.every) == (12, "2.5s", 5)
    assert cli_like.fingerprint() == load_config(start=12, end="2.5s", every=5).fingerprint()
    assert len({default.fingerprint(), cli_like.fingerprint(), load_config(every=2).fingerprint(),
                load_config(max_frames=16).fingerprint()}) == 4


# ----------------------------------------------------------------------------- decoding and audio


class RecordingReader(decord.VideoReader):
    batches: list = []

    def get_batch(self, indices):
        RecordingReader.batches.append(list(indices))
        return super().get_batch(indices)


def test_decoder_reads_only_the_kept_frames(samples, monkeypatch):
    path = samples / "humanoid_walk_ground.mp4"
    full = io.read_video(path).frames
    monkeypatch.setattr(decord, "VideoReader", RecordingReader)
    RecordingReader.batches = []
    plan = selection.select(io.probe(path), start=3, every=5, max_frames=7)
    chunks = list(io.iter_video(path, chunk_size=3, indices=plan.indices))
    assert RecordingReader.batches == [[3, 8, 13], [18, 23, 28], [33]]  # streamed, chunk_size at a time
    assert [len(c) for c in chunks] == [3, 3, 1]
    assert np.array_equal(np.concatenate(chunks), full[[3, 8, 13, 18, 23, 28, 33]])


def test_bad_indices_are_refused(samples):
    media = io.open_media(samples / "humanoid_walk_ground.mp4")
    for bad in ([], [3, 2], [0, 48], [-1]):
        with pytest.raises(ValueError, match="indices must be increasing frame numbers"):
            media.chunks(4, bad)


def audio_packets(path: Path) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return [(p.pts, bytes(p)) for p in container.demux(stream) if p.size]


def test_audio_is_trimmed_to_the_span(samples, tmp_path):
    source = samples / AUDIO_CLIP
    frames = io.read_video(source).frames[12:36:2]
    out = io.write_video(tmp_path / "a.mp4", frames, 12, audio_from=source, audio_span=(0.5, 1.5))
    rate = 22050
    src, got = audio_packets(source), audio_packets(out)
    kept = [data for pts, data in src if 0.5 * rate - 1 <= pts < 1.5 * rate - 1]
    assert [data for _, data in got] == kept  # the packets of the span, copied unchanged
    assert got[0][0] == 0  # and moved to the output's start
    duration = (got[-1][0] + 1024 - got[0][0]) / rate
    assert abs(duration - 1.0) <= 1024 / rate  # 1 s of audio, to one packet
    info = io.probe(out)
    assert info.n_frames == 12 and info.fps == 12 and info.has_audio


# ----------------------------------------------------------------------------- CLI, no model


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.slow
def test_conditions_every_5(samples, tmp_path):
    out = tmp_path / "edges.mp4"
    result = run("conditions", samples / AUDIO_CLIP, "-o", out, "--kind", "canny", "--every", "5", "--no-progress")
    assert result.exit_code == 0, result.output
    info = io.probe(out)
    assert (info.n_frames, info.fps) == (10, Fraction(24, 5))
    from vidreal.conditions import extract_conditions

    expected = extract_conditions(io.read_video(samples / AUDIO_CLIP).frames[::5], kinds=("canny",))["canny"]
    got = io.read_video(out).frames
    # the maps of exactly frames 0, 5, ..., 45 (H.264 at crf 18: compare edges, not exact levels)
    assert np.mean((got > 127) == (expected > 127)) > 0.97
    assert np.mean((got > 127) == (np.roll(expected, 1, axis=0) > 127)) < np.mean((got > 127) == (expected > 127))


CONFIG_ERRORS = [
    (["--every", "0"], "error: every must be a positive integer"),
    (["--start", "10", "--end", "5"], "error: end (5) must be after start (10)"),
    (["--max-frames", "0"], "error: max_frames must be a positive integer"),
    (["--start", "2.5sec"], "error: start must be a frame index (0, 1, ...) or seconds such as 2.5s, got '2.5sec'"),
]
CLIP_ERRORS = [
    (["--start", "60"], "start 60 is past the end of the clip (48 frames, 2.00 s)"),
    (["--start", "1s", "--end", "10"], "end 10 is not after start 1s (frame 24)"),
]


def one_clip(samples, tmp_path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.mp4").write_bytes((samples / AUDIO_CLIP).read_bytes())
    return src


@pytest.mark.parametrize("args, message, code", [(a, m, 2) for a, m in CONFIG_ERRORS]  # usage errors
                         + [(a, "error: " + m, 1) for a, m in CLIP_ERRORS])  # found reading the clip
@pytest.mark.parametrize("verb", ["translate", "conditions"])
def test_bad_selection_is_one_line_and_writes_nothing(samples, tmp_path, verb, args, message, code):
    src, out = one_clip(samples, tmp_path), tmp_path / "out"
    result = run(verb, src / "a.mp4", "-o", out / "a.mp4", *args, "--no-progress")
    assert result.exit_code == code
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.output
    assert not out.exists()


@pytest.mark.parametrize("args, message", CONFIG_ERRORS)
def test_bad_selection_stops_a_batch_before_it_writes(samples, tmp_path, args, message):
    src, out = one_clip(samples, tmp_path), tmp_path / "out"
    for extra in ([], ["--estimate"]):
        result = run("batch", src, out, *args, *extra, "--no-progress")
        assert result.exit_code == 2
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), result.output
        assert not out.exists()


@pytest.mark.parametrize("args, message", CLIP_ERRORS)
def test_estimate_lists_items_the_selection_does_not_fit(samples, tmp_path, args, message):
    # a batch goes on past a bad item (recorded as failed, exit 1); its estimate lists it and exits 1
    src, out = one_clip(samples, tmp_path), tmp_path / "out"
    result = run("batch", src, out, *args, "--estimate", "--no-progress")
    assert result.exit_code == 1
    assert "0 to translate, 0 already done, 1 would fail" in result.output
    assert f"  a.mp4: {message}" in result.output
    assert not out.exists()


# ----------------------------------------------------------------------------- with tiny models


def canny_args(models, *extra):
    return ["--model", str(models["sd"]), "--controlnet", f"canny={models['canny']}", "--size", "32",
            "--steps", "2", "--chunk-size", "4", "--device", "cpu", "--no-progress", *extra]


@pytest.mark.slow
def test_translate_keeps_the_selected_frames_fps_and_audio_span(samples, tiny_models, tmp_path):
    out, maps = tmp_path / "a.mp4", tmp_path / "maps"
    result = run("translate", samples / AUDIO_CLIP, "-o", out, *canny_args(tiny_models), "--start", "0.5s",
                 "--end", "36", "--every", "2", "--save-conditions", maps, "--codec", "libx264rgb", "--crf", "0")
    assert result.exit_code == 0, result.output
    info = io.probe(out)
    assert (info.n_frames, info.fps, info.has_audio) == (12, 12, True)
    got = audio_packets(out)
    assert abs((got[-1][0] + 1024) / 22050 - 1.0) <= 1024 / 22050
    # the condition maps are those of exactly source frames 12, 14, ..., 34 (lossless here)
    from vidreal.conditions import extract_conditions

    source = io.resize_frames(io.read_video(samples / AUDIO_CLIP).frames[12:36:2], 32, 32)
    expected = extract_conditions(source, kinds=("canny",))["canny"]
    assert np.array_equal(io.read_video(maps / "a.canny.mp4").frames, expected)
    import yaml

    record = yaml.safe_load((tmp_path / "a.mp4.vidreal.yaml").read_text())
    assert (record["start"], record["end"], record["every"], record["max_frames"]) == ("0.5s", 36, 2, None)
    assert record["result"]["frames"] == 12 and record["result"]["fps"] == "12"
    assert record["result"]["selection"] == {"source_frames": 48, "kept": "12..34 step 2", "frames": 12,
                                             "fps": "12", "audio_seconds": [0.5, 1.5]}


def square_clips(root: Path, n_frames=(10, 7)) -> dict[str, int]:
    items = {}
    for i, n in enumerate(n_frames):
        frames = np.zeros((n, 32, 32, 3), np.uint8)
        for t in range(n):
            frames[t, 8:20, 2 + 2 * t:14 + 2 * t] = (250, 200, 40 * i)
        io.write_video(root / f"c{i}.mp4", frames, fps=10)
        items[f"c{i}.mp4"] = n
    return items


def tiny_config(models, **overrides):
    return load_config(model=str(models["sd"]), controlnets={"canny": str(models["canny"])}, size=32, steps=2,
                       chunk_size=4, device="cpu", **overrides)


@pytest.fixture(scope="module")
def canny_translator(tiny_models):
    from vidreal.translate import load_translator

    return load_translator(tiny_config(tiny_models))


@pytest.mark.slow
def test_batch_selection_frames_resume_and_progress(tiny_models, canny_translator, tmp_path, capsys):
    from vidreal import progress

    progress.configure(enabled=True)  # an earlier CLI test's --no-progress turned the bars off
    square_clips(tmp_path / "in")
    out = tmp_path / "out"
    config = tiny_config(tiny_models, every=3)
    result = run_batch(tmp_path / "in", out, config, translator=canny_translator)
    assert (result.done, result.frames) == (2, 4 + 3)  # 10 frames -> 0,3,6,9; 7 -> 0,3,6
    assert io.probe(out / "c0.mp4").fps == Fraction(10, 3)
    latest = read_manifest(out / "manifest.jsonl")
    assert {rel: rec["frames"] for rel, rec in latest.items()} == {"c0.mp4": 4, "c1.mp4": 3}
    bar = capsys.readouterr().err  # plain progress lines (stderr is not a terminal here)
    assert "frames/s, ETA" in bar and "7 frames" in bar
    again = run_batch(tmp_path / "in", out, config, translator=canny_translator, progress=False)
    assert (again.done, again.skipped) == (0, 2)
    changed = run_batch(tmp_path / "in", out, tiny_config(tiny_models, every=3, max_frames=2),
                        translator=canny_translator, progress=False)
    assert (changed.done, changed.frames) == (2, 4)  # the selection is in the config hash: redone


def tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.mark.slow
def test_estimate_counts_and_projects_and_writes_nothing(tiny_models, canny_translator, tmp_path):
    square_clips(tmp_path / "in", (10, 7, 5))
    before = tree(tmp_path)
    # the warm-up's clock, scripted: untimed run, then 4 frames in 4.5 s, then 1 frame in 1.5 s
    clock = iter([0.0, 100.0, 100.0, 104.5, 104.5, 106.0]).__next__
    estimate = estimate_batch(tmp_path / "in", tmp_path / "out", tiny_config(tiny_models, every=2),
                              translator=canny_translator, progress=False, clock=clock)
    assert tree(tmp_path) == before  # no OUT_DIR, no manifest, no temporary file
    assert (estimate.items, estimate.frames, estimate.skipped, estimate.workers) == (3, 5 + 4 + 3, 0, 1)
    assert estimate.warmup_item == "c0.mp4" and estimate.warmup_frames == 4  # chunk_size frames of the first
    # (4.5 - 1.5) / 3 = 1 s per frame; 4.5 - 4 x 1 = 0.5 s per item; 3 items, 12 frames
    assert (estimate.seconds_per_frame, estimate.seconds_per_item) == (pytest.approx(1.0), pytest.approx(0.5))
    assert estimate.seconds == pytest.approx(3 * 0.5 + 12 * 1.0)
    table = estimate.table()
    assert "3 to translate, 0 already done, 0 would fail" in table and "12 to translate" in table
    assert "s/frame" in table and "/ 1 worker(s)" in table


@pytest.mark.slow
def test_estimate_skips_done_items_and_divides_by_ray_workers(tiny_models, canny_translator, tmp_path, monkeypatch):
    square_clips(tmp_path / "in", (10, 7))
    config = tiny_config(tiny_models, max_frames=2)
    run_batch(tmp_path / "in", tmp_path / "out", config, translator=canny_translator, progress=False,
              pattern="c0.mp4")
    before = tree(tmp_path)
    import vidreal.batch.estimate as estimate_module

    monkeypatch.setattr(estimate_module, "import_ray", lambda: None)
    monkeypatch.setattr(estimate_module, "ray_workers", lambda address, workers, gpus: 4)
    # the warm-up's clock, scripted: untimed run, then 2 frames in 3 s, then 1 frame in 2 s
    clock = iter([0.0, 50.0, 50.0, 53.0, 53.0, 55.0]).__next__
    estimate = estimate_batch(tmp_path / "in", tmp_path / "out", config, executor="ray",
                              translator=canny_translator, progress=False, clock=clock)
    assert tree(tmp_path) == before  # the manifest is read, not written
    assert (estimate.items, estimate.frames, estimate.skipped, estimate.workers) == (1, 2, 1, 4)
    # (3 - 2) / 1 = 1 s per frame, 3 - 2 x 1 = 1 s per item: (1 + 2 x 1) / 4 workers
    assert estimate.seconds == pytest.approx((1.0 + 2 * 1.0) / 4)
    assert "/ 4 worker(s)" in estimate.table()


@pytest.mark.slow
def test_estimate_cli(tiny_models, tmp_path):
    square_clips(tmp_path / "in", (6,))
    result = run("batch", tmp_path / "in", tmp_path / "out", *canny_args(tiny_models), "--max-frames", "3",
                 "--estimate")
    assert result.exit_code == 0, result.output
    assert "1 to translate" in result.output and "3 to translate (after frame selection)" in result.output
    assert "projected" in result.output and not (tmp_path / "out").exists()


def test_plan_workers_counts_gpus():
    assert plan_workers({"GPU": 4, "CPU": 16}) == (4, 1, 1)
    assert plan_workers({"GPU": 4, "CPU": 16}, gpus_per_worker=2) == (2, 2, 1)
    assert plan_workers({"CPU": 8}) == (1, 0, 8)
    with pytest.raises(ConfigError, match="3 worker.s. x 1 GPU.s. need 3 GPUs; the Ray cluster has 2"):
        plan_workers({"GPU": 2, "CPU": 8}, workers=3)


def test_dataset_rate_and_eta():
    now = [100.0]
    rate = DatasetRate(4, clock=lambda: now[0])
    assert rate.eta() is None and "ETA ?" in rate.text()
    rate.add(10, seconds=5.0)  # the first item started 5 s ago
    assert rate.frames_per_second() == 2.0
    now[0] = 110.0
    rate.add(20, seconds=10.0)
    assert rate.frames_per_second() == 2.0  # 30 frames in 15 s
    assert rate.eta() == pytest.approx(2 * 15 / 2.0)  # 2 items left of 15 frames each at 2 frames/s
    assert rate.text() == "30 frames, 2.00 frames/s, ETA 00:15"

"""Reliability findings of issue 10, each reproduced through the public paths (tiny models)."""
from __future__ import annotations

import os
import subprocess
from fractions import Fraction

import av
import decord
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import vidreal
from vidreal.batch import run_batch
from vidreal.cli import cli
from vidreal.errors import ConfigError, InputError, OutputError

CONTROLNETS = ("canny",)  # the ControlNets of the shared translator fixture (conftest.py)


def moving_square(n=8, h=48, w=64) -> np.ndarray:
    frames = np.zeros((n, h, w, 3), np.uint8)
    frames[..., 0] = np.linspace(0, 200, w, dtype=np.uint8)[None, None]
    frames[..., 2] = 90
    for t in range(n):
        frames[t, h // 4:h // 4 + h // 3, 4 + 3 * t:4 + 3 * t + w // 3] = (250, 250, 60)
    return frames


@pytest.fixture(scope="module")
def config(tiny_models):
    return vidreal.load_config(model=str(tiny_models["sd"]), controlnets={"canny": str(tiny_models["canny"])},
                               size=32, steps=2, consistency="per-frame")


def tiny_args(tiny_models):
    return ["--model", str(tiny_models["sd"]), "--controlnet", f"canny={tiny_models['canny']}", "--size", "32",
            "--steps", "2", "--no-progress"]


def images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(moving_square(1, 32, 32)[0]).save(folder / name)
    return folder


def error_lines(output: str) -> list[str]:
    """The ``error:`` lines of a CLI run (diffusers' own loading bars may precede them)."""
    assert "Traceback" not in output
    return [line for line in output.splitlines() if line.startswith("error:") or "Error" in line]


# --------------------------------------------------------------------------------------- symlinks
def test_symlink_loop_inside_in_dir_is_one_failed_item(translator, config, tmp_path):
    src = images(tmp_path / "in", ["a.png", "c.png"])
    os.symlink("loop.png", src / "loop.png")  # points at itself
    result = run_batch(src, tmp_path / "out", config, translator=translator, progress=False)
    assert (result.done, result.failed) == (2, 1)
    assert result.failures[0][0] == "loop.png" and "symlink loop" in result.failures[0][1]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["a.png", "c.png"]


def test_translate_says_what_a_bad_symlink_is(tmp_path):
    os.symlink("loop.mp4", tmp_path / "loop.mp4")
    os.symlink("gone.mp4", tmp_path / "dangling.mp4")
    for name, phrase in (("loop.mp4", "symlink loop: the link points back to itself"), ("dangling.mp4", "broken symlink: it points to gone.mp4, which does not exist")):
        res = CliRunner().invoke(cli, ["translate", str(tmp_path / name), "-o", str(tmp_path / "o.mp4")])
        assert res.exit_code == 1 and error_lines(res.output) == [f"error: {phrase} ({tmp_path / name})"]


def test_list_file_inside_out_dir_is_never_overwritten(translator, config, tmp_path):
    src = images(tmp_path / "in", ["a.png", "b.png"])
    out = tmp_path / "out"
    out.mkdir()
    listing = out / "split.txt"
    listing.write_text("a.png 0\nb.png 1\nmissing.png 2\n")
    before = listing.read_text()
    with pytest.raises(ConfigError, match="the input list is never overwritten"):
        run_batch(src, out, config, list_file=listing, translator=translator, progress=False)
    assert listing.read_text() == before and sorted(p.name for p in out.iterdir()) == ["split.txt"]


@pytest.mark.parametrize("name", ["manifest.jsonl", "batch.vidreal.yaml"])
def test_symlinked_batch_files_are_refused(translator, config, tmp_path, name):
    src = images(tmp_path / "in", ["a.png"])
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "precious.txt"
    outside.write_text('{"input": "x"}\n{"input": "torn')
    os.symlink(outside, out / name)
    with pytest.raises(OutputError, match="is a symlink"):
        run_batch(src, out, config, translator=translator, progress=False)
    assert outside.read_text() == '{"input": "x"}\n{"input": "torn'
    assert not (out / "a.png").exists()


# ---------------------------------------------------------------------------- variable frame rate
def vfr_clip(path, n=10):
    """An mp4 whose frames sit at irregular times (0.03 .. 0.6 s apart)."""
    rng = np.random.default_rng(0)
    times = np.concatenate([[0.0], np.cumsum(rng.uniform(0.03, 0.6, n - 1))])
    frames = moving_square(n)
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=24)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
    for frame, t in zip(frames, times):
        video = av.VideoFrame.from_ndarray(frame, format="rgb24")
        video.pts, video.time_base = round(t * 1000), Fraction(1, 1000)
        container.mux(stream.encode(video))
    container.mux(stream.encode())
    container.close()
    return path, times


def frame_times(path) -> np.ndarray:
    reader = decord.VideoReader(str(path))
    return reader.get_frame_timestamp(list(range(len(reader))))[:, 0]


def test_variable_frame_rate_keeps_each_frame_time(translator, config, tmp_path):
    src, times = vfr_clip(tmp_path / "vfr.mp4")
    vidreal.translate_file(src, tmp_path / "out.mp4", config, translator=translator, progress=False)
    out_times = frame_times(tmp_path / "out.mp4")
    assert len(out_times) == len(times)
    np.testing.assert_allclose(out_times, times, atol=2e-3)  # not i / nominal fps
    assert "variable frame rate" in (tmp_path / "out.mp4.vidreal.yaml").read_text()
    np.testing.assert_allclose(vidreal.probe(src).timestamps, times, atol=2e-3)
    from vidreal.conditions import extract_file

    extract_file(src, tmp_path / "canny.mp4", kinds=("canny",), progress=False)
    np.testing.assert_allclose(frame_times(tmp_path / "canny.mp4"), times, atol=2e-3)


# ------------------------------------------------------------------------------------ disk full
@pytest.fixture()
def small_disk(tmp_path):
    """A real 1 MiB tmpfs (root only), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk, leave_bytes: int) -> None:
    """Fill ``disk`` completely, then free ``leave_bytes`` (rounded up to 4 KiB pages)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - -(-leave_bytes // 4096) * 4096))


def test_disk_full_on_the_record_is_one_line_and_moves_nothing(tiny_models, tmp_path, small_disk):
    src = vidreal.write_video(tmp_path / "in.mp4", moving_square(4), 12)
    # a long negative prompt makes the record ~200 KiB: 64 KiB of slack for the video leave it no room
    args = [str(src), *tiny_args(tiny_models), "--negative-prompt", "lowres " * 30000]
    res = CliRunner().invoke(cli, ["translate", *args, "-o", str(tmp_path / "ref.mp4")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "ref.mp4.vidreal.yaml").stat().st_size > 128 * 1024
    fill(small_disk, (tmp_path / "ref.mp4").stat().st_size + 64 * 1024)  # room for the video, not for its record
    res = CliRunner().invoke(cli, ["translate", *args, "-o", str(small_disk / "out.mp4")])
    assert res.exit_code == 1
    assert error_lines(res.output) == [f"error: cannot write the file (No space left on device) "
                                       f"({small_disk / 'out.mp4.vidreal.yaml'})"]
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]  # output and record: both or neither


def test_disk_full_on_batch_record_is_one_line(tiny_models, tmp_path, small_disk):
    src = images(tmp_path / "in", ["a.png"])
    fill(small_disk, 0)
    res = CliRunner().invoke(cli, ["batch", str(src), str(small_disk / "out"), *tiny_args(tiny_models)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert error_lines(res.output) == [f"error: cannot write the file (No space left on device) "
                                       f"({small_disk / 'out' / 'batch.vidreal.yaml'})"]


# ------------------------------------------------------------------------------ odd sizes, corrupt
def test_odd_size_conditions_come_out_at_the_same_size(tmp_path):
    frames = np.ascontiguousarray(np.resize(moving_square(3, 144, 178), (3, 143, 177, 3)))
    src = vidreal.write_video(tmp_path / "odd.mkv", frames, 12, codec="ffv1")
    res = CliRunner().invoke(cli, ["conditions", str(src), "-o", str(tmp_path / "c.mp4"), "--kind", "canny",
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    info = vidreal.probe(tmp_path / "c.mp4")
    assert (info.width, info.height, info.n_frames) == (177, 143, 3)
    assert vidreal.read_video(tmp_path / "c.mp4").frames.shape == (3, 143, 177, 3)


def test_corrupt_h264_names_the_last_frame_read_and_prints_no_ffmpeg_log(tmp_path, capfd):
    frames = np.random.default_rng(0).integers(0, 255, (40, 64, 64, 3), dtype=np.uint8)
    data = bytearray(vidreal.write_video(tmp_path / "good.mp4", frames, 24).read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 3000, 7):
        data[i] ^= 0xFF
    (tmp_path / "bad.mp4").write_bytes(bytes(data))
    capfd.readouterr()
    read = 0
    with pytest.raises(InputError) as info:
        for chunk in vidreal.iter_video(tmp_path / "bad.mp4", chunk_size=8):
            read += len(chunk)
    message = str(info.value)
    bad = int(message.split("cannot decode frame ")[1].split()[0])
    last = f"the last frame read is {bad - 1}" if bad else "no frame could be read"
    assert read <= bad < 40 and last in message
    assert len(message.splitlines()) == 1 and "threaded_decoder" not in message
    assert "[h264 @" not in capfd.readouterr().err


def _one_file_batch(out):
    """An OUT_DIR whose one translated item is an image, out/item.png (a manifest, no models)."""
    import json

    from vidreal.batch import MANIFEST_NAME

    out.mkdir()
    Image.fromarray(moving_square(1)[0]).save(out / "item.png")
    (out / MANIFEST_NAME).write_text(json.dumps({"input": "item.png", "status": "done", "output": "item.png"}) + "\n")
    return out / "item.png"


@pytest.mark.parametrize("verb", ["caption", "sheet", "classify"])
def test_every_verb_that_writes_refuses_to_write_over_its_inputs(tmp_path, verb):
    """Finding "metrics overwrites its own inputs": every verb that writes should refuse, as translate,
    conditions and metrics do. One line, exit 1, the input as it was, before any model loads."""
    if verb == "caption":  # the prompts file named as one of the images
        target = tmp_path / "cat.png"
        Image.fromarray(moving_square(1)[0]).save(target)
        args = ["caption", str(target), "-o", str(target), "--model", str(tmp_path / "no-blip")]
    elif verb == "sheet":  # the sheet named as a translated image item
        target = _one_file_batch(tmp_path / "out")
        args = ["sheet", str(tmp_path / "out"), "-o", str(target)]
    else:  # the run folder named as the folder that holds the data sets
        target = tmp_path / "data"
        for split in ("train", "val"):
            for name in ("a", "b"):
                (target / split / name).mkdir(parents=True)
                Image.fromarray(moving_square(1)[0]).save(target / split / name / "x.png")
        args = ["classify", "train", "--train", str(target / "train"), "--val", str(target / "val"), "-o", str(target),
                "--backbone", "resnet18", "--no-pretrained"]
    before = sorted((p.relative_to(tmp_path), p.stat().st_size) for p in tmp_path.rglob("*"))
    result = CliRunner().invoke(cli, [*args, "--no-progress"] if verb != "sheet" else args)
    assert result.exit_code == 1, result.output
    assert result.output.strip() == f"error: the output would overwrite the input ({target})"
    assert sorted((p.relative_to(tmp_path), p.stat().st_size) for p in tmp_path.rglob("*")) == before

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


@pytest.mark.parametrize("written, rate", [
    (29.97, Fraction(30000, 1001)), ("29.97", Fraction(30000, 1001)), (24000 / 1001, Fraction(24000, 1001)),
    (12.5, Fraction(25, 2)), (Fraction(30000, 1001), Fraction(30000, 1001)), (25, Fraction(25)),
])
def test_the_api_reads_rates_as_the_command_line_does(tmp_path, written, rate):
    """One rule for rates: write_video(fps=29.97) made 2997/100 where --fps 29.97 makes 30000/1001."""
    from vidreal.io import write_video

    out = write_video(tmp_path / "out.mp4", np.zeros((2, 16, 16, 3), np.uint8), fps=written)
    assert probe(out).fps == rate


@pytest.mark.parametrize("written", [0, -24, "abc", "nan", "inf", "1/0", True])
def test_bad_rates_are_config_errors(written):
    with pytest.raises(ConfigError, match="output_fps must be a positive frame rate"):
        load_config(output_fps=written)


def test_output_options_at_their_defaults_keep_the_hash():
    base = load_config().fingerprint()
    assert load_config(audio=True, output_fps=None, pix_fmt=None, input_fps=None,
                       encoder_preset=checks.DEFAULT_PRESET).fingerprint() == base
    changed = [load_config(audio=False), load_config(output_fps=30), load_config(pix_fmt="yuv444p"),
               load_config(encoder_preset="medium")]
    assert len({base, *(c.fingerprint() for c in changed)}) == 5  # a batch redoes its items
    assert load_config(codec="ffv1", encoder_preset="slow").fingerprint() == load_config(codec="ffv1").fingerprint()


def x264_settings(path: Path) -> str:
    """The settings x264 wrote into the stream (its SEI message: "x264 - core ... options: cabac=1 ...")."""
    data = path.read_bytes()
    start = data.index(b"x264 - core")
    return data[start:data.index(b"\0", start)].decode()


@pytest.mark.parametrize("preset, subme", [(None, "subme=7"), ("ultrafast", "subme=0"), ("veryfast", "subme=2")])
def test_the_preset_is_x264s(tmp_path, preset, subme):
    """x264's presets differ in subpixel refinement (medium 7, veryfast 2, ultrafast 0); None is the codec's own."""
    frames = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    from vidreal.io import write_video

    out = write_video(tmp_path / "out.mp4", frames, fps=24, preset=preset)
    assert subme in x264_settings(out).split()
    default = write_video(tmp_path / "default.mp4", frames, fps=24)
    assert "subme=2" in x264_settings(default).split()  # vidreal's default: veryfast


def test_translate_encodes_with_the_configs_preset(tiny_models, samples, tmp_path):
    out, default = tmp_path / "out.mp4", tmp_path / "default.mp4"
    translate(tiny_models, samples / AUDIO_CLIP, out, "--encoder-preset", "ultrafast")
    translate(tiny_models, samples / AUDIO_CLIP, default)
    assert "subme=0" in x264_settings(out).split() and "subme=2" in x264_settings(default).split()
    assert yaml.safe_load((tmp_path / "out.mp4.vidreal.yaml").read_text())["encoder_preset"] == "ultrafast"


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
    (["--encoder-preset", "fastest"], "encoder_preset must be one of ultrafast, superfast, veryfast, faster, fast, medium"),
], ids=["rgb24-libx264", "yuv420p-libx264rgb", "fps-0", "fps-word", "preset"])
def test_bad_output_values_are_one_usage_error_before_any_model(tmp_path, samples, verb, flags, message):
    inputs = [str(samples / AUDIO_CLIP), "-o", str(tmp_path / "out" / "o.mp4")] if verb == "translate" \
        else [str(samples), str(tmp_path / "out")]
    result = CliRunner().invoke(cli, [verb, *inputs, "--model", str(tmp_path / "no-such-model"), *flags])
    assert message in one_error_line(result, 2)
    assert not (tmp_path / "out").exists()


def test_input_fps_is_checked_before_anything(tmp_path, samples):
    result = CliRunner().invoke(cli, ["translate", str(samples / AUDIO_CLIP), "-o", str(tmp_path / "o.mp4"),
                                      "--input-fps", "-1"])
    assert "input_fps must be a positive frame rate" in one_error_line(result, 2)


# ------------------------------------------------------------------------------ PNG frames out
def test_folder_output_is_png_frames_with_the_record_beside(tiny_models, samples, tmp_path, caplog):
    frames = tmp_path / "out" / "frames"
    translate(tiny_models, samples / AUDIO_CLIP, frames)
    assert sorted(p.name for p in frames.iterdir()) == ["frame_000000.png", "frame_000001.png", "frame_000002.png"]
    assert all(Image.open(p).size == (256, 256) and Image.open(p).mode == "RGB" for p in frames.iterdir())
    record = yaml.safe_load((tmp_path / "out" / "frames.vidreal.yaml").read_text())
    assert record["result"]["frames"] == 3 and record["result"]["fps"] == "24" and record["result"]["audio"] is False
    warnings = [r.getMessage() for r in caplog.records if "PNG frames hold no audio" in r.getMessage()]
    assert len(warnings) == 1  # the input's audio is left out, said once
    assert leftovers(tmp_path) == []


def test_a_failed_frame_output_leaves_nothing_and_an_earlier_one_untouched(tiny_models, samples, tmp_path,
                                                                          monkeypatch):
    from vidreal.errors import OutputError
    from vidreal.io import encode

    frames = tmp_path / "frames"
    earlier = np.full((8, 8, 3), 7, np.uint8)
    frames.mkdir()
    Image.fromarray(earlier).save(frames / "frame_000000.png")
    save = encode._save_frame

    def failing(folder, index, frame, path):
        if index == 2:
            raise OutputError("disk full", path)
        save(folder, index, frame, path)

    monkeypatch.setattr(encode, "_save_frame", failing)
    result = CliRunner().invoke(cli, ["translate", str(samples / AUDIO_CLIP), "-o", str(frames),
                                      *tiny_args(tiny_models, "--no-audio")])
    assert one_error_line(result, 1) == f"error: disk full ({frames})"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]  # no record, no temporary folder
    assert [p.name for p in frames.iterdir()] == ["frame_000000.png"]
    assert np.array_equal(np.asarray(Image.open(frames / "frame_000000.png")), earlier)
    monkeypatch.setattr(encode, "_save_frame", save)
    translate(tiny_models, samples / AUDIO_CLIP, frames)  # an earlier frame output is replaced whole
    assert len(list(frames.iterdir())) == 3 and leftovers(tmp_path) == []


def test_png_frames_round_trip_exactly_through_a_frame_folder(tmp_path):
    from vidreal.io import write_video

    frames = np.random.default_rng(0).integers(0, 256, (11, 9, 7, 3), dtype=np.uint8)  # odd sizes kept
    folder = write_video(tmp_path / "frames", frames, fps=24, audio_from=tmp_path / "ignored.wav")
    assert len(list(folder.iterdir())) == 11 and (folder / "frame_000010.png").is_file()
    clip = read_video(folder)  # frame_000010 after frame_000009, the default rate
    assert np.array_equal(clip.frames, frames) and clip.fps == 24 and not clip.has_audio
    assert leftovers(tmp_path) == []


def test_an_odd_size_in_a_pix_fmt_asked_for_is_padded_not_switched(tmp_path, caplog):
    from vidreal.io import write_video

    frames = np.zeros((2, 16, 33, 3), np.uint8)
    write_video(tmp_path / "default.mp4", frames, 24)  # libx264's usual yuv420p: yuv444p, size kept (as before)
    write_video(tmp_path / "asked.mp4", frames, 24, pix_fmt="yuv422p")
    assert video_stream(tmp_path / "default.mp4")["pix_fmt"] == "yuv444p" and probe(tmp_path / "default.mp4").width == 33
    assert video_stream(tmp_path / "asked.mp4")["pix_fmt"] == "yuv422p" and probe(tmp_path / "asked.mp4").width == 34
    assert any("padded to 34x16" in r.getMessage() for r in caplog.records)


def test_a_folder_holding_other_files_is_not_an_output(tmp_path, samples):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(cli, ["translate", str(samples / AUDIO_CLIP), "-o", str(folder), "--no-progress"])
    assert "holds 'notes.txt', not only frames" in one_error_line(result, 1)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


# ------------------------------------------------------------------------------ frame folders in
def frame_folder(folder: Path, n=5, size=(40, 32), names="frame_{}.png") -> Path:
    """n images whose red channel is their index * 20 (names unpadded: natural order matters)."""
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", size, (20 * i, 0, 0)).save(folder / names.format(i))
    return folder


def test_a_frame_folder_is_read_in_natural_order_a_chunk_at_a_time(tmp_path):
    from vidreal.io import open_media

    folder = frame_folder(tmp_path / "renders", n=12)
    media = open_media(folder, fps="30000/1001")
    info = media.info
    assert (info.n_frames, info.fps, info.width, info.height, info.has_audio) == (12, Fraction(30000, 1001), 40, 32,
                                                                                  False)
    chunks = list(media.chunks(5))
    assert [c.shape for c in chunks] == [(5, 32, 40, 3), (5, 32, 40, 3), (2, 32, 40, 3)]
    assert [int(f[0, 0, 0]) for f in np.concatenate(chunks)] == [20 * i for i in range(12)]  # 2 before 10
    assert [int(f[0, 0, 0]) for f in np.concatenate(list(media.chunks(2, indices=[1, 10])))] == [20, 200]
    assert probe(folder).fps == 24  # the default rate


def test_frame_folder_translates_to_a_clip_at_the_given_rate(tiny_models, tmp_path):
    folder = frame_folder(tmp_path / "renders", n=3)
    out = tmp_path / "out.mp4"
    translate(tiny_models, folder, out, "--input-fps", "12")
    read = video_stream(out)
    assert (read["frames"], read["fps"], read["audio"]) == (3, Fraction(12), False)
    assert read_video(out).frames.shape == (3, 32, 40, 3)
    record = yaml.safe_load((tmp_path / "out.mp4.vidreal.yaml").read_text())
    assert record["input_fps"] == "12" and record["result"]["fps"] == "12"


@pytest.mark.parametrize("case, message", [
    ("mixed sizes", "frame_2.png is 48x32, frame_0.png is 40x32: the images of a frame folder must all have one size"),
    ("not an image", "'notes.txt' is not an image (.bmp .jpeg .jpg .png .tif .tiff .webp): a frame folder holds "
                     "images only"),
    ("empty", "the folder is empty, expected a video or image file or a folder of images"),
    ("no images", "is a folder, expected a video or image file"),
], ids=["mixed-sizes", "not-an-image", "empty", "no-images"])
def test_a_bad_frame_folder_is_one_error_line(tmp_path, case, message):
    folder = tmp_path / "renders"
    if case == "empty":
        folder.mkdir()
    elif case == "no images":
        folder.mkdir()
        (folder / "notes.txt").write_text("x")
    else:
        frame_folder(folder, n=3)
        if case == "mixed sizes":
            Image.new("RGB", (48, 32)).save(folder / "frame_2.png")
        else:
            (folder / "notes.txt").write_text("x")
    out = tmp_path / "out.mp4"
    result = CliRunner().invoke(cli, ["translate", str(folder), "-o", str(out), "--model", str(tmp_path / "none"),
                                      "--no-progress"])
    assert one_error_line(result, 1) == f"error: {message} ({folder})"
    assert not out.exists()


# ------------------------------------------------------------------------------ batch
@pytest.mark.slow  # two batches: ~15 s on 2 cores
def test_batch_applies_the_output_options_to_every_clip(tiny_models, samples, tmp_path):
    import shutil

    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    (in_dir / "stills").mkdir(parents=True)
    shutil.copy(samples / AUDIO_CLIP, in_dir / "walk.mp4")
    Image.new("RGB", (40, 32), (90, 10, 10)).save(in_dir / "stills" / "a.png")
    args = ["batch", str(in_dir), str(out_dir), *tiny_args(tiny_models)]
    result = CliRunner().invoke(cli, [*args, "--fps", "12", "--no-audio", "--pix-fmt", "yuv444p"])
    assert result.exit_code == 0, result.output
    read = video_stream(out_dir / "walk.mp4")
    assert (read["frames"], read["fps"], read["audio"], read["pix_fmt"]) == (3, Fraction(12), False, "yuv444p")
    assert Image.open(out_dir / "stills" / "a.png").size == (40, 32)  # a still stays a still
    result = CliRunner().invoke(cli, args)  # the default options are another config: every item is redone
    assert result.exit_code == 0, result.output
    read = video_stream(out_dir / "walk.mp4")
    assert (read["frames"], read["fps"], read["audio"], read["pix_fmt"]) == (3, Fraction(24), True, "yuv420p")

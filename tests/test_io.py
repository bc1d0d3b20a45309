"""vidreal.io: real decord decoding, PyAV encoding, Pillow images, atomic writes."""
from __future__ import annotations

import re
import wave
from fractions import Fraction
from pathlib import Path

import av
import decord
import numpy as np
import pytest
from PIL import Image

from vidreal import io
from vidreal.errors import ConfigError, InputError, OutputError

SAMPLE_VIDEOS = ["humanoid_walk_ground.mp4", "humanoid_walk_air.mp4", "humanoid_walk_audio.mp4",
                 "humanoid_punch_ground.mp4", "humanoid_punch_air.mp4"]


def smooth_frames(t=8, h=64, w=96) -> np.ndarray:
    """uint8 (t, h, w, 3): moving colour gradients, which a lossy codec keeps closely."""
    y, x = np.mgrid[0:h, 0:w]
    frames = [np.stack([(x * 2 + 9 * i) % 256, (y * 3 + 5 * i) % 256, (x + y + 13 * i) % 256], -1)
              for i in range(t)]
    return np.asarray(frames, np.uint8)


def noise_frames(t=6, h=32, w=64, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]


def tone_wav(path: Path, seconds=1.0, rate=16000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes())
    return path


# ------------------------------------------------------------------------------ video round trip


@pytest.mark.parametrize("fps", [Fraction(24), Fraction(30000, 1001)])
def test_video_round_trip_keeps_count_fps_size(tmp_path, fps):
    frames = smooth_frames()
    path = io.write_video(tmp_path / "clip.mp4", frames, fps)
    info = io.probe(path)
    assert (info.n_frames, info.fps, info.width, info.height) == (8, fps, 96, 64)
    assert isinstance(info.fps, Fraction) and not info.has_audio and not info.is_image
    clip = io.read_video(path)
    assert clip.frames.dtype == np.uint8 and clip.frames.shape == frames.shape
    assert clip.fps == fps and clip.path == path
    assert np.abs(clip.frames.astype(int) - frames).mean() < 4


def test_float_fps_is_read_exactly(tmp_path):
    path = io.write_video(tmp_path / "ntsc.mp4", smooth_frames(3), 30000 / 1001)
    assert io.probe(path).fps == Fraction(30000, 1001)
    path = io.write_video(tmp_path / "str.mp4", smooth_frames(3), "24000/1001")
    assert io.probe(path).fps == Fraction(24000, 1001)


@pytest.mark.parametrize("name,codec", [("rgb.mp4", "libx264rgb"), ("ffv1.mkv", "ffv1")])
def test_lossless_codecs_round_trip_exactly(tmp_path, name, codec):
    frames = noise_frames(t=7)
    path = io.write_video(tmp_path / name, frames, 24, codec=codec, crf=0)
    assert io.probe(path).n_frames == 7  # mkv stores no frame count: counted from packets
    np.testing.assert_array_equal(io.read_video(path).frames, frames)


def test_tiny_widths_decode_exactly(tmp_path):
    # decord 0.6 fails on some tiny widths (48 px here); io falls back to PyAV for those.
    frames = noise_frames(t=5, h=16, w=48)
    path = io.write_video(tmp_path / "w48.mp4", frames, 24, codec="libx264rgb", crf=0)
    np.testing.assert_array_equal(io.read_video(path).frames, frames)
    np.testing.assert_array_equal(np.concatenate(list(io.iter_video(path, 2))), frames)


def test_odd_size_is_kept_by_libx264(tmp_path):
    frames = smooth_frames(t=3, h=33, w=65)
    path = io.write_video(tmp_path / "odd.mp4", frames, 24)
    info = io.probe(path)
    assert (info.width, info.height) == (65, 33)
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv444p"  # yuv420p cannot hold 65x33
    decoded = io.read_video(path).frames.astype(int)
    assert decoded.shape == frames.shape
    assert np.abs(decoded - frames).mean() < 4


def test_odd_size_is_padded_by_other_yuv420p_codecs(tmp_path):
    frames = smooth_frames(t=3, h=33, w=65)
    path = io.write_video(tmp_path / "odd.avi", frames, 24, codec="mpeg4")
    decoded = io.read_video(path).frames.astype(int)
    assert decoded.shape == (3, 34, 66, 3)
    assert np.abs(decoded[:, :33, :65] - frames).mean() < 8
    assert np.abs(decoded[:, 33, :65] - frames[:, 32]).mean() < 10  # replicated last row
    assert np.abs(decoded[:, :33, 65] - frames[:, :, 64]).mean() < 10  # replicated last column


def test_mpeg4_codec_is_selectable(tmp_path):
    path = io.write_video(tmp_path / "m.avi", smooth_frames(4), 25, codec="mpeg4")
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"
    assert io.probe(path).n_frames == 4 and io.probe(path).fps == 25


def test_write_video_accepts_an_iterable_of_chunks(tmp_path):
    frames = noise_frames(t=6)
    path = io.write_video(tmp_path / "s.mp4", iter([frames[:4], frames[4], frames[5:]]), 24,
                          codec="libx264rgb", crf=0)
    np.testing.assert_array_equal(io.read_video(path).frames, frames)


# ------------------------------------------------------------------------------------ chunking


def test_iter_video_chunks_concatenate_to_full_decode(samples):
    path = samples / "humanoid_walk_ground.mp4"
    chunks = list(io.iter_video(path, chunk_size=5))
    assert [len(c) for c in chunks] == [5] * 9 + [3]
    np.testing.assert_array_equal(np.concatenate(chunks), io.read_video(path).frames)


def test_iter_video_decodes_one_chunk_at_a_time(tmp_path, monkeypatch):
    path = io.write_video(tmp_path / "c.mp4", smooth_frames(10), 24)
    requested = []
    original = decord.VideoReader.get_batch

    def spy(self, indices):
        requested.append(list(indices))
        return original(self, indices)

    monkeypatch.setattr(decord.VideoReader, "get_batch", spy)
    iterator = io.iter_video(path, chunk_size=4)
    assert requested == []  # nothing decoded before the first chunk is asked for
    next(iterator)
    assert requested == [[0, 1, 2, 3]]
    list(iterator)
    assert requested == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_iter_video_rejects_bad_chunk_size(samples, bad):
    with pytest.raises(ConfigError, match=re.escape(repr(bad))):
        io.iter_video(samples / "humanoid_walk_ground.mp4", chunk_size=bad)


def test_iter_video_validates_the_file_on_call(tmp_path):
    with pytest.raises(InputError):
        io.iter_video(tmp_path / "missing.mp4")  # no next() needed


# --------------------------------------------------------------------------------------- audio


def test_audio_is_remuxed_unchanged_into_mp4(tmp_path, samples):
    source = samples / "humanoid_walk_audio.mp4"
    path = io.write_video(tmp_path / "a.mp4", smooth_frames(5), 24, audio_from=source)
    assert io.probe(path).has_audio and io.read_video(path).has_audio
    assert io.probe(path).n_frames == 5
    assert audio_packets(path) == audio_packets(source)  # AAC packets copied, not re-encoded


def test_pcm_audio_is_transcoded_to_aac(tmp_path):
    wav = tone_wav(tmp_path / "tone.wav")
    path = io.write_video(tmp_path / "a.mp4", smooth_frames(5), 24, audio_from=wav)
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "aac"
        assert float(stream.duration * stream.time_base) == pytest.approx(1.0, abs=0.05)


def test_audio_source_without_audio_adds_none(tmp_path, samples):
    path = io.write_video(tmp_path / "a.mp4", smooth_frames(3), 24,
                          audio_from=samples / "humanoid_walk_ground.mp4")
    assert not io.probe(path).has_audio


def test_missing_audio_source_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="audio source not found"):
        io.write_video(tmp_path / "a.mp4", smooth_frames(3), 24, audio_from=tmp_path / "none.wav")
    assert not (tmp_path / "a.mp4").exists()


# -------------------------------------------------------------------------------------- images


def read_single(path) -> np.ndarray:
    clip = io.read_video(path)
    assert clip.fps is None and clip.frames.shape[0] == 1 and not clip.has_audio
    assert clip.frames.dtype == np.uint8 and clip.frames.shape[-1] == 3
    return clip.frames[0]


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.array([[[10, 20, 30, 0], [10, 20, 30, 255], [0, 100, 200, 128]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    rgb = read_single(tmp_path / "a.png")
    expected_blend = np.round(np.array([0, 100, 200]) * 128 / 255 + 255 * 127 / 255)
    np.testing.assert_array_equal(rgb[0], [[255, 255, 255], [10, 20, 30], expected_blend])


def test_la_and_grayscale_become_replicated_rgb(tmp_path):
    Image.fromarray(np.array([[[50, 0], [50, 255]]], np.uint8), "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_single(tmp_path / "la.png")[0], [[255] * 3, [50] * 3])
    Image.fromarray(np.array([[0, 77, 255]], np.uint8), "L").save(tmp_path / "l.png")
    np.testing.assert_array_equal(read_single(tmp_path / "l.png")[0], [[0] * 3, [77] * 3, [255] * 3])


def test_palette_maps_through_its_palette_and_transparency(tmp_path):
    image = Image.new("P", (3, 1))
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    image.putdata([2, 0, 1])
    image.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_single(tmp_path / "p.png")[0], [[0, 0, 255], [255, 0, 0], [0, 255, 0]])
    image.save(tmp_path / "pt.png", transparency=0)  # index 0 transparent -> white
    np.testing.assert_array_equal(read_single(tmp_path / "pt.png")[0], [[0, 0, 255], [255] * 3, [0, 255, 0]])


def test_16bit_grayscale_keeps_the_high_byte(tmp_path):
    values = np.array([[0, 255, 256, 257 * 100, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    rgb = read_single(tmp_path / "g16.png")
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 0, 1, 100, 255])
    assert (rgb == rgb[..., :1]).all()


def test_jpeg_and_cmyk_read_as_rgb(tmp_path):
    frame = smooth_frames(1)[0]
    Image.fromarray(frame).save(tmp_path / "a.jpg", quality=95)
    assert np.abs(read_single(tmp_path / "a.jpg").astype(int) - frame).mean() < 3
    Image.new("CMYK", (4, 2), (0, 255, 0, 0)).save(tmp_path / "c.jpg", quality=100)
    rgb = read_single(tmp_path / "c.jpg").astype(int)
    assert np.abs(rgb - [255, 0, 255]).max() <= 3  # Pillow's CMYK -> RGB


def test_exif_orientation_is_applied(tmp_path):
    frame = smooth_frames(1, h=20, w=40)[0]
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(frame).save(tmp_path / "r.png", exif=exif)
    info = io.probe(tmp_path / "r.png")
    assert (info.width, info.height, info.n_frames, info.fps, info.is_image) == (20, 40, 1, None, True)
    np.testing.assert_array_equal(read_single(tmp_path / "r.png"), np.rot90(frame, k=-1))


def test_one_frame_to_png_writes_that_frame(tmp_path):
    frame = noise_frames(t=1, h=9, w=7)  # odd sizes are kept for images
    path = io.write_video(tmp_path / "out" / "still.png", frame)
    np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), frame[0])
    np.testing.assert_array_equal(io.read_video(path).frames, frame)
    assert list(io.iter_video(path))[0].shape == (1, 9, 7, 3)


def test_many_frames_to_an_image_path_is_refused(tmp_path):
    with pytest.raises(OutputError, match="exactly 1 frame, got 3"):
        io.write_video(tmp_path / "still.png", noise_frames(t=3))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------- atomic output


def test_atomic_output_renames_on_success(tmp_path):
    target = tmp_path / "new" / "deeper" / "x.mp4"  # missing folders are created
    with io.atomic_output(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".mp4"
        assert tmp.name.startswith(".x.tmp-")
        tmp.write_bytes(b"data")
        assert not target.exists()
    assert target.read_bytes() == b"data"
    assert leftovers(target.parent) == []


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_atomic_output_removes_temp_and_keeps_old_file(tmp_path, exc):
    target = tmp_path / "x.png"
    target.write_bytes(b"old")
    with pytest.raises(exc):
        with io.atomic_output(target) as tmp:
            tmp.write_bytes(b"partial")
            raise exc()
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_atomic_output_with_nothing_written_is_an_error(tmp_path):
    with pytest.raises(OutputError, match="nothing was written"):
        with io.atomic_output(tmp_path / "x.mp4"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_encoder_failure_midway_leaves_nothing(tmp_path):
    good = noise_frames(t=4)

    def frames():
        yield from good
        yield np.zeros((16, 16, 3), np.uint8)  # wrong shape after 4 frames were encoded

    with pytest.raises(InputError, match="differs from the first frame"):
        io.write_video(tmp_path / "v.mp4", frames(), 24)
    assert list(tmp_path.iterdir()) == []


def test_encoder_failure_keeps_previous_output(tmp_path, monkeypatch):
    path = io.write_video(tmp_path / "v.mp4", smooth_frames(4), 24)
    before = path.read_bytes()
    calls = []
    original = av.VideoFrame.from_ndarray

    def failing(array, format):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("encoder crashed")
        return original(array, format=format)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", staticmethod(failing))
    with pytest.raises(RuntimeError, match="encoder crashed"):
        io.write_video(path, smooth_frames(6), 24)
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------- bad inputs


def zero_frame_video(path: Path) -> Path:
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=24)
    stream.width, stream.height = 64, 32
    container.start_encoding()
    container.close()
    return path


def faststart_video(path: Path) -> Path:
    container = av.open(str(path), "w", options={"movflags": "faststart"})
    stream = container.add_stream("libx264", rate=24)
    stream.width, stream.height = 96, 64
    for index, frame in enumerate(noise_frames(t=12, h=64, w=96)):
        video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
        video_frame.pts = index
        container.mux(stream.encode(video_frame))
    container.mux(stream.encode())
    container.close()
    return path


def make_bad_input(kind: str, tmp_path: Path) -> tuple[Path, str]:
    """(path, a phrase its error message contains)"""
    if kind == "missing":
        return tmp_path / "missing.mp4", "not found"
    if kind == "folder":
        (tmp_path / "dir.mp4").mkdir()
        return tmp_path / "dir.mp4", "folder"
    if kind == "empty":
        (tmp_path / "empty.mp4").touch()
        return tmp_path / "empty.mp4", "empty"
    if kind == "truncated":
        full = io.write_video(tmp_path / "full.mp4", smooth_frames(6), 24).read_bytes()
        (tmp_path / "cut.mp4").write_bytes(full[: len(full) // 2])
        return tmp_path / "cut.mp4", "corrupt, truncated or not a video"
    if kind == "truncated-faststart":  # index at the front, so only the frame data is missing
        full = faststart_video(tmp_path / "fs.mp4").read_bytes()
        (tmp_path / "cut.mp4").write_bytes(full[: len(full) // 2])
        return tmp_path / "cut.mp4", "truncated or corrupt"
    if kind == "text":
        (tmp_path / "notes.mp4").write_text("this is not a video\n")
        return tmp_path / "notes.mp4", "corrupt, truncated or not a video"
    if kind == "unsupported":
        (tmp_path / "clip.gif").write_bytes(b"GIF89a")
        return tmp_path / "clip.gif", "supported: .avi .bmp .jpeg .jpg .m4v .mkv .mov .mp4 .png"
    if kind == "zero-frames":
        return zero_frame_video(tmp_path / "zero.mp4"), "no video"
    if kind == "junk-image":
        (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 20)
        return tmp_path / "junk.png", "not a readable image"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing", "folder", "empty", "truncated", "truncated-faststart",
                                  "text", "unsupported", "zero-frames", "junk-image"])
def test_bad_inputs_raise_one_line_input_errors(tmp_path, kind):
    path, phrase = make_bad_input(kind, tmp_path)
    for read in (io.probe, io.read_video, io.iter_video):
        with pytest.raises(InputError) as caught:
            read(path)
        message = str(caught.value)
        assert "\n" not in message and phrase in message, message
        assert caught.value.path == str(path)


@pytest.mark.parametrize("frames,phrase", [
    (np.zeros((2, 8, 8, 3), np.float32), "float32 (2, 8, 8, 3)"),
    (np.zeros((8, 8, 3), np.uint8), "(8, 8, 3)"),
    (np.zeros((2, 8, 8, 4), np.uint8), "(2, 8, 8, 4)"),
    (np.zeros((0, 8, 8, 3), np.uint8), "(0, 8, 8, 3)"),
    (5, "got int"),
])
def test_bad_frames_are_input_errors_quoting_the_value(tmp_path, frames, phrase):
    with pytest.raises(InputError) as caught:
        io.write_video(tmp_path / "v.mp4", frames, 24)
    assert phrase in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs,phrase", [
    ({"fps": None}, "fps is required"), ({"fps": 0}, "got 0"), ({"fps": "fast"}, "'fast'"),
    ({"fps": 24, "crf": 60}, "got 60"),
])
def test_bad_write_arguments(tmp_path, kwargs, phrase):
    with pytest.raises(ValueError, match=phrase):
        io.write_video(tmp_path / "v.mp4", smooth_frames(2), **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_unsupported_output_type_and_codec(tmp_path):
    with pytest.raises(OutputError, match="unsupported output type '.gif'"):
        io.write_video(tmp_path / "v.gif", smooth_frames(2), 24)
    with pytest.raises(OutputError, match="codec 'nope'"):
        io.write_video(tmp_path / "v.mp4", smooth_frames(2), 24, codec="nope")
    assert list(tmp_path.iterdir()) == []


def test_extension_sets():
    assert io.is_image_path("a/B.JPG") and io.is_image_path("x.tiff") and not io.is_image_path("x.mp4")
    assert io.IMAGE_EXTS.isdisjoint(io.VIDEO_EXTS) and ".m4v" in io.VIDEO_EXTS


# ------------------------------------------------------------------------------------- samples


@pytest.mark.parametrize("name", SAMPLE_VIDEOS)
def test_sample_videos_decode(samples, name):
    info = io.probe(samples / name)
    assert (info.n_frames, info.fps, info.width, info.height) == (48, 24, 256, 256)
    assert info.has_audio == (name == "humanoid_walk_audio.mp4")
    frames = io.read_video(samples / name).frames
    assert frames.shape == (48, 256, 256, 3)
    assert frames.std(axis=0).mean() > 1  # the person moves


def test_sample_objects_follow_the_visda_layout(samples):
    lines = (samples / "objects" / "image_list.txt").read_text().splitlines()
    classes = sorted({line.split("/")[0] for line in lines})
    assert classes == ["bicycle", "car", "person", "plant"]
    for line in lines:
        relative, label = line.split()
        assert int(label) == classes.index(relative.split("/")[0])  # the class folders' labels
        frames = io.read_video(samples / "objects" / relative).frames
        assert frames.shape == (1, 256, 256, 3)
    total = sum(p.stat().st_size for p in samples.rglob("*") if p.is_file())
    assert total < 3 * 2**20

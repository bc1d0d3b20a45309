"""One owner per concern: config sections, one prompts module, translate_file streaming (tiny models)."""
from __future__ import annotations

import inspect
import logging

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import vidreal
from vidreal import io
from vidreal.cli import cli
from vidreal.config import BATCH_KEYS, load_config, read_section
from vidreal.errors import ConfigError, InputError, ModelError
from vidreal.metrics import SUMMARY_KEYS, MetricsStream, compute_metrics
from vidreal.prompts import Prompts
from vidreal.translate import translate_file


def moving_square(n=8, h=48, w=64) -> np.ndarray:
    """uint8 (n, h, w, 3): a gradient with a bright square moving right 3 px a frame."""
    frames = np.zeros((n, h, w, 3), np.uint8)
    frames[..., 0] = np.linspace(0, 200, w, dtype=np.uint8)[None, None]
    frames[..., 2] = 90
    for t in range(n):
        frames[t, h // 4:h // 4 + h // 3, 4 + 3 * t:4 + 3 * t + w // 3] = (250, 250, 60)
    return frames


@pytest.fixture(scope="module")
def config(tiny_models):
    return load_config(model=str(tiny_models["sd"]), controlnets={"canny": str(tiny_models["canny"]),
                                                                  "pose": str(tiny_models["pose"])},
                       size=32, steps=2, chunk_size=4)


@pytest.fixture()
def clip_path(tmp_path):
    return io.write_video(tmp_path / "clip.mp4", moving_square(12), 12, codec="libx264rgb", crf=0)


def tiny_args(tiny_models):
    return ["--model", str(tiny_models["sd"]), "--controlnet", f"canny={tiny_models['canny']}",
            "--controlnet", f"pose={tiny_models['pose']}", "--size", "32", "--steps", "2", "--no-progress"]


# ------------------------------------------------------------------------------ metrics stream
def test_metrics_stream_in_uneven_chunks_equals_compute_metrics():
    source = moving_square(7)
    output = np.clip(source.astype(int) + np.random.default_rng(1).integers(-20, 20, source.shape), 0, 255
                     ).astype(np.uint8)
    whole = compute_metrics(source, output)
    with MetricsStream() as stream:
        for a, b in ((0, 2), (2, 5), (5, 6), (6, 7)):
            stream.add(source[a:b], output[a:b])
        chunked = stream.result()
    assert whole["warp_error"] is not None and whole["interp_rmse"] is not None
    for key in SUMMARY_KEYS:
        assert chunked[key] == whole[key], key
    assert chunked["per_frame"] == whole["per_frame"] and chunked["n_frames"] == 7


# ------------------------------------------------------------------------------ translate_file
def test_translate_opens_input_once_and_streams_preview_conditions_metrics(translator, config, clip_path, tmp_path,
                                                                          monkeypatch):
    from vidreal import translate

    opened, pending = [], []
    real_open = io.Media.__init__

    def counting_open(self, path, *args, **kwargs):
        opened.append(str(path))
        real_open(self, path, *args, **kwargs)

    real_put = translate._Waiting.put

    def watching_put(self, **arrays):
        real_put(self, **arrays)
        pending.append(sum(translate._length(item) for item in self._items))

    monkeypatch.setattr(io.Media, "__init__", counting_open)
    monkeypatch.setattr(translate._Waiting, "put", watching_put)
    monkeypatch.setattr(vidreal.metrics, "compute_file_metrics", None)  # no second decode of both files
    out = tmp_path / "out.mp4"
    lossless = load_config(**{**config.to_dict(), "codec": "libx264rgb", "crf": 0})  # the file holds the frames in hand
    result = translate_file(clip_path, out, lossless, translator=translator, preview=tmp_path / "side.mp4",
                            save_conditions=tmp_path / "maps", metrics=True, progress=False)
    assert opened == [str(clip_path)]  # the input, once; the output is never decoded again
    # a few chunks wait for their outputs (one being denoised, the stages' queues and the chunks in
    # their hands: at most 7), never the clip
    assert max(pending) <= 7 * config.chunk_size
    side = io.probe(tmp_path / "side.mp4")
    work = translator.working_size(48, 64, 32)
    widths = [translate._panel(np.zeros((1, *size, 3), np.uint8)).shape[2] for size in (work, work, work, (48, 64))]
    assert (side.n_frames, side.height, side.width) == (12, 256, sum(widths))  # source | canny | pose | output
    for kind in ("canny", "pose"):
        maps = io.read_video(tmp_path / "maps" / f"out.{kind}.mp4").frames
        assert maps.shape == (12, *translator.working_size(48, 64, 32), 3)  # the size the ControlNets saw
    # metrics of the frames in hand, streamed, equal those of the whole decoded clips
    from_files = compute_metrics(io.read_video(clip_path).frames, io.read_video(out).frames)
    assert result.metrics["warp_error"] is not None
    assert {key: result.metrics[key] for key in SUMMARY_KEYS} == {key: from_files[key] for key in SUMMARY_KEYS}
    assert "edge_f1" in (tmp_path / "out.mp4.vidreal.yaml").read_text()


# ------------------------------------------------------------------------------------- prompts
def test_prompts_file_drives_translate(tiny_models, clip_path, tmp_path):
    mapping = tmp_path / "prompts.txt"
    mapping.write_text(f"other/x.mp4\ta cat\n{clip_path.parent.name}/clip.mp4\ta {{stem}} on a street\n")
    res = CliRunner().invoke(cli, ["translate", str(clip_path), "-o", str(tmp_path / "o.mp4"), *tiny_args(tiny_models),
                                   "--prompts-file", str(mapping)])
    assert res.exit_code == 0, res.output
    assert "prompt: a clip on a street" in (tmp_path / "o.mp4.vidreal.yaml").read_text()


def test_prompts_for_one_file_and_for_batch_items(tmp_path):
    (tmp_path / "data" / "car").mkdir(parents=True)
    src = tmp_path / "data" / "car" / "x1.png"
    mapping = tmp_path / "p.txt"
    mapping.write_text("car/x1.png\ta red {class_name}\nx1.png\tshorter key\n")
    config = load_config(prompts_file=str(mapping))
    assert Prompts(config, src.parent).for_path(src) == "a red car"  # the longest key the path ends with
    assert Prompts(config, tmp_path / "data")("car/x1.png") == "a red car"  # batch: relative to IN_DIR
    with pytest.raises(InputError, match="no caption for this file"):
        Prompts(config, tmp_path).for_path(tmp_path / "y.png")
    plain = tmp_path / "plain.txt"
    plain.write_text("one\ntwo\nthree\n")
    drawn = Prompts(load_config(prompts_file=str(plain), seed=2), src.parent).for_path(src)
    assert drawn in ("one", "two", "three")
    assert drawn == Prompts(load_config(prompts_file=str(plain), seed=2), src.parent).for_path(src)


# ---------------------------------------------------------------------------------- conditions
def test_conditions_section_validated_against_each_detector(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("conditions:\n  openpose: {modle: ./annotators}\n")
    with pytest.raises(ConfigError, match="unknown 'openpose' option 'modle'; did you mean 'model'"):
        load_config(preset)
    preset.write_text("conditions:\n  canyy: {low_threshold: 5}\n")
    with pytest.raises(ConfigError, match="unknown condition kind 'canyy'; did you mean 'canny'"):
        load_config(preset)
    with pytest.raises(ConfigError, match="unknown condition kind 'edge'"):
        load_config(controlnets={"edge": "x"})  # kinds are checked with the config, before any model loads


def test_canny_aliases_fold_into_conditions_with_precedence(tmp_path, caplog):
    preset = tmp_path / "old.yaml"
    preset.write_text("canny_low: 40\nconditions:\n  canny: {high_threshold: 150}\n  pose: {visibility_threshold: 0.5}\n")
    with caplog.at_level(logging.WARNING):
        config = load_config(preset, conditions={"canny": {"high_threshold": 120}})
    assert config.conditions == {"canny": {"low_threshold": 40, "high_threshold": 120}, "pose": {"visibility_threshold": 0.5}}
    assert "'canny_low' is deprecated" in caplog.text
    assert load_config(canny_high=90).conditions == {"canny": {"high_threshold": 90}}
    assert load_config(preset).fingerprint() != load_config().fingerprint()  # they decide the output


@pytest.mark.slow
def test_condition_option_changes_the_maps(translator, config, clip_path, tmp_path):
    low = load_config(**{**config.to_dict(), "conditions": {"canny": {"low_threshold": 1, "high_threshold": 2}}})
    for name, cfg in (("default", config), ("low", low)):
        translate_file(clip_path, tmp_path / f"{name}.mp4", cfg, translator=translator, save_conditions=tmp_path / name,
                       progress=False, record=False)
    a = io.read_video(tmp_path / "default" / "default.canny.mp4").frames
    b = io.read_video(tmp_path / "low" / "low.canny.mp4").frames
    assert (b > 127).sum() > (a > 127).sum()  # lower thresholds: more edge pixels


def test_condition_flag_reaches_the_detector_before_the_model_loads(tmp_path, clip_path):
    missing = tmp_path / "no-annotators"
    missing.mkdir()
    res = CliRunner().invoke(cli, ["translate", str(clip_path), "-o", str(tmp_path / "o.mp4"), "--model", "./nowhere",
                                   "--controlnet", "openpose=./nowhere-cn", "--condition", f"openpose.model={missing}",
                                   "--no-progress"])
    assert res.exit_code == 1
    assert "OpenPose weights" in res.output and str(missing) in res.output  # not "model not found"
    assert not (tmp_path / "o.mp4").exists()
    res = CliRunner().invoke(cli, ["translate", str(clip_path), "-o", "o.mp4", "--condition", "canny.low=3"])
    assert res.exit_code == 2 and "did you mean 'low_threshold'" in res.output
    with pytest.raises(ModelError):
        from vidreal.conditions import make_detector

        make_detector("openpose", model=str(missing)).load()


# --------------------------------------------------------------------------- sections of the file
def test_unknown_section_names_and_keys_are_rejected(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("clasify: {epochs: 2}\n")
    with pytest.raises(ConfigError, match="did you mean 'classify'"):
        load_config(preset)
    preset.write_text("batch: {patern: '*.png'}\n")
    with pytest.raises(ConfigError, match="unknown batch setting 'patern'; did you mean 'pattern'"):
        read_section(preset, "batch", BATCH_KEYS)


def test_batch_keys_are_run_batch_settings():
    from vidreal.batch import run_batch

    params = inspect.signature(run_batch).parameters
    keyword = [name for name, p in params.items() if p.kind is p.KEYWORD_ONLY and name not in ("translator", "progress")]
    assert sorted(BATCH_KEYS) == sorted(keyword)


def test_batch_section_sets_options_and_flags_override(tiny_models, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a1", "a2", "b1"):
        Image.fromarray(moving_square(1, 32, 32)[0]).save(src / f"{name}.png")
    preset = tmp_path / "p.yaml"
    preset.write_text("consistency: per-frame\nbatch:\n  pattern: 'a*'\n  extensions: .png\n")
    args = ["--model", str(tiny_models["sd"]), "--controlnet", f"canny={tiny_models['canny']}", "--size", "32",
            "--steps", "2", "--no-progress", "--config", str(preset)]
    res = CliRunner().invoke(cli, ["batch", str(src), str(tmp_path / "out"), *args])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["a1.png", "a2.png"]
    res = CliRunner().invoke(cli, ["batch", str(src), str(tmp_path / "out2"), *args, "--pattern", "b*"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out2").glob("*.png")) == ["b1.png"]


SECTIONS = {  # verb: (its images option, a misspelt key and its suggestion, options in the file, checks of the written config)
    "textual-inversion": ("--train-dir", "stpes", "steps", "resolution: 32, num_samples: 0, checkpoint_every: 0",
                          dict(resolution=32, checkpoint_every=0)),
    "dreambooth": ("--instance-dir", "num_clas_images", "num_class_images",
                   "resolution: 64, num_class_images: 0, num_samples: 0, gradient_checkpointing: false, "
                   "instance_prompt: a photo of zwx person",
                   dict(instance_prompt="a photo of zwx person", num_class_images=0, resolution=64)),
}


@pytest.mark.slow
@pytest.mark.parametrize("verb", list(SECTIONS))
def test_personalize_section_sets_options(tiny_models, tmp_path, verb):
    images_flag, typo, key, options, expected = SECTIONS[verb]
    section = verb.replace("-", "_")
    images = tmp_path / "real"
    images.mkdir()
    for i in range(2):
        Image.fromarray(moving_square(1, 64, 64)[0] // (i + 1)).save(images / f"{i}.png")
    preset = tmp_path / "p.yaml"
    preset.write_text(f"personalize:\n  {section}: {{{typo}: 1}}\n")
    out = tmp_path / "out"
    base = ["personalize", verb, images_flag, str(images), "-o", str(out), "--model", str(tiny_models["sd"]),
            "--config", str(preset), "--no-progress"]
    res = CliRunner().invoke(cli, base)
    assert res.exit_code == 2 and f"did you mean '{key}'" in res.output
    preset.write_text(f"personalize:\n  {section}: {{steps: 3, {options}}}\n")
    res = CliRunner().invoke(cli, [*base, "--steps", "1"])
    assert res.exit_code == 0, res.output
    assert "steps: 1" in res.output  # the flag wins over the file's 3
    import yaml

    from vidreal.personalize import outputs

    written = yaml.safe_load((out / outputs.CONFIG_NAME).read_text())
    assert {k: written[k] for k in expected} == expected and written["steps"] == 1


def test_conditions_verb_takes_detector_options(clip_path, tmp_path):
    edges = {}
    for name, extra in (("default", []), ("low", ["--condition", "canny.low_threshold=1",
                                                  "--condition", "canny.high_threshold=2"])):
        res = CliRunner().invoke(cli, ["conditions", str(clip_path), "-o", str(tmp_path / f"{name}.mp4"), "--kind",
                                       "canny", "--no-progress", *extra])
        assert res.exit_code == 0, res.output
        edges[name] = (io.read_video(tmp_path / f"{name}.mp4").frames > 127).sum()
    assert edges["low"] > edges["default"]
    res = CliRunner().invoke(cli, ["conditions", str(clip_path), "-o", str(tmp_path / "x.mp4"), "--condition", "pose.vis=1"])
    assert res.exit_code == 2 and "did you mean 'visibility_threshold'" in res.output


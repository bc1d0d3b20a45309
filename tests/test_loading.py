"""Loading SD 1.5 + ControlNets (+ TI, LoRA) from folders, single files and the hub cache, offline."""
from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from vidreal.cli import cli
from vidreal.config import DEFAULT_CONTROLNETS, DEFAULT_MODEL
from vidreal.errors import ConfigError, InputError, ModelError
from vidreal.pipeline import loading
from vidreal.pipeline.loading import load_pipeline, parse_embedding
from vidreal.runtime import resolve_device, resolve_dtype

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def pipe2(tiny_models):
    """Tiny SD + two ControlNets given in the order pose, canny."""
    return load_pipeline(tiny_models["sd"], {"pose": tiny_models["pose"], "canny": tiny_models["canny"]},
                         device="cpu")


# ----------------------------------------------------------------------------- device / dtype / specs
def test_resolve_device():
    auto = resolve_device(None)
    assert auto == resolve_device("auto")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert auto.type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="gpu0"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_resolve_dtype():
    assert resolve_dtype(None, "cpu") == torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype(None, "cuda") == torch.float16
    assert resolve_dtype("auto", "mps") == torch.float16
    for name, dtype in [("fp16", torch.float16), ("float16", torch.float16), ("bf16", torch.bfloat16),
                        ("bfloat16", torch.bfloat16), ("fp32", torch.float32), ("float32", torch.float32),
                        ("torch.float16", torch.float16), ("BF16", torch.bfloat16)]:
        assert resolve_dtype(name, "cpu") == dtype  # explicit half precision is honoured on the cpu
    assert resolve_dtype(torch.bfloat16, "cuda") == torch.bfloat16
    with pytest.raises(ConfigError, match="int8"):
        resolve_dtype("int8", "cpu")


def test_parse_embedding(tmp_path):
    assert parse_embedding("emb/x.safetensors") == (Path("emb/x.safetensors"), None)
    assert parse_embedding("emb/x.safetensors:<sks>") == (Path("emb/x.safetensors"), "<sks>")
    assert parse_embedding("/a:b/c.pt") == (Path("/a:b/c.pt"), None)  # the colon is inside the path
    assert parse_embedding("/a:b/c.pt:tok") == (Path("/a:b/c.pt"), "tok")
    odd = tmp_path / "style:v2.safetensors"
    odd.write_bytes(b"")
    assert parse_embedding(str(odd)) == (odd, None)  # an existing file is taken whole
    for bad in ("x.safetensors:", ":tok", "x.pt:two words"):
        with pytest.raises(ConfigError):
            parse_embedding(bad)


# ----------------------------------------------------------------------------- folders
def test_two_controlnets_make_a_multicontrolnet_in_order(pipe2, tiny_models):
    from diffusers import ControlNetModel, MultiControlNetModel

    assert isinstance(pipe2.controlnet, MultiControlNetModel)
    assert [net.config._name_or_path for net in pipe2.controlnet.nets] == [tiny_models["pose"], tiny_models["canny"]]
    pose, canny = (ControlNetModel.from_pretrained(tiny_models[k]) for k in ("pose", "canny"))
    assert _same_weights(pipe2.controlnet.nets[0], pose) and _same_weights(pipe2.controlnet.nets[1], canny)
    assert not _same_weights(pose, canny)
    assert pipe2.safety_checker is None
    assert pipe2.device == torch.device("cpu") and pipe2.unet.dtype == torch.float32
    assert pipe2._progress_bar_config == {"disable": True}


def test_one_controlnet_and_one_log_line(tiny_models, caplog):
    from diffusers import ControlNetModel

    with caplog.at_level(logging.INFO, logger="vidreal"):
        pipe = load_pipeline(str(tiny_models["sd"]), {"canny": str(tiny_models["canny"])}, device="cpu", dtype="fp32")
    assert type(pipe.controlnet) is ControlNetModel
    assert _same_weights(pipe.controlnet, ControlNetModel.from_pretrained(tiny_models["canny"]))
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("vidreal")]
    assert len(lines) == 1
    assert all(s in lines[0] for s in ("cpu", "float32", str(tiny_models["sd"]), f"canny={tiny_models['canny']}"))


def test_missing_paths_are_input_errors(tiny_models, tmp_path):
    missing = tmp_path / "nope"
    sd, cn = tiny_models["sd"], {"canny": tiny_models["canny"]}
    cases = [  # (kwargs, what the message names, the path it reports)
        (dict(model=str(missing), controlnets=cn), "model", missing),
        (dict(model="./no-such-model", controlnets=cn), "model", Path("no-such-model")),
        (dict(model=tmp_path / "model.safetensors", controlnets=cn), "model", tmp_path / "model.safetensors"),
        (dict(model=sd, controlnets={"canny": str(missing)}), "ControlNet 'canny'", missing),
        (dict(model=sd, controlnets=cn, embeddings=[f"{missing}.pt:tok"]), "embedding", Path(f"{missing}.pt")),
        (dict(model=sd, controlnets=cn, lora=f"{missing}.safetensors"), "LoRA", Path(f"{missing}.safetensors")),
    ]
    for kwargs, what, path in cases:
        with pytest.raises(InputError) as info:
            load_pipeline(device="cpu", **kwargs)
        assert info.value.message == f"{what} not found"
        assert Path(info.value.path) == path


def test_folders_that_are_not_models(tiny_models, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="model_index.json"):
        load_pipeline(empty, {"canny": tiny_models["canny"]}, device="cpu")
    with pytest.raises(ModelError, match="ControlNetModel folder"):
        load_pipeline(tiny_models["canny"], {"canny": tiny_models["canny"]}, device="cpu")
    with pytest.raises(ModelError, match="config.json"):
        load_pipeline(tiny_models["sd"], {"canny": tiny_models["sd"]}, device="cpu")
    with pytest.raises(ConfigError, match="at least one ControlNet"):
        load_pipeline(tiny_models["sd"], {}, device="cpu")


# ----------------------------------------------------------------------------- hub cache / offline
def test_offline_hub_ids_not_cached_fail_with_download_hint(tiny_models, empty_hub):
    with pytest.raises(ModelError) as info:
        load_pipeline(device="cpu")  # the default hub ids
    msg = str(info.value)
    assert loading.DEFAULT_MODEL in msg and "hf download" in msg and "--model weights/" in msg
    assert str(empty_hub) in msg and "HF_HUB_OFFLINE" in msg
    with pytest.raises(ModelError) as info:
        load_pipeline(tiny_models["sd"], device="cpu")  # the default ControlNets
    msg = str(info.value)
    assert "lllyasviel/control_v11p_sd15_canny" in msg and "hf download" in msg and "--controlnet canny=weights/" in msg


def _put_in_hub_cache(home: Path, repo: str, folder: Path) -> None:
    """Lay `folder` out as huggingface_hub's cache does for `repo` (refs/main -> snapshots/<commit>)."""
    commit = "0" * 40
    root = home / "hub" / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, root / "snapshots" / commit)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)


def test_hub_ids_load_from_the_cache_under_hf_home(tiny_models, empty_hub, pipe2):
    _put_in_hub_cache(empty_hub, "vidreal-test/tiny-sd", tiny_models["sd"])
    _put_in_hub_cache(empty_hub, "vidreal-test/tiny-canny", tiny_models["canny"])
    pipe = load_pipeline("vidreal-test/tiny-sd", {"canny": "vidreal-test/tiny-canny"}, device="cpu")
    assert _same_weights(pipe.unet, pipe2.unet) and _same_weights(pipe.controlnet, pipe2.controlnet.nets[1])

    # a repository only partly in the cache: one line saying so, with the command that completes it
    _put_in_hub_cache(empty_hub, "vidreal-test/half-canny", tiny_models["canny"])
    next((empty_hub / "hub" / "models--vidreal-test--half-canny").rglob("*.safetensors")).unlink()
    with pytest.raises(ModelError, match="from the Hugging Face cache .*hf download vidreal-test/half-canny"):
        load_pipeline("vidreal-test/tiny-sd", {"canny": "vidreal-test/half-canny"}, device="cpu")


# ----------------------------------------------------------------------------- pickle safety
def test_pickle_refused_without_the_flag_and_loaded_with_it(tiny_models, tmp_path, pipe2):
    from diffusers import ControlNetModel

    pickled = tmp_path / "canny-bin"
    ControlNetModel.from_pretrained(tiny_models["canny"]).save_pretrained(pickled, safe_serialization=False)
    assert [p.suffix for p in pickled.glob("*.bin")] == [".bin"] and not list(pickled.glob("*.safetensors"))
    with pytest.raises(ModelError, match="refusing to load pickle checkpoint .*--allow-pickle") as info:
        load_pipeline(tiny_models["sd"], {"canny": pickled}, device="cpu")
    assert info.value.path.endswith(".bin")
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not read")
    with pytest.raises(ModelError, match="refusing to load pickle checkpoint model.ckpt"):
        load_pipeline(ckpt, {"canny": tiny_models["canny"]}, device="cpu")

    pipe = load_pipeline(tiny_models["sd"], {"canny": pickled}, device="cpu", allow_pickle=True)
    assert _same_weights(pipe.controlnet, pipe2.controlnet.nets[1])


# ----------------------------------------------------------------------------- single files
def test_single_file_checkpoint_equals_the_folder(tiny_models, tmp_path, pipe2, empty_hub):
    from safetensors.torch import load_file, save_file

    single = tmp_path / "tiny-sd.safetensors"
    save_file(_tool("make_single_file").convert(tiny_models["sd"]), str(single))
    keys = load_file(str(single)).keys()
    assert "model.diffusion_model.input_blocks.0.0.weight" in keys  # the original (LDM) layout
    assert "first_stage_model.decoder.up.0.block.0.conv1.weight" in keys
    assert not any(k.startswith(("unet.", "down_blocks.")) for k in keys)

    # a ControlNet as a single file with its config.json beside it
    cn_dir = tmp_path / "cn"
    cn_dir.mkdir()
    shutil.copy(tiny_models["canny"] / "diffusion_pytorch_model.safetensors", cn_dir / "canny.safetensors")
    shutil.copy(tiny_models["canny"] / "config.json", cn_dir / "config.json")

    pipe = load_pipeline(single, {"pose": tiny_models["pose"], "canny": cn_dir / "canny.safetensors"},
                         device="cpu", model_config=tiny_models["sd"])
    for name in ("unet", "vae", "text_encoder", "controlnet"):
        assert _same_weights(getattr(pipe, name), getattr(pipe2, name)), name
    assert pipe.tokenizer.get_vocab() == pipe2.tokenizer.get_vocab()
    assert dict(pipe.scheduler.config) == dict(pipe2.scheduler.config)

    # without --model-config the SD 1.5 configs are needed from the (empty, offline) cache
    with pytest.raises(ModelError, match="# then --model-config weights/stable-diffusion-v1-5") as info:
        load_pipeline(single, {"canny": tiny_models["canny"]}, device="cpu")
    assert "hf download" in str(info.value)


def _assert_lists_every_default_model(message: str) -> None:
    """A short first line, then `vidreal download` and one indented command per missing model, each
    fetching into a folder (--local-dir) and naming the flag that then points at it."""
    first, *commands = message.splitlines()
    assert first.startswith("cannot load 3 models: not in the Hugging Face cache") and len(first) < 200, first
    assert commands[0].startswith("  vidreal download") and len(commands) == 4, message
    for repo, flag in [(DEFAULT_MODEL, "--model "), *((cn, f"--controlnet {kind}=") for kind, cn in DEFAULT_CONTROLNETS.items())]:
        line = next(line for line in commands if line.startswith(f"  hf download {repo} "))
        local = f"weights/{repo.split('/')[-1]}"
        assert f"--local-dir {local}  # then {flag}{local}" in line, line
        # the safety checker is excluded from the SD download only
        assert ("--exclude 'safety_checker/*'" in line) == (repo == DEFAULT_MODEL)


def test_offline_lists_every_missing_model_with_its_command(empty_hub, samples, tmp_path):
    with pytest.raises(ModelError) as info:
        load_pipeline(device="cpu")  # the default hub ids
    _assert_lists_every_default_model(str(info.value))
    assert "cannot load 3 models" in str(info.value) and str(empty_hub) in str(info.value)
    # the main job, as README gives it: one line, nothing written
    res = CliRunner().invoke(cli, ["translate", str(samples / "humanoid_punch_ground.mp4"), "-o",
                                   str(tmp_path / "out" / "punch.mp4"), "--no-progress"])
    assert res.exit_code == 1 and res.output.startswith("error: cannot load 3 models"), res.output
    _assert_lists_every_default_model(res.output.strip()[len("error: "):])
    assert not (tmp_path / "out" / "punch.mp4").exists()


def test_unreachable_hub_fails_at_once_listing_every_missing_model(empty_hub, monkeypatch):
    from huggingface_hub import constants

    # not offline by switch, but no hub answers (a closed local port): no retries, one error
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ModelError) as info:
        load_pipeline(device="cpu")
    _assert_lists_every_default_model(str(info.value))
    assert "unreachable (http://127.0.0.1:9)" in str(info.value)


# ----------------------------------------------------------------------------- Textual Inversion
def test_textual_inversion_formats(tiny_models, tmp_path, caplog):
    from safetensors.torch import save_file

    width = 32  # the tiny text encoder's hidden size
    g = torch.Generator().manual_seed(0)
    vec, pair, a1111 = (torch.randn(shape, generator=g) for shape in ((width,), (2, width), (1, width)))
    save_file({"<vr-style>": vec}, str(tmp_path / "learned_embeds.safetensors"))  # diffusers
    save_file({"emb_params": pair}, str(tmp_path / "mystyle.safetensors"))  # A1111 safetensors: token = stem
    torch.save({"string_to_param": {"*": a1111}, "name": "oldstyle", "step": 3}, tmp_path / "old.pt")  # A1111 .pt: token = stem "old"

    specs = [str(tmp_path / "learned_embeds.safetensors"), str(tmp_path / "mystyle.safetensors"),
             str(tmp_path / "old.pt"), f"{tmp_path / 'learned_embeds.safetensors'}:<renamed>",
             f"{tmp_path / 'learned_embeds.safetensors'}:sks"]  # "sks" is already a word: it gets the embedding
    with pytest.raises(ModelError, match="refusing to load pickle checkpoint old.pt"):
        load_pipeline(tiny_models["sd"], {"canny": tiny_models["canny"]}, device="cpu", embeddings=specs)
    with caplog.at_level(logging.WARNING, logger="vidreal"):
        pipe = load_pipeline(tiny_models["sd"], {"canny": tiny_models["canny"]}, device="cpu", embeddings=specs,
                             allow_pickle=True)
    assert any("'sks' is also a word" in r.getMessage() for r in caplog.records)
    table = pipe.text_encoder.get_input_embeddings().weight
    expected = {"<vr-style>": vec, "mystyle": pair[0], "mystyle_1": pair[1], "old": a1111[0],
                "<renamed>": vec, "sks": vec}
    for token, value in expected.items():
        ids = pipe.tokenizer(token, add_special_tokens=False).input_ids
        assert len(ids) == 1, token
        assert torch.equal(table[ids[0]], value), token
    # the two-vector token expands to both of its ids inside a prompt
    assert pipe.maybe_convert_prompt("a mystyle person", pipe.tokenizer) == "a mystyle mystyle_1 person"

    with pytest.raises(ModelError, match="'<vr-style>' already exists"):
        load_pipeline(tiny_models["sd"], {"canny": tiny_models["canny"]}, device="cpu",
                      embeddings=[tmp_path / "learned_embeds.safetensors"] * 2)


def test_a1111_embedding_is_triggered_by_its_file_name(tiny_models, tmp_path):
    width = 32  # the tiny text encoder's hidden size
    vectors = torch.randn((2, width), generator=torch.Generator().manual_seed(0))
    # A1111 .pt files carry an internal name that is often stale: users type the file's name
    torch.save({"string_to_param": {"*": vectors[:1]}, "name": "internalname", "step": 9}, tmp_path / "myneg.pt")
    torch.save({"string_to_param": {"*": vectors[1:]}, "name": "internalname2"}, tmp_path / "other.pt")
    pipe = load_pipeline(tiny_models["sd"], {"canny": tiny_models["canny"]}, device="cpu", allow_pickle=True,
                         embeddings=[tmp_path / "myneg.pt", f"{tmp_path / 'other.pt'}:<override>"])
    vocab = pipe.tokenizer.get_vocab()
    assert "myneg" in vocab and "<override>" in vocab
    assert "internalname" not in vocab and "internalname2" not in vocab
    table = pipe.text_encoder.get_input_embeddings().weight
    assert torch.equal(table[vocab["myneg"]], vectors[0]) and torch.equal(table[vocab["<override>"]], vectors[1])


# ----------------------------------------------------------------------------- LoRA
def test_lora_is_fused_and_changes_the_unet(tiny_models, tmp_path, pipe2):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(tiny_models["sd"], subfolder="unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    StableDiffusionPipeline.save_lora_weights(tmp_path / "lora", unet_lora_layers=get_peft_model_state_dict(unet))
    lora_file = tmp_path / "lora" / "pytorch_lora_weights.safetensors"
    assert lora_file.is_file()

    g = torch.Generator().manual_seed(1)
    sample, text = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 7, 32, generator=g)
    with torch.no_grad():
        expected = unet(sample, 10, text).sample
        base = pipe2.unet(sample, 10, text).sample
        pipe = load_pipeline(tiny_models["sd"], {"canny": tiny_models["canny"]}, device="cpu", lora=lora_file)
        got = pipe.unet(sample, 10, text).sample
        off = load_pipeline(tiny_models["sd"], {"canny": tiny_models["canny"]}, device="cpu", lora=lora_file,
                            lora_scale=0.0).unet(sample, 10, text).sample
    assert (expected - base).abs().mean() > 1e-3  # the LoRA matters
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(off, base, atol=1e-6, rtol=0)  # lora_scale reaches the fusion
    assert not any("lora" in k for k in pipe.unet.state_dict())  # fused, adapter layers gone

"""Load Stable Diffusion 1.5 + N ControlNets (+ Textual Inversion embeddings, + LoRA) safely.

One entry point, :func:`load_pipeline`, returns a diffusers ``StableDiffusionControlNetPipeline``
on the requested device and dtype. Weight sources can be:

* a Hugging Face hub id (``stable-diffusion-v1-5/stable-diffusion-v1-5``), read from the local
  cache (``HF_HOME`` / ``HF_HUB_CACHE``, read at call time) or downloaded when the hub is
  reachable and ``HF_HUB_OFFLINE`` is not set;
* a local diffusers folder (``model_index.json`` for the model, ``config.json`` for a ControlNet),
  e.g. a DreamBooth output;
* one single-file checkpoint (``.safetensors``; ``.ckpt``/``.bin``/``.pt``/``.pth`` only with
  ``allow_pickle=True``) in the original (CompVis/LDM) layout, as personalised models are shared.

Safety: only ``.safetensors`` weights are read unless ``allow_pickle`` is set (pickle files can run
code when loaded); remote code is never trusted. The safety checker is not loaded: this is a
research tool that translates synthetic renders, and the checker's blacked-out frames would break
temporal consistency.

Failures raise ``vidreal.errors``: ``InputError`` for a path that does not exist, ``ModelError``
for weights that are missing from the cache, unsafe, or not a model of the expected kind, and
``ConfigError`` for a bad device, dtype or argument.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from vidreal.config import DEFAULT_CONTROLNETS, DEFAULT_MODEL, lora_list
from vidreal.errors import ConfigError, InputError, ModelError, VidrealError
from vidreal.hub import (CONFIG_FILES, HubNeed, check_hub, controlnet_need, hub_cache_dir, hub_error, lora_need,
                         model_config_need, model_need, vae_need)
from vidreal.runtime import first_line, resolve_device, resolve_dtype

log = logging.getLogger(__name__)

SAFE_SUFFIXES = {".safetensors"}
PICKLE_SUFFIXES = {".ckpt", ".bin", ".pt", ".pth"}
# Files that make a folder's weights; tokenizers and configs hold no tensors.
_WEIGHT_SUFFIXES = SAFE_SUFFIXES | PICKLE_SUFFIXES


# --------------------------------------------------------------------------- embeddings spec
def parse_embedding(spec: str | os.PathLike) -> tuple[Path, str | None]:
    """Split ``"FILE[:TOKEN]"`` into ``(Path(FILE), TOKEN or None)``.

    The split is on the last ``:`` and only when what follows contains no path separator, so
    ``dir:with:colons/emb.safetensors`` stays a path; an existing file named with a colon is
    taken whole. Raises ConfigError for an empty file or token.
    """
    text = os.fspath(spec)
    path, token = text, None
    if ":" in text and not Path(text).expanduser().exists():
        head, tail = text.rsplit(":", 1)
        if "/" not in tail and "\\" not in tail:
            path, token = head, tail.strip()
            if not token or any(c.isspace() for c in token):
                raise ConfigError(f"bad token in embedding spec {text!r}; expected FILE[:TOKEN] with a token without spaces")
    if not path:
        raise ConfigError(f"embedding spec {text!r} names no file; expected FILE[:TOKEN]")
    return Path(path).expanduser(), token


# --------------------------------------------------------------------------- sources
def _looks_local(spec: str) -> bool:
    """A string that is meant as a path, never as a hub id ``org/name``."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if spec.startswith((".", "/", "~")) or "\\" in spec or spec.count("/") > 1:
        return True
    if Path(spec).suffix.lower() in _WEIGHT_SUFFIXES | {".yaml", ".json"}:
        return True
    try:
        validate_repo_id(spec)
    except HFValidationError:
        return True
    return False


def _source(spec: str | os.PathLike, what: str) -> tuple[str, Path | str]:
    """Classify a weight source: ("folder", Path) | ("file", Path) | ("hub", repo_id).

    Raises InputError when it looks like a path that does not exist.
    """
    if not isinstance(spec, (str, os.PathLike)) or not os.fspath(spec).strip():
        raise ConfigError(f"{what}: expected a hub id, a folder or a file, got {spec!r}")
    text = os.fspath(spec).strip()
    if text.startswith(("http://", "https://")):
        raise ConfigError(f"{what}: URLs are not loaded directly; download the file and pass its path: {text}")
    path = Path(text).expanduser()
    if path.is_dir():
        return "folder", path
    if path.is_file():
        return "file", path
    if isinstance(spec, os.PathLike) or _looks_local(text):
        raise InputError(f"{what} not found", path)
    return "hub", text


def _check_file(path: Path, what: str, allow_pickle: bool) -> None:
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise ModelError(
                f"refusing to load pickle checkpoint {path.name} for the {what} (a pickle file can run code "
                "when loaded); use a .safetensors file, or pass --allow-pickle if you trust it", path)
    elif suffix not in SAFE_SUFFIXES:
        raise ModelError(
            f"unsupported {what} file type {suffix or '(none)'!r}; expected .safetensors "
            "(or .ckpt/.bin/.pt/.pth with --allow-pickle)", path)


def _check_folder_weights(folder: Path, what: str, allow_pickle: bool) -> None:
    """Refuse a folder whose weights exist only as pickle files (unless allowed)."""
    files = [f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in _WEIGHT_SUFFIXES]
    pickles = [f for f in files if f.suffix.lower() in PICKLE_SUFFIXES]
    if pickles and not any(f.suffix.lower() in SAFE_SUFFIXES for f in files) and not allow_pickle:
        raise ModelError(
            f"refusing to load pickle checkpoint {pickles[0].name} for the {what} (no .safetensors beside it; a "
            "pickle file can run code when loaded); pass --allow-pickle if you trust it", pickles[0])


def _read_json(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"unreadable {path.name}: {e}", path) from e


def _check_pipeline_folder(folder: Path, allow_pickle: bool) -> None:
    index = folder / "model_index.json"
    if not index.is_file():
        cls = _read_json(folder / "config.json").get("_class_name") if (folder / "config.json").is_file() else None
        kind = f"a {cls} folder" if cls else "not a diffusers pipeline folder"
        raise ModelError(
            f"the model folder is {kind} (no model_index.json); expected a Stable Diffusion folder with "
            "model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/ (e.g. a DreamBooth output) "
            "or a single .safetensors checkpoint", folder)
    for name, value in _read_json(index).items():
        if name.startswith("_") or not isinstance(value, list) or value[0] is None or name == "safety_checker":
            continue
        sub = folder / name
        if name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") and not sub.is_dir():
            raise ModelError(f"the model folder has no {name}/ subfolder (listed in model_index.json)", folder)
        if sub.is_dir():
            _check_folder_weights(sub, f"model's {name}", allow_pickle)


def _check_controlnet_folder(folder: Path, what: str, allow_pickle: bool) -> None:
    config = folder / "config.json"
    if not config.is_file():
        extra = " (it is a pipeline folder)" if (folder / "model_index.json").is_file() else ""
        raise ModelError(f"{what} folder has no config.json{extra}; expected a diffusers ControlNetModel folder "
                         "(config.json + diffusion_pytorch_model.safetensors) or a single .safetensors file", folder)
    cls = _read_json(config).get("_class_name")
    if cls not in (None, "ControlNetModel"):
        raise ModelError(f"{what} folder holds a {cls}, expected a ControlNetModel", folder)
    _check_folder_weights(folder, what, allow_pickle)


# --------------------------------------------------------------------------- components
def _hub_kwargs(allow_pickle: bool, local_only: bool) -> dict:
    return {"cache_dir": hub_cache_dir(), "local_files_only": local_only,
            "use_safetensors": None if allow_pickle else True}


def _check_model(kind: str, src, allow_pickle: bool) -> None:
    """Cheap checks of a local model source (hub ids are checked by :func:`check_hub`)."""
    if kind == "folder":
        _check_pipeline_folder(src, allow_pickle)
    elif kind == "file":
        _check_file(src, "model", allow_pickle)


def _check_controlnet(name: str, kind: str, src, allow_pickle: bool) -> None:
    what = f"ControlNet '{name}'"
    if kind == "folder":
        _check_controlnet_folder(src, what, allow_pickle)
    elif kind == "file":
        _check_file(src, what, allow_pickle)


def _load_controlnet(name: str, kind: str, src, dtype: torch.dtype, allow_pickle: bool, local_only: bool):
    from diffusers import ControlNetModel

    try:
        if kind == "folder":
            return ControlNetModel.from_pretrained(src, dtype=dtype, use_safetensors=None if allow_pickle else True)
        if kind == "hub":
            return ControlNetModel.from_pretrained(src, dtype=dtype, **_hub_kwargs(allow_pickle, local_only))
        # A single file: its config comes from an original .yaml beside it, or a diffusers
        # config.json in the same folder; otherwise diffusers infers it (needs the hub cache).
        config = {}
        if src.with_suffix(".yaml").is_file():
            config = {"original_config": str(src.with_suffix(".yaml"))}
        elif (src.parent / "config.json").is_file():
            config = {"config": str(src.parent)}
        return ControlNetModel.from_single_file(str(src), dtype=dtype, local_files_only=local_only,
                                                cache_dir=hub_cache_dir(), **config)
    except VidrealError:
        raise
    except Exception as e:  # diffusers raises OSError/ValueError/... for every kind of load failure
        if kind == "hub":
            raise hub_error(controlnet_need(name, src), e) from e
        hint = "; put its config.json (or original .yaml) beside the file" if kind == "file" else ""
        raise ModelError(f"cannot load ControlNet '{name}': {first_line(e, with_type=True)}{hint}", src) from e


VAE_CLASSES = ("AutoencoderKL", "AutoencoderTiny")  # AutoencoderTiny: TAESD's architecture


def _vae_class(config: dict, where):
    """The diffusers class a VAE config names; ModelError for anything but a VAE."""
    import diffusers

    name = config.get("_class_name")
    if name not in VAE_CLASSES:
        raise ModelError(f"the VAE holds a {name or 'model of unknown class'}, expected one of "
                         f"{', '.join(VAE_CLASSES)}", where)
    return getattr(diffusers, name)


def _check_vae(kind: str, src, allow_pickle: bool) -> None:
    if kind == "folder":
        if not (src / "config.json").is_file():
            raise ModelError("the VAE folder has no config.json; expected a diffusers AutoencoderKL or AutoencoderTiny "
                             "folder (config.json + diffusion_pytorch_model.safetensors) or a .safetensors file", src)
        _vae_class(_read_json(src / "config.json"), src)
        _check_folder_weights(src, "VAE", allow_pickle)
    elif kind == "file":
        _check_file(src, "VAE", allow_pickle)


def _load_vae(kind: str, src, dtype: torch.dtype, allow_pickle: bool, local_only: bool):
    """An AutoencoderKL or AutoencoderTiny from a folder, a hub repo (the class its config.json
    names) or one file: diffusers-layout weights with a config.json beside them, else an
    original-layout (CompVis) AutoencoderKL checkpoint."""
    try:
        if kind == "folder":
            cls = _vae_class(_read_json(src / "config.json"), src)
            return cls.from_pretrained(src, dtype=dtype, use_safetensors=None if allow_pickle else True)
        if kind == "hub":
            from huggingface_hub import hf_hub_download

            config = hf_hub_download(src, "config.json", cache_dir=hub_cache_dir(), local_files_only=local_only)
            cls = _vae_class(_read_json(Path(config)), src)
            return cls.from_pretrained(src, dtype=dtype, **_hub_kwargs(allow_pickle, local_only))
        if (src.parent / "config.json").is_file():
            cls = _vae_class(_read_json(src.parent / "config.json"), src)
            vae = cls.from_config(cls.load_config(src.parent))
            vae.load_state_dict(_read_weights(src))
            return vae.to(dtype)
        from diffusers import AutoencoderKL

        return AutoencoderKL.from_single_file(str(src), dtype=dtype, local_files_only=local_only,
                                              cache_dir=hub_cache_dir())
    except VidrealError:
        raise
    except Exception as e:
        if kind == "hub":
            raise hub_error(vae_need(src), e) from e
        hint = "; put its config.json beside the file" if kind == "file" else ""
        raise ModelError(f"cannot load the VAE: {first_line(e, with_type=True)}{hint}", src) from e


def _read_weights(path: Path) -> dict:
    """A state dict from a .safetensors file (or an allowed pickle file, tensors only)."""
    if path.suffix.lower() in SAFE_SUFFIXES:
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def _resolve_model_config(kind: str, src, local_only: bool) -> str:
    """A local folder holding the pipeline's component configs, for single-file loading."""
    if kind == "folder":
        if not (src / "model_index.json").is_file():
            raise ModelError("the model config folder has no model_index.json; expected a diffusers Stable "
                             "Diffusion folder (its configs and tokenizer are used)", src)
        return str(src)
    if kind == "file":
        raise ModelError("the model config must be a diffusers folder or hub id, not a file", src)
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(src, cache_dir=hub_cache_dir(), local_files_only=local_only,
                                 allow_patterns=list(CONFIG_FILES))
    except Exception as e:
        raise hub_error(model_config_need(src), e) from e


def _load_sd(kind: str, src, config: str | None, controlnet, vae, dtype: torch.dtype, allow_pickle: bool,
             local_only: bool):
    """The pipeline around the loaded ControlNet(s), and the VAE when one replaces the model's."""
    from diffusers import StableDiffusionControlNetPipeline

    common = {"controlnet": controlnet, "safety_checker": None, "feature_extractor": None,
              "requires_safety_checker": False, "dtype": dtype, **({} if vae is None else {"vae": vae})}
    try:
        if kind == "folder":
            return StableDiffusionControlNetPipeline.from_pretrained(
                src, use_safetensors=None if allow_pickle else True, **common)
        if kind == "hub":
            return StableDiffusionControlNetPipeline.from_pretrained(src, **_hub_kwargs(allow_pickle, local_only),
                                                                     **common)
        return StableDiffusionControlNetPipeline.from_single_file(str(src), config=config, local_files_only=True,
                                                                  **common)
    except VidrealError:
        raise
    except Exception as e:
        if kind == "hub":
            raise hub_error(model_need(src), e) from e
        raise ModelError(f"cannot load the model: {first_line(e, with_type=True)}", src) from e


# --------------------------------------------------------------------------- TI and LoRA
def _embedding_file(spec, allow_pickle: bool) -> tuple[Path, str | None]:
    """Check an embedding spec -> (the file to read, explicit token or None)."""
    if isinstance(spec, tuple):
        path, token = Path(spec[0]).expanduser(), spec[1]
    else:
        path, token = parse_embedding(spec)
    if not path.exists():
        raise InputError("embedding not found", path)
    if path.is_dir():  # a diffusers Textual Inversion output folder
        names = ["learned_embeds.safetensors"] + (["learned_embeds.bin"] if allow_pickle else [])
        found = [path / n for n in names if (path / n).is_file()]
        if not found:
            _check_folder_weights(path, "embedding", allow_pickle)
            raise ModelError("embedding folder has no learned_embeds.safetensors", path)
        path = found[0]
    _check_file(path, "embedding", allow_pickle)
    return path, token


def _read_embedding(path: Path) -> tuple[str | None, torch.Tensor]:
    """Read a Textual Inversion file -> (the token it names or None, tensor (D,) or (N, D)).

    Formats: diffusers ``{token: tensor}`` (``learned_embeds.safetensors``), A1111 ``.pt``
    ``{"string_to_param": {"*": tensor}, "name": ...}`` and A1111 ``.safetensors`` ``{"emb_params": tensor}``.
    A1111 files name no token (None): A1111 users trigger an embedding by its file name, and
    the internal ``name`` is often stale (renamed files), so the caller uses the file's stem.
    """
    try:
        state = _read_weights(path)  # an allowed pickle: weights_only still refuses arbitrary objects
    except Exception as e:
        raise ModelError(f"unreadable embedding file: {first_line(e, with_type=True)}", path) from e
    if isinstance(state, torch.Tensor):
        return None, state
    if not isinstance(state, Mapping):
        raise ModelError(f"unrecognised embedding file (a {type(state).__name__})", path)
    if "string_to_param" in state:
        params = state["string_to_param"]
        tensor = params.get("*") if isinstance(params, Mapping) else None
        if tensor is None and isinstance(params, Mapping) and len(params) == 1:
            tensor = next(iter(params.values()))
        return None, tensor
    if "emb_params" in state:
        return None, state["emb_params"]
    if len(state) == 1:
        token, tensor = next(iter(state.items()))
        return str(token), tensor
    raise ModelError(f"unrecognised embedding file with keys {sorted(map(str, state))[:5]}; expected {{token: "
                     "tensor}} (diffusers), 'string_to_param' or 'emb_params' (A1111)", path)


def _load_embedding(pipe, path: Path, token: str | None) -> str:
    """Add one embedding to the tokenizer and text encoder; returns its token."""
    file_token, tensor = _read_embedding(path)
    token = token or file_token or path.stem
    if not isinstance(tensor, torch.Tensor) or tensor.ndim not in (1, 2) or tensor.numel() == 0:
        raise ModelError(f"embedding for '{token}' is not a (D,) or (N, D) tensor", path)
    width = pipe.text_encoder.get_input_embeddings().weight.shape[-1]
    if tensor.shape[-1] != width:
        raise ModelError(f"embedding width {tensor.shape[-1]} does not match the text encoder's {width} "
                         "(trained for another base model?)", path)
    vocab = pipe.tokenizer.get_vocab()
    if token in vocab or f"{token}_1" in vocab:
        raise ModelError(f"embedding token '{token}' already exists in the tokenizer's vocabulary; "
                         "choose another one with --embedding FILE:TOKEN", path)
    if len(pipe.tokenizer(token, add_special_tokens=False).input_ids) == 1:
        log.warning("embedding token '%s' is also a word of the vocabulary; prompts using it now get the embedding",
                    token)
    try:
        pipe.load_textual_inversion(tensor.detach().float(), token=token)
    except Exception as e:
        raise ModelError(f"cannot load embedding '{token}': {first_line(e, with_type=True)}", path) from e
    return token


def _check_lora(kind: str, src, allow_pickle: bool) -> None:
    from diffusers.utils import USE_PEFT_BACKEND

    if not USE_PEFT_BACKEND:
        raise ModelError("LoRA weights need the 'peft' package (>= 0.17): pip install peft")
    if kind == "file":
        _check_file(src, "LoRA", allow_pickle)
    elif kind == "folder":
        _check_folder_weights(src, "LoRA", allow_pickle)


def _load_lora(pipe, kind: str, src, scale: float, allow_pickle: bool, local_only: bool) -> None:
    """Fold one LoRA into the weights at ``scale``; called once per LoRA, the deltas add up."""
    if kind == "file":
        where, kwargs = str(src.parent), {"weight_name": src.name}
    else:
        where, kwargs = str(src), {"use_safetensors": None if allow_pickle else True}
        if kind == "hub":
            kwargs.update(cache_dir=hub_cache_dir(), local_files_only=local_only)
    try:
        pipe.load_lora_weights(where, adapter_name="vidreal_lora", **kwargs)
        if not pipe.get_list_adapters():
            raise ValueError("no LoRA weights for this model's UNet or text encoder in it")
        # Fold the LoRA into the base weights and drop the adapter layers: plain modules run
        # faster and leave attention processors (cross-frame attention) untouched. LoRAs fused
        # one after the other add their scaled deltas: W + s1 B1 A1 + s2 B2 A2.
        pipe.fuse_lora(lora_scale=scale, adapter_names=["vidreal_lora"])
        pipe.unload_lora_weights()
    except Exception as e:
        if kind == "hub":
            raise hub_error(lora_need(src), e) from e
        raise ModelError(f"cannot load LoRA: {first_line(e, with_type=True)}", src) from e


# --------------------------------------------------------------------------- entry point
def _describe(spec) -> str:
    return os.fspath(spec) if isinstance(spec, (str, os.PathLike)) else repr(spec)


def load_pipeline(
    model: str | os.PathLike = DEFAULT_MODEL,
    controlnets: Mapping[str, str | os.PathLike] | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    embeddings: Iterable[str | os.PathLike | tuple] = (),
    lora=None,
    lora_scale: float = 1.0,
    allow_pickle: bool = False,
    model_config: str | os.PathLike | None = None,
    vae: str | os.PathLike | None = None,
):
    """Load SD 1.5 + ControlNets into a ``diffusers.StableDiffusionControlNetPipeline``.

    Args:
        model: hub id, local diffusers folder, or one original-layout single-file checkpoint.
        controlnets: ordered ``{name: hub id | folder | single file}``; ``None`` -> DEFAULT_CONTROLNETS.
            One gives a ``ControlNetModel``, more a ``MultiControlNetModel`` in this order.
        device: ``None``/"auto" (cuda > mps > cpu), "cpu", "cuda", "cuda:N", "mps".
        dtype: ``None``/"auto" (fp16 on cuda/mps, fp32 on cpu), "fp16", "bf16", "fp32" or a torch dtype.
        embeddings: Textual Inversion files as ``"FILE[:TOKEN]"`` strings (or ``(path, token)``);
            each token becomes one new tokenizer entry (N entries for an N-vector embedding).
        lora: LoRA weights fused into the model, each at its own scale: one ``"FILE[:SCALE]"`` (a
            ``.safetensors`` file, folder or hub id; a path) or a list of them (or of ``{path:, scale:}``
            dicts, ``(path, scale)`` tuples), see ``vidreal.config.parse_lora``; a spec without a
            scale gets ``lora_scale``. Few-step LoRAs (LCM, Hyper-SD, TCD) load the same way.
        allow_pickle: also read ``.ckpt/.bin/.pt/.pth`` files (they can run code: trusted files only).
        model_config: for a single-file ``model``: hub id or diffusers folder with the component
            configs and tokenizer (default: the SD 1.5 hub id, which must be in the cache offline).
        vae: replaces the model's VAE: an ``AutoencoderKL`` (e.g. a fine-tuned MSE VAE) or an
            ``AutoencoderTiny`` (TAESD: ~10x faster decoding, an approximation), as a hub id, a
            diffusers folder or one ``.safetensors`` file; ``None`` keeps the model's.

    The safety checker is not loaded (research translation tool). Remote code is never trusted.
    Returns the pipeline on ``device`` in ``dtype`` with its progress bar disabled.
    """
    sources = _resolve_sources(model, controlnets, embeddings, lora, lora_scale, model_config, vae, allow_pickle)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    local_only = check_hub(_hub_needs(sources))
    pipe = _load_components(sources, torch_dtype, allow_pickle, local_only)
    tokens = [_load_embedding(pipe, path, token) for path, token in sources.embedding_files]
    for src, scale in sources.lora_srcs:
        _load_lora(pipe, *src, scale, allow_pickle, local_only)
    pipe = _place(pipe, dev, torch_dtype)
    extras = "" if vae is None else f", VAE {_describe(vae)}"
    if tokens:
        extras += f", embeddings {', '.join(tokens)}"
    if sources.loras:
        extras += ", LoRA " + ", ".join(f"{path} x{scale:g}" for path, scale in sources.loras)
    log.info("loaded %s + ControlNets %s on %s (%s)%s", _describe(model),
             ", ".join(f"{n}={_describe(s)}" for n, s in sources.controlnets.items()), dev,
             str(torch_dtype).removeprefix("torch."), extras)
    return pipe


@dataclass
class _Sources:
    """What a run loads, each source classified by :func:`_source` as (kind, source)."""

    controlnets: dict  # {name: spec} as given
    loras: list  # [(source, scale)]
    vae: object  # as given (None: the model's)
    model_src: tuple
    nets: dict  # {name: (kind, source)}
    config_src: tuple | None  # the component configs of a single-file model
    vae_src: tuple | None
    lora_srcs: list  # [((kind, source), scale)]
    embedding_files: list  # [(file, token or None)]


def _resolve_sources(model, controlnets, embeddings, lora, lora_scale, model_config, vae, allow_pickle) -> _Sources:
    """Classify and check every source with no weights read, so a missing or unsafe file fails in
    milliseconds, before anything loads."""
    controlnets = dict(DEFAULT_CONTROLNETS if controlnets is None else controlnets)
    if not controlnets:
        raise ConfigError("at least one ControlNet is needed (controlnets is empty)")
    for name in controlnets:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"ControlNet names must be non-empty strings, got {name!r}")
    embeddings = [embeddings] if isinstance(embeddings, (str, os.PathLike)) else list(embeddings)
    lora = os.fspath(lora) if isinstance(lora, os.PathLike) else lora
    loras = lora_list(lora, lora_scale)  # [(source, scale)]; ConfigError for a bad spec
    model_src = _source(model, "model")
    nets = {name: _source(spec, f"ControlNet '{name}'") for name, spec in controlnets.items()}
    config_src = _source(DEFAULT_MODEL if model_config is None else model_config, "model config") \
        if model_src[0] == "file" else None
    vae_src = None if vae is None else _source(vae, "VAE")
    lora_srcs = [(_source(path, "LoRA"), scale) for path, scale in loras]
    _check_model(*model_src, allow_pickle)
    for name, (kind, src) in nets.items():
        _check_controlnet(name, kind, src, allow_pickle)
    if vae_src is not None:
        _check_vae(*vae_src, allow_pickle)
    embedding_files = [_embedding_file(spec, allow_pickle) for spec in embeddings]
    for src, _ in lora_srcs:
        _check_lora(*src, allow_pickle)
    return _Sources(controlnets, loras, vae, model_src, nets, config_src, vae_src, lora_srcs, embedding_files)


def _hub_needs(sources: _Sources) -> list[HubNeed]:
    """Every hub repo the run needs, to be checked at once (:func:`check_hub`)."""
    needed = []
    if sources.config_src is not None and sources.config_src[0] == "hub":
        needed.append(model_config_need(sources.config_src[1]))
    if sources.model_src[0] == "hub":
        needed.append(model_need(sources.model_src[1]))
    needed += [controlnet_need(name, src) for name, (kind, src) in sources.nets.items() if kind == "hub"]
    if sources.vae_src is not None and sources.vae_src[0] == "hub":
        needed.append(vae_need(sources.vae_src[1]))
    needed += [lora_need(src[1]) for src, _ in sources.lora_srcs if src[0] == "hub"]
    return needed


def _load_components(sources: _Sources, dtype: torch.dtype, allow_pickle: bool, local_only: bool):
    """The ControlNet(s), the VAE (when given) and the pipeline around them, in ``dtype``."""
    from diffusers import MultiControlNetModel

    config_dir = None if sources.config_src is None else _resolve_model_config(*sources.config_src, local_only)
    models = [_load_controlnet(name, kind, src, dtype, allow_pickle, local_only)
              for name, (kind, src) in sources.nets.items()]
    controlnet = models[0] if len(models) == 1 else MultiControlNetModel(models)
    vae = None if sources.vae_src is None else _load_vae(*sources.vae_src, dtype, allow_pickle, local_only)
    pipe = _load_sd(*sources.model_src, config_dir, controlnet, vae, dtype, allow_pickle, local_only)
    if vae is not None and vae.config.latent_channels != pipe.unet.config.in_channels:
        raise ModelError(f"the VAE makes {vae.config.latent_channels}-channel latents, the model's UNet reads "
                         f"{pipe.unet.config.in_channels}: not a VAE for this model", _describe(sources.vae))
    return pipe


def _place(pipe, device: torch.device, dtype: torch.dtype):
    """The pipeline on ``device`` in ``dtype``, its progress bar off."""
    pipe = pipe.to(device=device)
    if any(m.dtype != dtype for m in pipe.components.values() if isinstance(m, torch.nn.Module)):
        pipe = pipe.to(dtype=dtype)  # components were loaded in dtype; this only catches stragglers
    pipe.set_progress_bar_config(disable=True)
    return pipe

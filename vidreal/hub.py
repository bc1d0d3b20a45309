"""The Hugging Face hub, for every verb that loads models (torch-free).

* :func:`hub_cache_dir`: the cache folder (``HF_HUB_CACHE`` / ``HF_HOME``, read at call time).
* :class:`HubNeed`: one repo a run needs: the file that shows it is cached, the flag that replaces
  it, and which of its files to fetch (the same patterns for the error's ``hf download`` command
  and for ``vidreal download``).
* :func:`check_hub`: the up-front check every verb runs before loading anything: every missing
  repo named in one error, in seconds (no retries), offline or with the hub unreachable.
* :func:`hub_missing`: the one function that words that error; :func:`hub_error` turns a failed
  load into a one-line ModelError.
"""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import NamedTuple

from vidreal.errors import ModelError
from vidreal.runtime import first_line, hub_endpoint, hub_offline, hub_reachable

# What to fetch per kind of repo: the components a Stable Diffusion pipeline loads (no safety
# checker, safetensors only), a ControlNet's config and safetensors weights, or the component
# configs of a pipeline (for a single-file model).
SD_FILES = ("*.json", "*.txt", "*model.safetensors")
SD_SKIP = ("safety_checker/*",)
CONTROLNET_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
CONFIG_FILES = ("*.json", "*.txt", "*.model")
HF_MODEL_FILES = ("*.json", "*.txt", "model.safetensors")  # a transformers model (CLIP, BLIP): configs, tokenizer


class HubNeed(NamedTuple):
    """A hub repo a run needs: ``filename`` shows it is cached (None: any snapshot), ``flag`` is the
    option that replaces it with a local path, ``allow``/``ignore`` the file patterns to fetch
    (empty ``allow``: every file)."""

    repo: str
    filename: str | None
    flag: str
    allow: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()

    @property
    def include(self) -> str:
        """The ``hf download`` arguments that fetch what is needed (leading space; "" for all)."""
        args = ""
        if self.allow:
            args += " --include " + " ".join(shlex.quote(p) for p in self.allow)
        if self.ignore:
            args += " --exclude " + " ".join(shlex.quote(p) for p in self.ignore)
        return args


def is_hub_id(spec) -> bool:
    """``spec`` names a hub repo (``org/name``), not an existing or path-like local file or folder."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    text = os.fspath(spec)
    if Path(text).expanduser().exists() or text.startswith((".", "/", "~")) or "\\" in text:
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def model_need(repo: str) -> HubNeed:
    """A Stable Diffusion 1.5 pipeline repo (``--model``)."""
    return HubNeed(repo, "model_index.json", "--model PATH (a diffusers folder or a .safetensors file)", SD_FILES,
                   SD_SKIP)


def model_config_need(repo: str) -> HubNeed:
    """The component configs and tokenizer of a pipeline repo, for a single-file model."""
    return HubNeed(repo, "model_index.json", "--model-config DIR (a diffusers Stable Diffusion folder; only its "
                   "configs and tokenizer are read)", CONFIG_FILES)


def controlnet_need(name: str, repo: str) -> HubNeed:
    """The ControlNet of condition ``name``."""
    return HubNeed(repo, "config.json", f"--controlnet {name}=PATH (a ControlNet folder or a .safetensors file)",
                   CONTROLNET_FILES)


def vae_need(repo: str) -> HubNeed:
    """A VAE repo (``--vae``): an AutoencoderKL or AutoencoderTiny (TAESD) at the repo's root."""
    return HubNeed(repo, "config.json", "--vae PATH (an AutoencoderKL or AutoencoderTiny folder or a .safetensors file)",
                   CONTROLNET_FILES)


def transformers_need(repo: str, flag: str) -> HubNeed:
    """A transformers model repo (CLIP, BLIP): its configs, tokenizer and safetensors weights."""
    return HubNeed(repo, "config.json", flag, HF_MODEL_FILES)


def lora_need(repo: str) -> HubNeed:
    """A LoRA repo: its safetensors files (LoRA repos name their weights freely) and configs."""
    return HubNeed(repo, None, "--lora PATH (a .safetensors file)", ("*.safetensors", "*.json"))


def hub_cache_dir() -> str:
    """The hub cache folder, honouring ``HF_HUB_CACHE`` and ``HF_HOME`` as set at call time."""
    from huggingface_hub import constants

    env = os.environ
    if env.get("HF_HUB_CACHE"):
        return os.path.expandvars(os.path.expanduser(env["HF_HUB_CACHE"]))
    if env.get("HUGGINGFACE_HUB_CACHE"):
        return os.path.expandvars(os.path.expanduser(env["HUGGINGFACE_HUB_CACHE"]))
    if env.get("HF_HOME"):
        return os.path.join(os.path.expandvars(os.path.expanduser(env["HF_HOME"])), "hub")
    return constants.HF_HUB_CACHE


def hub_state() -> str:
    """Why the hub cannot be used: offline by switch, or the endpoint that does not answer."""
    return ("offline (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set)" if hub_offline()
            else f"unreachable ({hub_endpoint()})")


def hub_missing(missing: list[HubNeed]) -> ModelError:
    """The error naming every missing repo: a short first line, then one indented command per
    repo that fetches it into a folder (``hf download ... --local-dir weights/NAME``), and the
    flag that then points vidreal at that folder."""
    what = f"'{missing[0].repo}'" if len(missing) == 1 else f"{len(missing)} models"
    lines = [f"cannot load {what}: not in the Hugging Face cache ({hub_cache_dir()}) and the hub is {hub_state()}",
             "  vidreal download [--config FILE]  # every model of a run, into that cache; or each into a folder:"]
    lines += [f"  {download_command(need)}" for need in missing]
    return ModelError("\n".join(lines))


def download_command(need: HubNeed, folder: str = "weights") -> str:
    """``hf download REPO --include ... --local-dir weights/NAME  # then --flag weights/NAME``."""
    local = f"{folder}/{need.repo.split('/')[-1]}"
    flag = re.sub(r" \([^)]*\)", "", need.flag).replace("PATH", local).replace("DIR", local)
    flag = flag.replace("FILE", f"{local}/{need.filename}" if need.filename else local)
    return f"hf download {need.repo}{need.include} --local-dir {local}  # then {flag}"


def hub_cached(repo: str, filename: str | None) -> bool:
    """``filename`` of ``repo`` is in the local cache (``None``: any snapshot of the repo is)."""
    from huggingface_hub import try_to_load_from_cache

    if filename is None:
        snapshots = Path(hub_cache_dir()) / f"models--{repo.replace('/', '--')}" / "snapshots"
        return snapshots.is_dir() and any(snapshots.iterdir())
    hit = try_to_load_from_cache(repo, filename, cache_dir=hub_cache_dir())
    return isinstance(hit, str)


def check_hub(needed: list[HubNeed]) -> bool:
    """Check up front that every hub repo of a run can be loaded; returns True to load them from
    the local cache only (offline, or the hub does not answer), False to let downloads happen.

    Costs at most one short connection attempt (none offline), so an unreachable hub fails in
    seconds instead of after tens of seconds of retries per model. Raises ModelError naming every
    repo that is neither cached nor downloadable.
    """
    if not needed:
        return hub_offline()
    local_only = hub_offline() or not hub_reachable()
    missing = [need for need in needed if not hub_cached(need.repo, need.filename)]
    if missing and local_only:
        raise hub_missing(missing)
    return local_only


def hub_error(need: HubNeed, error: BaseException) -> ModelError:
    """Turn a failed hub load of ``need`` into one line saying what is missing and how to get it."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    chain, e = [], error
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    repo = need.repo
    if any(isinstance(c, GatedRepoError) for c in chain):
        return ModelError(f"cannot load '{repo}': the repository is gated; accept its terms on huggingface.co and "
                          f"log in with `hf auth login`, or pass {need.flag}")
    if any(isinstance(c, RepositoryNotFoundError) for c in chain):
        return ModelError(f"cannot load '{repo}': no such repository on the Hugging Face hub (or it is private); "
                          f"check the id or pass {need.flag}")
    if hub_cached(repo, need.filename):
        return ModelError(f"cannot load '{repo}' from the Hugging Face cache ({hub_cache_dir()}): "
                          f"{first_line(error, with_type=True)}; complete it with `hf download {repo}{need.include}`")
    return hub_missing([need])

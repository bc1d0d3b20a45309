"""Fetch every model a config needs, once, so that later runs work offline.

    fetches = plan_downloads("configs/rocog.yaml")   # [Fetch], what the config (or the defaults) needs
    listing = download(fetches, dry_run=True)        # {repo: [(file, size or None, cached)]}, nothing written
    paths = download(fetches, to="weights")          # {repo: local folder}; weights/vidreal.yaml points at them

A config needs: the Stable Diffusion 1.5 model (its components as safetensors, no safety checker),
its ControlNets, LoRAs and VAE that are hub ids, the OpenPose annotator when the ``openpose``
condition is used, CLIP for ``metrics``, BLIP for ``caption`` and the classifier's timm backbone
(its ``classify:`` section, else the default). Local paths are left out. Each repo's files are the
ones its loader reads, the same patterns the offline error's ``hf download`` commands give
(:mod:`vidreal.hub`). Downloads go through huggingface_hub's ``snapshot_download``: its progress
bars, resumable, into the Hugging Face cache or, with ``to``, one folder per repo.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import yaml

from vidreal.config import DEFAULT_MODEL, load_config, lora_list
from vidreal.errors import ModelError
from vidreal.hub import (CONTROLNET_FILES, HubNeed, controlnet_need, hub_cache_dir, hub_state, is_hub_id, lora_need,
                         model_config_need, model_need)
from vidreal.runtime import hub_endpoint, hub_offline, hub_reachable

log = logging.getLogger(__name__)

CONFIG_NAME = "vidreal.yaml"  # written into --to DIR: a config pointing at the downloaded folders


@dataclass(frozen=True)
class Fetch:
    """One hub repo to fetch: ``need`` (repo, file patterns), what it is for, and where a local copy
    goes in a config: ``key`` is the translate config key (``model``, ``controlnets.canny``,
    ``lora.0``, ``vae``) or the classify one (``classify.weights``), None for models only a flag
    names (``--clip-model``, caption's ``--model``, ``--controlnet openpose``'s annotator)."""

    need: HubNeed
    purpose: str
    key: str | None = None

    @property
    def repo(self) -> str:
        return self.need.repo


def _vae_need(repo: str) -> HubNeed:
    return HubNeed(repo, "config.json", "--vae PATH (a diffusers AutoencoderKL or AutoencoderTiny folder)",
                   CONTROLNET_FILES)


def _openpose_need() -> HubNeed:
    from vidreal.conditions.openpose import DEFAULT_MODEL, WEIGHT_FILES

    return HubNeed(DEFAULT_MODEL, WEIGHT_FILES[0], "the openpose condition's model option (a folder)", WEIGHT_FILES)


def _classify_settings(config: str | os.PathLike | None):
    """The classifier settings of the config's ``classify:`` section (defaults when it has none)."""
    from vidreal.classify.run import TrainConfig, load_train_config

    if config is None:
        return TrainConfig()
    doc = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
    return load_train_config(config) if isinstance(doc, dict) and "classify" in doc else TrainConfig()


def plan_downloads(config: str | os.PathLike | None = None) -> list[Fetch]:
    """What ``config`` (a translate/batch YAML; None: the defaults) needs from the hub, in load order,
    each repo once. Local paths are skipped (logged); ConfigError for a bad config."""
    from vidreal.classify.model import backbone_need
    from vidreal.classify.video_model import is_video_backbone
    from vidreal.metrics.clip import DEFAULT_CLIP_MODEL, clip_need
    from vidreal.personalize.caption import DEFAULT_CAPTION_MODEL, blip_need

    cfg = load_config(config)
    model_config = cfg.model_config
    if model_config is None and Path(str(cfg.model)).expanduser().is_file():
        model_config = DEFAULT_MODEL  # a single-file model reads its component configs from here
    wanted = [("model", "Stable Diffusion 1.5", cfg.model, model_need),
              ("model_config", "model configs", model_config, model_config_need)]
    wanted += [(f"controlnets.{kind}", f"ControlNet {kind}", source, partial(controlnet_need, kind))
               for kind, source in cfg.controlnets.items()]
    wanted += [(f"lora.{i}", f"LoRA {i + 1}", source, lora_need)
               for i, (source, _) in enumerate(lora_list(cfg.lora, cfg.lora_scale))]
    wanted.append(("vae", "VAE", getattr(cfg, "vae", None), _vae_need))  # the `vae` key, where the config has it

    fetches = []
    for key, purpose, source, need in wanted:
        if source is None:
            continue
        if not is_hub_id(source):
            log.info("%s: %s is a local path; nothing to fetch", key, source)
            continue
        fetches.append(Fetch(need(str(source)), purpose, key))
    if "openpose" in cfg.controlnets:
        fetches.append(Fetch(_openpose_need(), "OpenPose annotator (openpose condition)"))
    fetches.append(Fetch(clip_need(DEFAULT_CLIP_MODEL), "CLIP (metrics)"))
    fetches.append(Fetch(blip_need(DEFAULT_CAPTION_MODEL), "BLIP (caption)"))
    train = _classify_settings(config)
    if train.pretrained and train.weights is None and not is_video_backbone(train.backbone):
        need = backbone_need(train.backbone)
        if need is not None:
            fetches.append(Fetch(need, f"classifier backbone {train.backbone}", "classify.weights"))
    unique, seen = [], set()
    for fetch in fetches:
        if fetch.repo not in seen:
            seen.add(fetch.repo)
            unique.append(fetch)
    return unique


def check_online() -> None:
    """ModelError (one line) when the hub cannot be reached: offline by switch, or no answer."""
    if hub_offline() or not hub_reachable():
        raise ModelError(f"cannot download: the hub is {hub_state()}; run `vidreal download` where there is "
                         "network, with HF_HUB_OFFLINE unset")


def local_folder(to: str | os.PathLike, fetches: list[Fetch], fetch: Fetch) -> Path:
    """Where ``fetch`` goes under ``to``: the repo's name, or ``org--name`` when two repos share a name."""
    name = fetch.repo.split("/")[-1]
    if sum(f.repo.split("/")[-1] == name for f in fetches) > 1:
        name = fetch.repo.replace("/", "--")
    return Path(to).expanduser().resolve() / name


def download(fetches: list[Fetch], to: str | os.PathLike | None = None, dry_run: bool = False) -> dict:
    """Fetch each repo's files (``snapshot_download`` with its allow/ignore patterns; resumable).

    to: None -> the Hugging Face cache (``HF_HOME``/``HF_HUB_CACHE``); a folder -> one subfolder per
    repo (:func:`local_folder`). dry_run: fetch nothing; list each repo's files from the hub.
    Returns ``{repo: local folder}``, or with ``dry_run`` ``{repo: [(file, size or None, cached)]}``.
    ModelError when the hub cannot be reached (before anything is fetched), and after the others
    are fetched, naming every repo that could not be (no such repo, gated, ...).
    """
    from huggingface_hub import snapshot_download

    check_online()
    results, failed = {}, []
    for fetch in fetches:
        where = {"local_dir": str(local_folder(to, fetches, fetch))} if to is not None else {}
        log.info("%s %s (%s)", "listing" if dry_run else "fetching", fetch.repo, fetch.purpose)
        try:
            got = snapshot_download(fetch.repo, allow_patterns=list(fetch.need.allow) or None,
                                    ignore_patterns=list(fetch.need.ignore) or None, cache_dir=hub_cache_dir(),
                                    endpoint=hub_endpoint(), dry_run=dry_run, **where)
        except Exception as exc:  # huggingface_hub raises many kinds; each becomes one reason
            failed.append(f"{fetch.repo} ({fetch.purpose}): {_reason(exc)}")
            continue
        results[fetch.repo] = ([(f.filename, f.file_size, f.is_cached) for f in got] if dry_run else Path(got))
    if failed:
        done = f"{len(results)} of {len(fetches)} {'listed' if dry_run else 'fetched'}; "
        raise ModelError(done + "could not get " + "; ".join(failed))
    return results


def _reason(exc: BaseException) -> str:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    from vidreal.runtime import first_line

    if isinstance(exc, GatedRepoError):
        return "the repository is gated: accept its terms on huggingface.co and log in with `hf auth login`"
    if isinstance(exc, RepositoryNotFoundError):
        return "no such repository on the hub (or it is private; or a local path that does not exist yet)"
    return first_line(exc, with_type=True)


def local_config(config: str | os.PathLike | None, fetches: list[Fetch], paths: dict, to) -> Path:
    """Write ``to/vidreal.yaml``: ``config`` (or the defaults) with every downloaded model's key
    pointing at its folder, so ``--config to/vidreal.yaml`` runs offline. Returns its path."""
    doc = (yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}) if config is not None else {}
    cfg = load_config(config)
    doc.setdefault("model", cfg.model)
    doc["controlnets"] = dict(cfg.controlnets)
    loras = lora_list(cfg.lora, cfg.lora_scale)
    if loras:
        doc["lora"] = [{"path": source, "scale": scale} for source, scale in loras]
        doc.pop("lora_scale", None)
    for fetch in fetches:
        if fetch.key is None or fetch.repo not in paths:
            continue
        folder = str(paths[fetch.repo])
        section, _, item = fetch.key.partition(".")
        if section == "controlnets":
            doc["controlnets"][item] = folder
        elif section == "lora":
            doc["lora"][int(item)]["path"] = folder
        elif section == "classify":
            doc.setdefault("classify", {})["weights"] = str(Path(folder) / fetch.need.filename)
        else:
            doc[section] = folder
    path = Path(to).expanduser().resolve() / CONFIG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("# Written by `vidreal download`: the models this config needs, in local folders.\n"
                   + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    tmp.replace(path)
    return path

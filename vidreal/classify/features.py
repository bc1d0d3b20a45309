"""Backbone feature cache: with a frozen backbone and no augmentation every epoch would compute the
same features again, so they are computed once (in memory, optionally saved as safetensors) and the
head trains on them.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from vidreal.progress import bar as tqdm  # tqdm on a terminal, plain lines in a log, off under -q

from vidreal.classify.data import ImageDataset, Samples

log = logging.getLogger(__name__)


def extract_features(
    backbone: torch.nn.Module,
    dataset: ImageDataset,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "features",
) -> torch.Tensor:
    """Run the backbone over the dataset in its order: float32 (N, F) features on the CPU.

    The backbone is put in eval mode and run without gradients; the global RNG is left untouched.
    """
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
        generator=torch.Generator(),  # keeps the global RNG (dropout) stream untouched
    )
    backbone.eval()
    chunks = []
    with torch.no_grad():
        for images, _ in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
            chunks.append(backbone(images.to(device)).float().cpu())
    return torch.cat(chunks)


def fingerprint(samples: Samples, backbone_info: dict[str, Any], transform: Any) -> str:
    """A key that changes when the images, labels, backbone or preprocessing change."""
    h = hashlib.sha256()
    h.update(json.dumps(backbone_info, sort_keys=True, default=str).encode())
    h.update(repr(transform).encode())
    for path, label in zip(samples.paths, samples.labels):
        st = path.stat()
        h.update(f"{path}\t{label}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cached_features(
    backbone: torch.nn.Module,
    dataset: ImageDataset,
    key: str,
    cache_file: Path | None = None,
    **extract_kwargs,
) -> torch.Tensor:
    """Features float32 (N, F) for the dataset, read from ``cache_file`` when it holds ``key``.

    cache_file: a .safetensors file to reuse and (re)write; None keeps the features in memory only.
    """
    if cache_file is not None and cache_file.is_file():
        try:
            with safe_open(str(cache_file), "pt") as f:
                if (f.metadata() or {}).get("key") == key:
                    feats = f.get_tensor("features")
                    if feats.shape[0] == len(dataset):
                        log.info("reusing cached features %s", cache_file)
                        return feats
        except Exception as exc:  # a damaged cache is recomputed, never trusted
            log.warning("ignoring unreadable feature cache %s: %s", cache_file, exc)
    feats = extract_features(backbone, dataset, **extract_kwargs)
    if cache_file is not None:
        from vidreal.io import atomic_output

        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(cache_file) as tmp:
            save_file({"features": feats.contiguous()}, str(tmp), metadata={"key": key})
    return feats

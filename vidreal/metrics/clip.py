"""CLIP frame consistency and prompt alignment (torch + transformers, loaded only here).

- Frame consistency: cosine similarity of consecutive frames' CLIP image embeddings, mean over
  pairs (1 = every frame embeds alike).
- Prompt alignment: cosine similarity of each frame's image embedding with the prompt's text
  embedding, mean over frames (raw cosine; CLIPScore would be ``100 * max(cos, 0)``).

Both are reported for the output and for the source (the reference). The model is a hub id or a
folder holding a ``CLIPModel`` with its image processor (and tokenizer, for a prompt). The local
cache is read when the hub is offline or unreachable (checked up front, :func:`check_clip`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from vidreal.progress import bar as tqdm  # tqdm on a terminal, plain lines in a log, off under -q

from vidreal.errors import ModelError
from vidreal.hub import HubNeed, check_hub, hub_error, transformers_need
from vidreal.runtime import first_line, resolve_device

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
SUMMARY_KEYS = (
    "clip_consistency", "clip_consistency_source", "clip_prompt_alignment", "clip_prompt_alignment_source",
)


def _looks_like_path(model: str) -> bool:
    """A folder rather than a hub id ("name" or "namespace/name")."""
    return (
        model.startswith(("/", ".", "~")) or "\\" in model or model.count("/") > 1 or Path(model).exists()
    )


def clip_need(model: str) -> HubNeed:
    """The hub repo of CLIP model ``model`` and the files it is loaded from."""
    return transformers_need(model, "--clip-model PATH (a saved CLIP folder) or --no-clip")


def check_clip(model: str) -> bool:
    """Check up front that CLIP ``model`` can be loaded: a folder, or a hub id that is cached or
    downloadable (ModelError naming it otherwise, within seconds). True: read it from the cache only."""
    model = str(model)
    if _looks_like_path(model):
        if not Path(model).expanduser().is_dir():
            raise ModelError("CLIP model folder not found (--clip-model: a hub id or a saved CLIP folder)", path=model)
        return True
    return check_hub([clip_need(model)])


def load_clip(model: str = DEFAULT_CLIP_MODEL, device=None, with_tokenizer: bool = True):
    """Load ``(CLIPModel, CLIPImageProcessor, tokenizer or None)`` from a hub id or folder.

    The model is put in eval mode on ``device`` (None: auto, cuda > mps > cpu).
    Raises ModelError with a one-line reason when it cannot be loaded.
    """
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    from vidreal.progress import sync_libraries

    sync_libraries()  # transformers' loading bar follows vidreal's settings
    device = resolve_device(device)
    model = str(model)
    local_only = check_clip(model)
    model = str(Path(model).expanduser()) if _looks_like_path(model) else model
    try:
        clip = CLIPModel.from_pretrained(model, local_files_only=local_only)
        processor = CLIPImageProcessor.from_pretrained(model, local_files_only=local_only)
        tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=local_only) if with_tokenizer else None
    except (OSError, ValueError) as exc:  # not found / not a CLIP folder
        if _looks_like_path(model):
            raise ModelError(f"cannot load CLIP model folder: {first_line(exc)}; pass a saved CLIP folder or skip "
                             "CLIP (--no-clip)", path=model) from exc
        raise hub_error(clip_need(model), exc) from exc
    return clip.eval().to(device), processor, tokenizer


def _features(output):
    """transformers 4.x returns the projected tensor, 5.x an output object holding it."""
    import torch

    return output if isinstance(output, torch.Tensor) else output.pooler_output


def image_embeddings(frames: np.ndarray, clip, processor, batch_size: int = 16, bar=None) -> np.ndarray:
    """L2-normalised CLIP image embeddings of uint8 ``(T, H, W, 3)`` frames: float32 ``(T, D)``."""
    import torch

    device = next(clip.parameters()).device
    chunks = []
    for start in range(0, len(frames), batch_size):
        batch = list(frames[start:start + batch_size])
        pixels = processor(images=batch, return_tensors="pt")["pixel_values"].to(device)
        with torch.inference_mode():
            emb = _features(clip.get_image_features(pixel_values=pixels)).float()
        chunks.append(torch.nn.functional.normalize(emb, dim=-1).cpu().numpy())
        if bar is not None:
            bar.update(len(batch))
    return np.concatenate(chunks)


def text_embedding(prompt: str, clip, tokenizer) -> np.ndarray:
    """L2-normalised CLIP text embedding of ``prompt``: float32 ``(D,)``."""
    import torch

    device = next(clip.parameters()).device
    tokens = tokenizer([prompt], padding=True, truncation=True, return_tensors="pt").to(device)
    with torch.inference_mode():
        emb = _features(clip.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]))
    return torch.nn.functional.normalize(emb.float(), dim=-1)[0].cpu().numpy()


def clip_metrics(
    source: np.ndarray,
    output: np.ndarray,
    model: str = DEFAULT_CLIP_MODEL,
    prompt: str | None = None,
    device=None,
    batch_size: int = 16,
    progress: bool = False,
) -> dict:
    """CLIP frame consistency (and prompt alignment when ``prompt`` is given) of both clips.

    source, output: uint8 ``(T, H, W, 3)`` RGB. Returns ``{key: float | None for key in
    SUMMARY_KEYS, "per_frame": {key: list of T}}``; consistency values sit at the pair's first
    frame (last entry None); None where undefined (one frame, no prompt).
    Raises ModelError when the model cannot be loaded.
    """
    clip, processor, tokenizer = load_clip(model, device=device, with_tokenizer=prompt is not None)
    text = text_embedding(prompt, clip, tokenizer) if prompt is not None else None
    n = len(source)
    result, per = {}, {}
    with tqdm(total=2 * n, desc="clip", unit="frame", disable=not progress) as bar:
        for suffix, clip_frames in (("", output), ("_source", source)):
            emb = image_embeddings(clip_frames, clip, processor, batch_size=batch_size, bar=bar)
            pairs = [float(v) for v in np.sum(emb[:-1] * emb[1:], axis=1)] + [None]
            per["clip_consistency" + suffix] = pairs
            result["clip_consistency" + suffix] = float(np.mean(pairs[:-1])) if n > 1 else None
            if text is not None:
                align = [float(v) for v in emb @ text]
                per["clip_prompt_alignment" + suffix] = align
                result["clip_prompt_alignment" + suffix] = float(np.mean(align))
            else:
                result["clip_prompt_alignment" + suffix] = None
    result["per_frame"] = per
    return result

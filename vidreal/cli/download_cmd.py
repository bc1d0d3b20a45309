"""``vidreal download``: fetch every model a config (or the defaults) needs, for offline runs."""
from __future__ import annotations

import click

from vidreal.cli.common import option, progress_option, status


def _size(n: int | None) -> str:
    if n is None:
        return "size unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _flags(fetches, paths) -> list[str]:
    """The flags that point each verb at the downloaded folders."""
    by_key = {f.key: str(paths[f.repo]) for f in fetches if f.repo in paths and f.key}
    by_purpose = {f.purpose: str(paths[f.repo]) for f in fetches if f.repo in paths}
    translate = [f"--model {by_key['model']}"] if "model" in by_key else []
    translate += [f"--model-config {by_key['model_config']}"] if "model_config" in by_key else []
    translate += [f"--controlnet {k.split('.', 1)[1]}={v}" for k, v in by_key.items() if k.startswith("controlnets.")]
    translate += [f"--lora {v}" for k, v in by_key.items() if k.startswith("lora.")]
    translate += [f"--vae {by_key['vae']}"] if "vae" in by_key else []
    lines = [f"  translate, batch: {' '.join(translate)}"] if translate else []
    if "CLIP (metrics)" in by_purpose:
        lines.append(f"  metrics: --clip-model {by_purpose['CLIP (metrics)']}")
    if "BLIP (caption)" in by_purpose:
        lines.append(f"  caption: --model {by_purpose['BLIP (caption)']}")
    weights = [f for f in fetches if f.key == "classify.weights" and f.repo in paths]
    if weights:
        lines.append(f"  classify train: --weights {paths[weights[0].repo]}/{weights[0].need.filename}")
    return lines


@click.command("download", epilog="""\b
Examples:
  vidreal download --dry-run                          # what the defaults need, and its size
  vidreal download --config configs/rocog.yaml        # into the Hugging Face cache
  vidreal download --to weights                       # one folder per model + weights/vidreal.yaml
""")
@option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML config whose models to fetch (its classify: section sets the backbone).",
              show_default="the defaults")
@option("--to", "to", type=click.Path(file_okay=False), default=None,
              help="Put each model in its own folder under DIR and write DIR/vidreal.yaml pointing at them.",
              show_default="the Hugging Face cache")
@click.option("--dry-run", is_flag=True, help="List what would be fetched and its size; fetch nothing.")
@progress_option()
def download(config_file, to, dry_run, progress):
    """Fetch every model a config needs: Stable Diffusion 1.5 (safetensors, no safety checker), its
    ControlNets, LoRAs and VAE, CLIP for metrics, BLIP for captions and the classifier's backbone.

    Hub downloads resume where they stopped. Local paths in the config are left as they are.
    """
    from vidreal.cli.common import usage
    from vidreal.download import check_online, download as fetch_all, local_config, plan_downloads
    from vidreal.hub import hub_cache_dir

    with usage():
        fetches = plan_downloads(config_file)
    check_online()
    if dry_run:
        listing = fetch_all(fetches, to=to, dry_run=True)
        total = pending = 0
        for fetch in fetches:
            files = listing[fetch.repo]
            size = sum(s or 0 for _, s, _ in files)
            todo = sum(s or 0 for _, s, cached in files if not cached)
            unknown = any(s is None for _, s, _ in files)
            total, pending = total + size, pending + todo
            click.echo(f"{fetch.repo}  ({fetch.purpose}): {len(files)} files, "
                       f"{'size unknown' if unknown else _size(size)}, {_size(todo)} to fetch")
        click.echo(f"total {_size(total)}, {_size(pending)} to fetch into {to or hub_cache_dir()}")
        return
    paths = fetch_all(fetches, to=to)
    if to is None:
        status(f"fetched {len(paths)} models into the Hugging Face cache ({hub_cache_dir()}); vidreal finds them "
               "there by their hub ids, offline too")
        return
    config = local_config(config_file, fetches, paths, to)
    status(f"fetched {len(paths)} models into {to}; wrote {config}: pass --config {config}, or these flags:")
    for line in _flags(fetches, paths):
        status(line)

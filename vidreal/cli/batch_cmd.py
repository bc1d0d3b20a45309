"""``vidreal batch IN_DIR OUT_DIR``: translate a dataset folder or split list, resumably."""
from __future__ import annotations

import sys

import click

from vidreal.cli.common import option, progress_option
from vidreal.cli.options import translate_options


@click.command("batch", epilog="""\b
Examples:
  vidreal batch syn/ground out/ground --config configs/rocog.yaml
  vidreal batch RoCoG out --list RoCoG/annotations/syn_ground_train.txt
  vidreal batch visda/train out/train --config configs/visda.yaml --pattern '*.png'
  vidreal batch syn out --executor ray --ray-address auto --gpus-per-worker 1
""")
@click.argument("in_dir", type=click.Path(file_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@translate_options
@click.option("--pattern", help="Glob on the relative path or any trailing part of it, e.g. '*.mp4', 'Halt/*', 'air/*'.")
@option("--extensions", help="Comma-separated file types to take, e.g. .mp4,.png.", show_default="all supported")
@click.option("--list", "list_file", type=click.Path(dir_okay=False),
              help="Split list ('relative/path label' lines): translate exactly these; the matching list is written to OUT_DIR.")
@option("--root", type=click.Path(file_okay=False), help="Folder the --list paths are relative to.", show_default="IN_DIR")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Run here, or on a Ray cluster (pip install 'vidreal[ray]').")
@option("--ray-address", help="Ray cluster address ('auto' = the running cluster).", show_default="it, or a new local one")
@option("--workers", type=click.IntRange(min=1), help="Ray actors, each holding one model.", show_default="one per GPU")
@option("--gpus-per-worker", type=click.FloatRange(min=0), help="GPUs per Ray actor.", show_default="1 when the cluster has GPUs, else 0")
@click.option("--overwrite", is_flag=True, help="Redo every item, even those the manifest marks done.")
@option("--overlap/--no-overlap", default=None, show_default="when the model runs on a GPU",
        help="Prepare the next item while translating the current one.")
@click.option("--metrics", is_flag=True,
              help="Score every item (warp error, edge F1, pose PCK, ...) and print the means; per item in manifest.jsonl.")
@progress_option(help="Show progress bars: items and frames of the dataset, and the current item's denoising steps.")
def batch(in_dir, out_dir, config, pattern, extensions, list_file, root, executor, ray_address, workers,
          gpus_per_worker, overwrite, overlap, metrics, progress):
    """Translate every video and image under IN_DIR into OUT_DIR, mirroring the folder layout.

    OUT_DIR/manifest.jsonl records each item; rerunning skips items already done with the same
    config, so an interrupted batch resumes. A bad item is recorded and the batch goes on; the
    exit code is 1 when any item failed.
    """
    from vidreal.batch import run_batch

    result = run_batch(in_dir, out_dir, config, pattern=pattern, extensions=extensions, list_file=list_file,
                       root=root, executor=executor, workers=workers, gpus_per_worker=gpus_per_worker,
                       ray_address=ray_address, overwrite=overwrite, overlap=overlap, progress=progress,
                       metrics=metrics)
    click.echo(result.table())
    if result.list_file is not None:
        click.echo(f"list: {result.list_file}")
    if not result.ok:
        sys.exit(1)


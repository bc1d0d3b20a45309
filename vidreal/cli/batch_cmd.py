"""``vidreal batch IN_DIR OUT_DIR``: translate a dataset folder or split list, resumably."""
from __future__ import annotations

import sys

import click

from vidreal.cli.common import option, progress_option, usage
from vidreal.cli.options import FiniteFloat, translate_options


@click.command("batch", epilog="""\b
Examples:
  vidreal batch syn/ground out/ground --config configs/rocog.yaml
  vidreal batch RoCoG out --list RoCoG/annotations/syn_ground_train.txt
  vidreal batch visda/train out/train --config configs/visda.yaml --pattern '*.png'
  vidreal batch syn out --executor ray --ray-address auto --gpus-per-worker 1
  vidreal batch syn out --min-edge-f1 0.3 --min-pose-pck 0.5 --sheet out/sheet.png
  vidreal batch syn out --config configs/rocog.yaml --every 5 --max-frames 16 --estimate
  vidreal batch syn out --fps 30 --no-audio --pix-fmt yuv444p    # every clip: same frames at 30 fps, no sound
""")
@click.argument("in_dir", type=click.Path(file_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@translate_options
@click.option("--pattern", help="Glob on the relative path or any trailing part of it, e.g. '*.mp4', 'Halt/*', 'air/*'.")
@option("--extensions", help="Comma-separated file types to take, e.g. .mp4,.png.", show_default="all supported")
@click.option("--list", "list_file", type=click.Path(dir_okay=False),
              help="Split list ('relative/path label' lines): translate exactly these; the matching list is written to OUT_DIR.")
@option("--root", type=click.Path(file_okay=False), help="Folder the --list paths are relative to.", show_default="IN_DIR")
@option("--executor", type=click.Choice(["local", "ray"]),
        help="Run here, or on a Ray cluster (pip install 'vidreal[ray]').", show_default="local")
@option("--ray-address", help="Ray cluster address ('auto' = the running cluster).", show_default="it, or a new local one")
@option("--workers", type=click.IntRange(min=1), help="Ray actors, each holding one model.", show_default="one per GPU")
@option("--gpus-per-worker", type=FiniteFloat(min=0), help="GPUs per Ray actor.", show_default="1 when the cluster has GPUs, else 0")
@click.option("--overwrite", is_flag=True, default=None, help="Redo every item, even those the manifest marks done.")
@option("--overlap/--no-overlap", default=None, show_default="when the model runs on a GPU",
        help="Prepare the next item while translating the current one.")
@click.option("--metrics", is_flag=True, default=None,
              help="Score every item (warp error, edge F1, pose PCK, ...) and print the means; per item in manifest.jsonl.")
@click.option("--min-edge-f1", type=FiniteFloat(), default=None,
              help="Gate: reject items whose edge F1 against the source is below this (0-1); outputs are kept, left out of the list.")
@click.option("--min-pose-pck", type=FiniteFloat(), default=None,
              help="Gate: reject items whose pose PCK against the source is below this (0-1).")
@click.option("--keypoints", is_flag=True, default=None, help="Write each output's source pose keypoints beside it (OUTPUT.keypoints.json).")
@click.option("--sheet", type=click.Path(dir_okay=False), default=None,
              help="Write a contact sheet (.png: source | conditions | output of 8 items) and report.html beside it.")
@click.option("--estimate", is_flag=True,
              help="Print the items and frames to translate and a projected time from a short timed warm-up; write nothing.")
@progress_option(help="Show progress bars: items, frames/s and ETA of the dataset, and the current item's denoising steps.")
def batch(in_dir, out_dir, config, config_path, progress, estimate, **options):
    """Translate every video and image under IN_DIR into OUT_DIR, mirroring the folder layout.

    OUT_DIR/manifest.jsonl records each item; rerunning skips items already done with the same
    config, so an interrupted batch resumes. A bad item is recorded and the batch goes on; the
    exit code is 1 when any item failed. The --config file's `batch:` section may set the options
    below (keys with underscores, e.g. list_file, gpus_per_worker); flags override it.
    --start/--end/--every/--max-frames select the frames of every clip (part of the config hash:
    changing them redoes the items). --fps, --no-audio and --pix-fmt apply to every clip (in the hash too).
    Items and outputs are files: a folder of frames in IN_DIR is read as separate images.
    --estimate says how long the batch would take.
    """
    from vidreal.batch import check_settings, run_batch
    from vidreal.config import BATCH_KEYS, merge_settings, read_section

    with usage():
        settings = merge_settings(read_section(config_path, "batch", BATCH_KEYS), **options)
        check_settings(in_dir, out_dir, config, **settings)
    if estimate:
        from vidreal.batch.estimate import estimate_batch

        estimated = estimate_batch(in_dir, out_dir, config, progress=progress, **settings)
        click.echo(estimated.table())
        if estimated.failing:  # as the batch itself would exit
            sys.exit(1)
        return
    result = run_batch(in_dir, out_dir, config, progress=progress, **settings)
    click.echo(result.table())
    if result.sheet is not None:
        click.echo(f"sheet: {result.sheet} (report: {result.sheet.with_name('report.html')})")
    if result.list_file is not None:
        click.echo(f"list: {result.list_file}")
    if not result.ok:
        sys.exit(1)


"""``vidreal classify``: train the report's Swin classifier, evaluate it per class, compare runs."""
from __future__ import annotations

import click

from vidreal.cli.common import option, progress_option, status

SRC_HELP = "a folder of <class>/ image folders, or a 'relative/path label' list file (VisDA image_list.txt)"


EXAMPLES = """\b
Examples:
  vidreal classify train --train out/sd_cn --val visda/validation/image_list.txt -o runs/sd_cn \\
      --config configs/visda/sd_cn.yaml
  vidreal classify eval runs/sd_cn --data visda/test/image_list.txt
  vidreal classify compare runs/no_da runs/sd_cn runs/sd_cn_ti_db
"""


@click.group("classify", epilog=EXAMPLES)
def classify():
    """Train and evaluate an image classifier (frozen timm backbone + the report's head)."""


@classify.command("train", epilog=EXAMPLES)
@click.option("--train", "train_data", required=True, type=click.Path(exists=True), help=f"Training set: {SRC_HELP}.")
@click.option("--val", "val_data", required=True, type=click.Path(exists=True), help="Validation set (same classes).")
@click.option("--test", "test_data", type=click.Path(exists=True), default=None, help="Optional test set, evaluated after training.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Run folder to write.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML file; its 'classify:' section (or the whole file) sets training options.")
@option("--root", type=click.Path(file_okay=False), default=None, help="Folder that list files' paths start from.", show_default="the list's folder")
@option("--backbone", default=None, help="timm model name.", show_default="swin_base_patch4_window7_224")
@option("--pretrained/--no-pretrained", default=None, help="Load ImageNet weights for the backbone.", show_default="pretrained")
@click.option("--weights", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Local backbone weights (.safetensors/.pth) instead of the hub.")
@option("--size", "img_size", aliases=("--img-size",), type=click.IntRange(min=16), default=None,
        show_default="the backbone's own", help="Backbone input size in pixels.")
@option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs.", show_default="7")
@option("--batch-size", type=click.IntRange(min=1), default=None, help="Training batch size.", show_default="128")
@option("--eval-batch-size", type=click.IntRange(min=1), default=None, help="Validation/test batch size.", show_default="32")
@option("--lr", type=float, default=None, help="Head learning rate.", show_default="1e-3")
@click.option("--unfreeze", is_flag=True, default=None, help="Also train the backbone (with --backbone-lr).")
@option("--backbone-lr", type=float, default=None, help="Backbone learning rate with --unfreeze.", show_default="1e-5")
@click.option("--augment", is_flag=True, default=None, help="Random crops/flips while training (turns the feature cache off).")
@option("--cache/--no-cache", default=None, help="Train the head on features computed once.", show_default="cache")
@click.option("--save-features", is_flag=True, default=None, help="Keep the cached features in RUN_DIR/features/ for reruns.")
@option("--on-bad-image", type=click.Choice(["skip", "fail"]), default=None, help="Unreadable images: leave out and count, or stop.", show_default="skip")
@option("--decode-workers", "num_workers", aliases=("--workers",), type=click.IntRange(min=0), default=None,
        show_default="0", help="Image decoding worker processes.")
@option("--device", default=None, help="cpu, cuda, cuda:1 ....", show_default="auto")
@option("--seed", type=int, default=None, help="Seed for head init, data order and dropout.", show_default="0")
@progress_option()
def train_cmd(train_data, val_data, test_data, output, config_file, progress, **options):
    """Train the classifier on --train, validate each epoch on --val; write RUN_DIR.

    RUN_DIR gets head.safetensors, classifier.json (backbone, classes), metrics.json (per-epoch
    losses and accuracies) and config.yaml (the resolved settings).
    """
    from vidreal.classify.evaluate import format_table
    from vidreal.classify.train import load_train_config, train

    cfg = load_train_config(config_file, **options)
    result = train(train_data, val_data, output, test_data=test_data, config=cfg, progress=progress)
    last = result.metrics["epochs"][-1]
    click.echo(f"trained {len(result.metrics['epochs'])} epochs in {result.seconds:.1f} s: "
               f"train loss {last['train_loss']:.4f}, val acc {last['val_acc']:.2f}%, "
               f"val mean class acc {last['val_mean_class_acc']:.2f}%")
    if "test" in result.metrics:
        click.echo(format_table({result.run_dir.resolve().name: result.metrics["test"]["per_class"]}, result.classes))
    status(f"run: {result.run_dir}")


@classify.command("eval", epilog=EXAMPLES)
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--data", required=True, type=click.Path(exists=True), help=f"Labelled images: {SRC_HELP}.")
@click.option("--root", type=click.Path(file_okay=False), default=None, help="Folder that list files' paths start from.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--on-bad-image", type=click.Choice(["skip", "fail"]), default="skip", show_default=True)
@option("--decode-workers", "num_workers", aliases=("--workers",), type=click.IntRange(min=0), default=0,
        show_default=True, help="Image decoding worker processes.")
@option("--device", default=None, help="cpu, cuda, ....", show_default="auto")
@click.option("--plot/--no-plot", default=True, show_default=True, help="Write RUN_DIR/confusion.png.")
@progress_option()
def eval_cmd(run_dir, data, **options):
    """Per-class accuracy (%) of RUN_DIR's classifier on --data, in the report's table format.

    Avg is the mean of the per-class accuracies. Writes RUN_DIR/eval.json and RUN_DIR/confusion.png.
    """
    from vidreal.classify.evaluate import evaluate

    result = evaluate(run_dir, data, **options)
    click.echo(result.table)
    click.echo(f"overall accuracy {result.summary['accuracy']:.2f}% on {result.summary['n_images']} images")
    status(f"wrote {result.json_path}" + (f", {result.plot_path}" if result.plot_path else ""))


@classify.command("compare", epilog=EXAMPLES)
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
def compare_cmd(run_dirs):
    """Print several evaluated runs as one table like the report's Table 4-I (row = run folder name)."""
    from vidreal.classify.evaluate import compare

    click.echo(compare(run_dirs))

"""``vidreal classify``: train the report's Swin classifier (images or videos), evaluate it, compare runs."""
from __future__ import annotations

import click

from vidreal.cli.common import option, progress_option, status, usage
from vidreal.cli.options import FiniteFloat

SRC_HELP = ("a folder of <class>/ image or video folders, or a 'relative/path label' list file (VisDA "
            "image_list.txt, RoCoG annotations/*.txt); repeat to combine several")


def _one_or_many(paths: tuple[str, ...]):
    """A repeated path option: one path as it is, several as a list (combined in order)."""
    if not paths:
        return None
    return paths[0] if len(paths) == 1 else list(paths)


EXAMPLES = """\b
Examples:
  vidreal classify train --train out/sd_cn --val visda/validation/image_list.txt -o runs/sd_cn \\
      --config configs/visda/sd_cn.yaml
  vidreal classify eval runs/sd_cn --data visda/test/image_list.txt
  vidreal classify compare runs/no_da runs/sd_cn runs/sd_cn_ti_db
  vidreal classify train --train out/rocog/syn_ground_train.txt --val rocog/annotations/real_ground_val.txt \\
      -o runs/rocog_translated --config configs/rocog/ground_translated.yaml
  vidreal classify eval runs/rocog_translated --data rocog/annotations/real_air_test.txt --name real_air
  vidreal classify compare runs/rocog_syn runs/rocog_translated --by domain
"""


@click.group("classify", epilog=EXAMPLES)
def classify():
    """Train and evaluate an image or video classifier (frozen backbone + the report's head)."""


@classify.command("train", epilog=EXAMPLES)
@click.option("--train", "train_data", required=True, multiple=True, type=click.Path(exists=True), help=f"Training set: {SRC_HELP}.")
@click.option("--val", "val_data", required=True, multiple=True, type=click.Path(exists=True), help="Validation set (same classes).")
@click.option("--test", "test_data", multiple=True, type=click.Path(exists=True), help="Optional test set, evaluated after training.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Run folder to write.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML file; its 'classify:' section (or the whole file) sets training options.")
@option("--root", type=click.Path(file_okay=False), default=None, help="Folder that list files' paths start from.", show_default="the list's folder")
@option("--backbone", default=None, show_default="swin_base_patch4_window7_224",
        help="timm model name, or for videos a torchvision video model: r3d_18, r2plus1d_18, mvit_v2_s, swin3d_t.")
@option("--pretrained/--no-pretrained", default=None, help="Load ImageNet (Kinetics for video models) weights for the backbone.", show_default="pretrained")
@click.option("--weights", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Local backbone weights (.safetensors/.pth) instead of the hub.")
@option("--size", "img_size", aliases=("--img-size",), type=click.IntRange(min=16), default=None,
        show_default="the backbone's own", help="Backbone input size in pixels.")
@option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs.", show_default="7")
@option("--batch-size", type=click.IntRange(min=1), default=None, help="Training batch size.", show_default="128")
@option("--eval-batch-size", type=click.IntRange(min=1), default=None, help="Validation/test batch size.", show_default="32")
@option("--lr", type=FiniteFloat(), default=None, help="Head learning rate.", show_default="1e-3")
@click.option("--unfreeze", is_flag=True, default=None, help="Also train the backbone (with --backbone-lr).")
@option("--backbone-lr", type=FiniteFloat(), default=None, help="Backbone learning rate with --unfreeze.", show_default="1e-5")
@click.option("--augment", is_flag=True, default=None,
              help="Random crops/flips (images) or random clip starts (videos) while training; turns the feature cache off.")
@option("--clip-len", type=click.IntRange(min=1), default=None, help="Videos: frames per clip.", show_default="16")
@option("--frame-interval", type=click.IntRange(min=1), default=None, help="Videos: source frames between a clip's frames.", show_default="5")
@option("--eval-clips", type=click.IntRange(min=1), default=None,
        help="Videos: clips spread over each val/test video, scores averaged.", show_default="5")
@option("--temporal-head", type=click.Choice(["mean", "transformer", "conv"]), default=None, show_default="mean",
        help="Videos with an image backbone: how frame features are pooled before the report's head.")
@option("--cache/--no-cache", default=None, help="Train the head on features computed once.", show_default="cache")
@click.option("--save-features", is_flag=True, default=None, help="Keep the cached features in RUN_DIR/features/ for reruns.")
@option("--on-bad-image", type=click.Choice(["skip", "fail"]), default=None, show_default="skip",
        help="Unreadable images or videos: leave out (one warning line each) and count, or stop.")
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
    from vidreal.classify.run import load_train_config
    from vidreal.classify.scores import format_table
    from vidreal.classify.train import train

    with usage():
        cfg = load_train_config(config_file, **options)
    result = train(_one_or_many(train_data), _one_or_many(val_data), output, test_data=_one_or_many(test_data),
                   config=cfg, progress=progress)
    last = result.metrics["epochs"][-1]
    click.echo(f"trained {len(result.metrics['epochs'])} epochs in {result.seconds:.1f} s: "
               f"train loss {last['train_loss']:.4f}, val acc {last['val_acc']:.2f}%, "
               f"val mean class acc {last['val_mean_class_acc']:.2f}%")
    if "test" in result.metrics:
        click.echo(format_table({result.run_dir.resolve().name: result.metrics["test"]["per_class"]}, result.classes))
    status(f"run: {result.run_dir}")


@classify.command("eval", epilog=EXAMPLES)
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--data", required=True, multiple=True, type=click.Path(exists=True), help=f"Labelled images or videos: {SRC_HELP}.")
@click.option("--name", default=None, help="Test domain name, a column of `compare --by domain` [the list's stem or folder name].")
@click.option("--root", type=click.Path(file_okay=False), default=None, help="Folder that list files' paths start from.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--on-bad-image", type=click.Choice(["skip", "fail"]), default="skip", show_default=True,
              help="Unreadable images or videos: leave out (one warning line each) and count, or stop.")
@option("--decode-workers", "num_workers", aliases=("--workers",), type=click.IntRange(min=0), default=0,
        show_default=True, help="Image decoding worker processes.")
@option("--device", default=None, help="cpu, cuda, ....", show_default="auto")
@click.option("--plot/--no-plot", default=True, show_default=True, help="Write RUN_DIR/confusion.png.")
@progress_option()
def eval_cmd(run_dir, data, **options):
    """Per-class accuracy (%) of RUN_DIR's classifier on --data, in the report's table format.

    Avg is the mean of the per-class accuracies. A video scores the mean of its clips' scores.
    Writes RUN_DIR/evals/NAME.json and NAME.png, and again RUN_DIR/eval.json and confusion.png.
    """
    from vidreal.classify.evaluate import evaluate

    result = evaluate(run_dir, _one_or_many(data), **options)
    click.echo(result.table)
    kind = "videos" if "clips_per_video" in result.summary else "images"
    click.echo(f"top-1 accuracy {result.summary['accuracy']:.2f}%, mean class accuracy {result.summary['avg']:.2f}% "
               f"on {result.summary['n_images']} {kind} ({result.summary['name']})")
    status(f"wrote {result.json_path}" + (f", {result.plot_path}" if result.plot_path else ""))


@classify.command("compare", epilog=EXAMPLES)
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--by", type=click.Choice(["class", "domain"]), default="class", show_default=True,
              help="class: per-class accuracies (Table 4-I); domain: columns = test domains (RoCoG-v2 paper).")
@click.option("--metric", type=click.Choice(["top1", "mean-class"]), default="top1", show_default=True,
              help="With --by domain: the accuracy in each cell.")
@click.option("--domain", "domains", multiple=True, help="With --by domain: the columns, in order [every evaluated name].")
def compare_cmd(run_dirs, by, metric, domains):
    """Print several evaluated runs as one table (row = run folder name).

    --by class: like the report's Table 4-I. --by domain: like the RoCoG-v2 paper's tables, rows =
    training data, columns = test domains (the --name of each `classify eval`).
    """
    from vidreal.classify.evaluate import compare

    if (metric != "top1" or domains) and by != "domain":
        raise click.UsageError("--metric and --domain go with --by domain")
    click.echo(compare(run_dirs, by=by, metric=metric, domains=domains or None))

"""``vidreal sheet OUT_DIR``: a contact sheet and report.html of a finished batch."""
from __future__ import annotations

import click

from vidreal.cli.common import option


@click.command("sheet", epilog="""\b
Examples:
  vidreal sheet out/ground                       # out/ground/sheet.png + out/ground/report.html
  vidreal sheet out/ground -o worst.png --worst edge_f1 -n 12
""")
@click.argument("out_dir", type=click.Path(file_okay=False))
@option("-o", "--output", type=click.Path(dir_okay=False), default=None, show_default="OUT_DIR/sheet.png",
        help="The sheet (.png); report.html is written beside it.")
@click.option("-n", "n", type=click.IntRange(min=1), default=8, show_default=True, help="Items on the sheet.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random choice of items.")
@click.option("--worst", type=click.Choice(["edge_f1", "pose_pck"]), default=None,
              help="Show the N items with the lowest score instead of a random choice.")
@option("--root", type=click.Path(file_okay=False), default=None, show_default="the one the batch recorded",
        help="Folder of the batch's inputs.")
@click.option("--report/--no-report", default=True, show_default=True, help="Also write report.html.")
def sheet(out_dir, output, n, seed, worst, root, report):
    """Draw a contact sheet of OUT_DIR's translated items: source | conditions | output, with
    name and scores; and report.html (sheet, score histograms, rejected items) for a browser."""
    from vidreal.batch.sheet import write_report

    path = write_report(out_dir, output, root=root, n=n, seed=seed, worst=worst, report=report)
    click.echo(f"sheet: {path}")
    if report:
        click.echo(f"report: {path.with_name('report.html')}")

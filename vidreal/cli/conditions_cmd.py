"""``vidreal conditions``: write the per-frame condition maps (canny edges, pose) of a video or image."""
from __future__ import annotations

import logging

import click

from vidreal.cli.common import progress_option, status
from vidreal.cli.options import canny_options
from vidreal.conditions import available_kinds, extract_file

log = logging.getLogger("vidreal")


@click.command("conditions", epilog="""\b
Examples:
  vidreal conditions samples/humanoid_walk_ground.mp4 -o pose.mp4 --kind pose
  vidreal conditions clip.mp4 -o maps.mp4 --kind canny --kind pose --canny-low 50
""")
@click.argument("input", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output video or image. With several kinds, the kind goes before the extension "
                   "(out.mp4 -> out.canny.mp4, out.pose.mp4).")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(available_kinds()),
              help="Condition kind; repeat for several. Default: canny and pose.")
@canny_options
@click.option("--chunk-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Frames decoded and processed at a time (memory, not results).")
@progress_option()
def conditions(input, output, kinds, canny_low, canny_high, chunk_size, progress):
    """Extract condition maps from INPUT and write them to OUTPUT, same size, fps and frame count."""
    canny = {}
    if canny_low is not None:
        canny["low_threshold"] = canny_low
    if canny_high is not None:
        canny["high_threshold"] = canny_high
    options = {"canny": canny} if canny else None
    result = extract_file(input, output, kinds=kinds or ("canny", "pose"), options=options,
                          chunk_size=chunk_size, progress=progress)
    for kind, path in result.paths.items():
        status(f"{kind}: {path}")
    for report in result.reports.values():
        log.warning(report)

"""``vidreal conditions``: write the per-frame condition maps (canny edges, pose) of a video or image."""
from __future__ import annotations

import logging

import click

from vidreal import selection
from vidreal.cli.common import option, progress_option, status, usage
from vidreal.cli.options import canny_options, condition_options, selection_options
from vidreal.conditions import available_kinds, check_options, extract_file

log = logging.getLogger(__name__)


@click.command("conditions", epilog="""\b
Examples:
  vidreal conditions samples/humanoid_walk_ground.mp4 -o pose.mp4 --kind pose
  vidreal conditions clip.mp4 -o maps.mp4 --kind canny --kind pose --condition canny.low_threshold=50
  vidreal conditions street.mp4 -o pose.mp4 --kind pose --pose-mode multi --keypoints pose.json
  vidreal conditions clip.mp4 -o edges.mp4 --kind canny --start 2.5s --every 5 --max-frames 16
""")
@click.argument("input", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output video or image. With several kinds, the kind goes before the extension "
                   "(out.mp4 -> out.canny.mp4, out.pose.mp4).")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(available_kinds()),
              help="Condition kind; repeat for several. Default: canny and pose.")
@click.option("--condition", "condition", multiple=True, metavar="KIND.OPTION=VALUE",
              help="A detector option (repeatable), e.g. canny.low_threshold=50, openpose.model=./annotators.")
@canny_options
@option("--pose-mode", type=click.Choice(["auto", "single", "multi"]), default=None, show_default="auto",
              help="Pose: one large person (single), everyone top-down (multi), or auto: single "
                   "until the person detector sees two or more people or a small one.")
@option("--max-people", type=int, default=None, help="Pose: at most this many people per clip.", show_default="4")
@option("--pose-detector", default=None, metavar="NAME|FILE",
              show_default="blazepose",
              help="Pose: person detector, blazepose, hog, or an SSD model file OpenCV's dnn reads.")
@click.option("--keypoints", type=click.Path(dir_okay=False), default=None,
              help="Also write the pose keypoints (per frame, per person: track id and 18 COCO-18 [x, y, c]) to this .json file.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Frames decoded and processed at a time (memory, not results).")
@click.option("--allow-pickle", is_flag=True, help="Let the openpose annotator load its .pth weights (runs pickled code).")
@selection_options
@progress_option()
def conditions(input, output, kinds, condition, canny_low, canny_high, pose_mode, max_people, pose_detector,
               keypoints, chunk_size, allow_pickle, start, end, every, max_frames, progress):
    """Extract condition maps from INPUT and write them to OUTPUT, same size, fps and frame count
    (odd sizes too: libx264 then encodes yuv444p) and, for a variable frame rate, the same frame times.
    With --start/--end/--every/--max-frames only the kept frames are decoded and written (fps / every)."""
    options = condition_options(condition) or {}
    for option, value in (("low_threshold", canny_low), ("high_threshold", canny_high)):
        if value is not None:
            options.setdefault("canny", {})[option] = value
    for option, value in (("mode", pose_mode), ("max_people", max_people), ("detector", pose_detector)):
        if value is not None:
            options.setdefault("pose", {})[option] = value
    if allow_pickle:
        options.setdefault("openpose", {})["allow_pickle"] = True
    options = options or None
    selected = {"start": start, "end": end, "every": 1 if every is None else every, "max_frames": max_frames}
    with usage():
        selection.check(**selected)
        check_options(options, kinds)
    result = extract_file(input, output, kinds=kinds or ("canny", "pose"), options=options,
                          chunk_size=chunk_size, progress=progress, keypoints=keypoints, selection=selected)
    for kind, path in result.paths.items():
        status(f"{kind}: {path}")
    for report in result.reports.values():
        log.warning(report)

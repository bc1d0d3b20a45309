"""``vidreal metrics``: temporal consistency and structure fidelity of a translated clip."""
from __future__ import annotations

import json
import logging

import click

from vidreal import selection
from vidreal.cli.common import option, progress_option, status, usage
from vidreal.cli.options import selection_options
from vidreal.metrics import DEFAULT_CLIP_MODEL, FLOW_METHODS, compute_file_metrics, format_table

GROUP_NAMES = {"clip": "CLIP", "pose": "pose"}


log = logging.getLogger(__name__)


@click.command("metrics", epilog="""\b
Examples:
  vidreal metrics samples/humanoid_walk_ground.mp4 out.mp4 --plot metrics.png
  vidreal metrics render.mp4 real.mp4 -o metrics.json --prompt "a person"
  vidreal metrics clip.mp4 out.mp4 --start 0.5s --every 5   # frames kept by translate (read from out.mp4.vidreal.yaml when there)
""")
@click.argument("source", type=click.Path(dir_okay=False))
@click.argument("translated", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Also write the full result (per-frame values included) to this JSON file.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the full result (with per-frame values) as JSON instead of the table.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write the per-frame curves to this PNG.")
@click.option("--flow", type=click.Choice(list(FLOW_METHODS)), default="dis", show_default=True,
              help="Optical flow on the source: OpenCV dis/farneback (no weights) or torchvision RAFT.")
@click.option("--clip-model", default=DEFAULT_CLIP_MODEL, show_default=True,
              help="CLIP model (hub id or folder) for frame consistency and prompt alignment.")
@click.option("--no-clip", is_flag=True, help="Skip the CLIP metrics.")
@click.option("--prompt", help="Text for CLIP prompt alignment (e.g. the translation prompt).")
@click.option("--no-pose", is_flag=True, help="Skip pose PCK (mediapipe).")
@click.option("--edge-radius", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Edge F1 tolerance in pixels.")
@click.option("--pck-alpha", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
              help="PCK threshold as a fraction of the source keypoints' bounding-box diagonal.")
@option("--device", help="Device for CLIP and RAFT: cuda, cpu, ....", show_default="auto")
@selection_options
@progress_option()
def metrics(source, translated, output, as_json, plot, flow, clip_model, no_clip, prompt, no_pose, edge_radius,
            pck_alpha, device, start, end, every, max_frames, progress):
    """Compare TRANSLATED (a translation) with its SOURCE: warp and interpolation error along the
    source's optical flow, edge F1, pose PCK and CLIP consistency.

    SOURCE's frames are those TRANSLATED was made from: the frame selection recorded in
    TRANSLATED.vidreal.yaml (translate --start/--end/--every/--max-frames), with these flags
    over it. Both must then have the same frame count; a TRANSLATED clip of another size is
    resized to SOURCE's size. The source's own temporal numbers are shown as the floor a
    translation can reach.
    """
    chosen = {"start": start, "end": end, "every": every, "max_frames": max_frames}
    with usage():
        selection.check(**{**chosen, "every": 1 if every is None else every})
    result = compute_file_metrics(
        source, translated, plot=plot, save=output, selection=chosen, flow=flow, pose=not no_pose,
        clip_model=None if no_clip else clip_model, prompt=prompt, edge_radius=edge_radius, pck_alpha=pck_alpha,
        device=device, progress=progress,
    )
    for name, reason in result["unavailable"].items():
        log.warning("%s metrics unavailable: %s", GROUP_NAMES.get(name, name), reason)
    click.echo(json.dumps(result, indent=2) if as_json else format_table(result))
    if output:
        status(f"wrote {output}", err=as_json)
    if plot and not as_json:
        status(f"plot: {plot}")

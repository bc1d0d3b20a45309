"""``vidreal translate``: one video or image file."""
from __future__ import annotations

import click

from vidreal.cli.common import option, progress_option, status
from vidreal.cli.options import translate_options


@click.command(epilog="""\b
Examples:
  vidreal translate samples/humanoid_walk_ground.mp4 -o out.mp4
  vidreal translate clip.mp4 -o out.mp4 --config configs/rocog.yaml --model ./my-dreambooth --preview side.mp4
  vidreal translate long.mp4 -o out.mp4 --keyframe-every 4 --refine 0.3     # denoise 1 frame in 4, propagate the rest
  vidreal translate long.mp4 -o out.mp4 --keyframe-every auto --keyframe-max-gap 12   # keyframes where the source moves
  vidreal translate long.mp4 -o out.mp4 --keyframe-every 4 --flow-method raft-small --flow-size 256   # flows on the GPU
  vidreal translate clip.mp4 -o out.mp4 --consistency flow --flow-band 0.2 0.8   # steadiest
  vidreal translate clip.mp4 -o out.mp4 --config configs/fast.yaml     # LCM-LoRA, 4 steps
  vidreal translate clip.mp4 -o out.mp4 --lora style.safetensors:0.8 --lora detail.safetensors:0.4
  vidreal translate car.png -o car_real.png --config configs/visda.yaml --controlnet canny=./cn-canny
  vidreal translate clip.mp4 -o out.mp4 --start 2.5s --end 10s --every 5   # 24 fps: frames 60, 65, ..., 235
  vidreal translate clip.mp4 -o out.mp4 --fps 30 --no-audio --pix-fmt yuv444p   # same frames at 30 fps, no sound
  vidreal translate clip.mp4 -o out/frames     # PNG frames out/frames/frame_000000.png, ...
  vidreal translate renders/ -o out.mp4 --input-fps 30000/1001   # a folder of images in, a video out
""")
@click.argument("input", type=click.Path(dir_okay=True))
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Output video or image file, or a folder (a name without extension) for PNG frames "
                   "frame_000000.png, ... (the record goes beside it: FOLDER.vidreal.yaml).")
@translate_options
@option("--input-fps", "input_fps", metavar="RATE", show_default="24",
        help="Frame rate of an INPUT that is a folder of images (read in natural order of names).")
@click.option("--preview", type=click.Path(), help="Also write a side-by-side video: source | conditions | output.")
@click.option("--save-conditions", type=click.Path(file_okay=False), help="Folder for the condition maps.")
@click.option("--metrics", is_flag=True, help="Compute consistency/fidelity metrics into OUTPUT.vidreal.yaml.")
@progress_option()
def translate(input, output, config, preview, save_conditions, metrics, progress):
    """Translate a synthetic video (or image, or folder of images) INPUT to look real, keeping fps, frames
    and audio."""
    from vidreal.metrics.report import format_table
    from vidreal.translate import record_path, translate_file

    result = translate_file(input, output, config, preview=preview, save_conditions=save_conditions,
                            progress=progress, metrics=metrics)
    status(f"wrote {result.output} ({result.n_frames} frame(s), {result.seconds:.1f} s)")
    if result.preview:
        status(f"preview: {result.preview}")
    for kind, path in result.conditions.items():
        status(f"{kind}: {path}")
    if result.metrics:
        click.echo(format_table(result.metrics))
    status(f"config: {record_path(result.output)}")

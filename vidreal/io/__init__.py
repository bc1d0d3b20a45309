"""Video and image IO: decord decodes, PyAV encodes, Pillow handles stills, writes are atomic.

One module per concern; every public name is importable from ``vidreal.io``:

* :mod:`vidreal.io.decode`: probe and decode videos, images and folders of images (:func:`probe`,
  :func:`read_video`, :class:`FrameFolder`, ...);
* :mod:`vidreal.io.images`: stills read and written with Pillow (PNG frame folders' names and rule),
  :func:`resize_frames`;
* :mod:`vidreal.io.atomic`: :func:`atomic_output` / :func:`atomic_folder`, a file or folder appears whole or not at all;
* :mod:`vidreal.io.encode`: :func:`write_video` and :class:`VideoWriter` (PyAV);
* :mod:`vidreal.io.audio`: audio copied from another file into an encoded output;
* :mod:`vidreal.io.outputs`: :class:`OutputFiles` (the files of one run, moved together), :func:`check_output`.

Every frame array crossing this module is ``uint8 (T, H, W, 3)`` RGB; a still image is a
one-frame clip whose ``fps`` is ``None``.

Reading
    * Videos (:data:`VIDEO_EXTS`) are probed with PyAV first (stream, exact frame rate as a
      :class:`~fractions.Fraction` so NTSC ``30000/1001`` stays exact, audio presence), because
      decord can crash on junk; then decoded with ``decord.VideoReader`` (frame count = ``len``).
      decord 0.6 fails on a few tiny frame widths (e.g. 16, 24, 48, 72 px); only then the frames
      are decoded with PyAV instead.
    * Images (:data:`IMAGE_EXTS`) are read with Pillow and converted to 8-bit RGB, see
      :func:`image_to_rgb`.
    * A folder of images (:class:`FrameFolder`) is a clip: its images in natural order of names
      (``frame_2.png`` before ``frame_10.png``; hidden names skipped), all of one size, at the
      rate given (``open_media(path, fps=...)``, default :data:`FOLDER_FPS` = 24), without audio;
      only their headers are read when it is opened, the pixels a chunk at a time.
    * :func:`open_media` opens a file once: its :class:`VideoInfo` at once, its frames by
      ``chunks()``; :func:`probe`, :func:`read_video` and :func:`iter_video` are built on it.
    * Every failure on a bad input (missing, a folder without images, empty, truncated, not a media file,
      unsupported extension, no frames, a symlink loop) raises :class:`~vidreal.errors.InputError`
      with a one-line message; a frame that cannot be decoded is named with the last one read.
      The decoders' own log lines are silenced.

Writing
    * :func:`write_video` encodes with PyAV at the given frame rate (stream rate and time base
      ``1/fps``, pts = frame index, so timestamps are exact) and keeps the frame count; with
      ``timestamps=`` (a variable-frame-rate input's, see :attr:`VideoInfo.timestamps`) each
      frame keeps its own time instead. :class:`VideoWriter` takes frames chunk by chunk.
      ``pix_fmt=`` picks the encoder's pixel format (one the codec takes; default the codec's usual).
      Sizes are kept: an odd width/height, which ``yuv420p`` cannot hold, is encoded by libx264
      (the default) in ``yuv444p`` (same pixels; some browsers and QuickTime do not play 4:4:4);
      other ``yuv420p`` codecs, and a ``pix_fmt`` asked for that halves the colour in that
      direction (yuv420p, yuv422p, ...), pad it by one edge-replicated pixel right/bottom (logged
      as a warning), so their file has the even size. Lossless choices: ``codec="libx264rgb", crf=0``
      (mp4/mkv), ``"ffv1"`` (mkv), ``"png"`` (mov).
    * ``audio_from=`` copies the audio stream of another file (packets remuxed when the container
      accepts the codec, otherwise transcoded to AAC - Opus for .webm - in mono or stereo). It is
      not trimmed to the video's length, unless ``audio_span=`` names the stretch to keep (a
      frame selection's, see :mod:`vidreal.selection`).
    * A path with an image extension writes a still with Pillow (exactly one frame); a path
      without an extension (:func:`is_frame_folder`) a folder of PNG frames :data:`FRAME_NAME`
      (``frame_000000.png``, ...), written into a temporary folder and renamed into place
      (:func:`atomic_folder`; an existing folder is replaced only when it holds such frames only).
    * All writes go through :func:`atomic_output`: nothing partial ever lies at the output path.
"""
from vidreal.io.atomic import atomic_folder, atomic_output
from vidreal.io.decode import (FOLDER_FPS, Clip, FrameFolder, Media, VideoInfo, is_image_path, iter_video, open_media,
                               probe, quick_probe, read_frames, read_video)
from vidreal.io.encode import VideoWriter, write_video
from vidreal.io.images import FRAME_NAME, image_to_rgb, is_frame_folder, resize_frames
from vidreal.io.outputs import OutputFiles, check_output, refuse_overwriting
from vidreal.runtime import IMAGE_EXTS, VIDEO_EXTS

__all__ = ["FOLDER_FPS", "FRAME_NAME", "FrameFolder", "IMAGE_EXTS", "VIDEO_EXTS", "Clip", "Media", "OutputFiles", "VideoInfo", "VideoWriter",
           "atomic_folder", "atomic_output", "check_output", "image_to_rgb", "is_frame_folder", "is_image_path",
           "iter_video", "open_media", "probe", "quick_probe", "read_frames", "read_video", "refuse_overwriting",
           "resize_frames", "write_video"]

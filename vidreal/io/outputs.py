"""The files of one run written together (OutputFiles), and the checks an output path must pass."""
from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

from vidreal.errors import OutputError
from vidreal.io.atomic import atomic_output
from vidreal.io.decode import VideoInfo
from vidreal.io.encode import VideoWriter
from vidreal.io.images import check_frame_folder, is_frame_folder
from vidreal.runtime import IMAGE_EXTS, VIDEO_EXTS, first_line


class OutputFiles:
    """The files of one run, moved into place together (``translate_file``, ``extract_file``):

        with OutputFiles() as files:
            video = files.video("out.mp4", fps=24)       # a VideoWriter
            video.write(frames)
            files.text("out.mp4.vidreal.yaml", text)

    Each file is written to a temporary file beside its path. When the block ends without an
    exception, every video is finished first, then all are renamed onto their paths; when
    anything fails (an exception in the block, an encoder, a full disk), every temporary file is
    removed and every path is left as it was (an older file there stays).
    """

    def __init__(self):
        self._stack = ExitStack()
        self._writers: list[VideoWriter] = []

    def video(self, path, fps=None, **options) -> VideoWriter:
        """A :class:`VideoWriter` for ``path`` (``options`` as for :func:`write_video`)."""
        writer = self._stack.enter_context(VideoWriter(path, fps, **options))
        self._writers.append(writer)
        return writer

    def text(self, path, text: str) -> Path:
        """Write ``text`` (UTF-8) to ``path``'s temporary file; OutputError (one line) when it
        cannot be written, e.g. on a full disk."""
        tmp = self._stack.enter_context(atomic_output(path))
        try:
            tmp.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot write the file ({first_line(exc)})", path) from None
        return Path(path)

    def __enter__(self):
        self._stack.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                for writer in self._writers:
                    writer.finish()
            except BaseException as error:
                self._stack.__exit__(type(error), error, error.__traceback__)
                raise
        return self._stack.__exit__(exc_type, exc, tb)


def check_output(path, info: VideoInfo) -> Path:
    """Refuse an output path that cannot take the media ``info`` describes (OutputError, one line):
    an unsupported extension, an image path for a clip of several frames, a video path for an
    image input, a folder, or the input itself. A path without an extension is a folder of PNG
    frames (any clip or image): refused when a file is there or a folder holding other files
    (:func:`vidreal.io.images.check_frame_folder`). Returns ``path`` as a Path."""
    path = Path(path)
    ext = path.suffix.lower()
    if is_frame_folder(path):
        refuse_overwriting(path, [info.path])
        check_frame_folder(path)
        return path
    if ext not in IMAGE_EXTS | VIDEO_EXTS:
        raise OutputError(f"unsupported output type {ext!r}; use a video ({', '.join(sorted(VIDEO_EXTS))}) "
                          f"or image ({', '.join(sorted(IMAGE_EXTS))}) extension, or none for a folder of PNG frames",
                          path)
    if ext in IMAGE_EXTS and info.n_frames != 1:
        raise OutputError(f"an image output needs a one-frame input, the input has {info.n_frames} frames; "
                          "use a video extension such as .mp4", path)
    if ext in VIDEO_EXTS and info.fps is None:
        raise OutputError("an image input gives an image output; use an image extension such as .png", path)
    if path.is_dir():
        raise OutputError("output path is a folder, expected a file name", path)
    refuse_overwriting(path, [info.path])
    return path


def refuse_overwriting(path, inputs) -> None:
    """OutputError (one line) when the output ``path`` is one of the ``inputs`` (the same file or
    folder, by any name or link), or a folder that holds one: no verb writes over what it reads.
    None paths are skipped."""
    if path is None or not Path(path).exists():
        return
    for source in inputs:
        if source is None or not Path(source).exists():
            continue
        if os.path.samefile(path, source) or (Path(path).is_dir()
                                              and Path(source).resolve().is_relative_to(Path(path).resolve())):
            raise OutputError("the output would overwrite the input", path)

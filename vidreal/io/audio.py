"""Audio copied from another media file into an output being encoded (remuxed or transcoded)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from vidreal.errors import InputError, OutputError
from vidreal.runtime import first_line

# Audio codecs remuxed into mp4/m4v as they are (FFmpeg accepts more, e.g. PCM, that players
# and browsers reject in mp4); anything else is transcoded to AAC there.
_MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac", "opus"}


@dataclass
class _AudioCopy:
    """The first audio stream of ``source`` and the output stream it goes to."""

    source: av.container.InputContainer
    stream: av.audio.AudioStream | None  # None: the source has no audio
    out: av.audio.AudioStream | None
    remux: bool  # copy packets as they are; otherwise decode and re-encode
    video_start: float = 0.0  # seconds of the source's first video frame (audio spans count from it)

    @classmethod
    def open(cls, audio_from: Path, container, path: Path) -> _AudioCopy:
        """Open ``audio_from`` and add the matching output stream to ``container``."""
        try:
            source = av.open(str(audio_from))
        except Exception as exc:
            raise InputError(f"audio source is not a readable media file ({first_line(exc)})",
                             audio_from) from exc
        if not source.streams.audio:
            return cls(source, None, None, False)
        audio = source.streams.audio[0]
        video = source.streams.video[0] if source.streams.video else None
        start = 0.0 if video is None or video.start_time is None else float(video.start_time * video.time_base)
        if path.suffix.lower() not in (".mp4", ".m4v") or audio.codec_context.name in _MP4_AUDIO:
            try:
                return cls(source, audio, container.add_stream_from_template(audio), True, start)
            except ValueError:  # the container does not take this codec: transcode
                pass
        target = "libopus" if container.format.name == "webm" else "aac"
        try:
            sample_rate = audio.codec_context.sample_rate
            out = container.add_stream(target, rate=sample_rate)
            out.codec_context.layout = "mono" if audio.codec_context.layout.nb_channels == 1 else "stereo"
            out.codec_context.time_base = Fraction(1, sample_rate)
        except (av.FFmpegError, ValueError) as exc:
            source.close()
            raise OutputError(f"cannot add audio to this container ({first_line(exc)})", path) from exc
        return cls(source, audio, out, False, start)

    def copy(self, container, span: tuple[float, float] | None = None) -> None:
        """Copy the audio; with ``span`` (t0, t1) only the packets (frames, when transcoding) that
        start in [t0, t1) seconds from the first video frame, shifted to start at 0. A span from
        0 keeps what lies before the first frame too (the encoder's priming)."""
        if self.stream is None:
            return
        lo = hi = None
        if span is not None:
            lo = -math.inf if span[0] <= 0 else self.video_start + span[0] - 1e-6
            hi = self.video_start + span[1] - 1e-6
        shift = None
        items = self.source.demux(self.stream) if self.remux else self.source.decode(self.stream)
        for item in items:
            if self.remux and item.dts is None:  # the demuxer's final flush packet
                continue
            if span is not None and item.pts is not None:
                t = float(item.pts * item.time_base)
                if t < lo:
                    continue
                if t >= hi:
                    break
                if shift is None:
                    shift = item.pts if span[0] > 0 else 0
                item.pts -= shift
                if self.remux and item.dts is not None:
                    item.dts -= shift
            if self.remux:
                item.stream = self.out
                container.mux(item)
            else:
                container.mux(self.out.encode(item))
        if not self.remux:
            container.mux(self.out.encode())


def _close_quietly(container) -> None:
    try:
        container.close()
    except Exception:
        pass

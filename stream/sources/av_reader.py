"""PyAV decoding shared by files, capture devices and network streams."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import av

from stream.frame import Frame
from stream.sources.base import Source, SourceError, SourceInfo, SourceTimeout
from stream.sources.rotation import Rotator

# FFmpeg's decoders conceal most damage themselves; we give up only when this many
# packets in a row fail, which means the rest of the input is unusable.
MAX_CONSECUTIVE_ERRORS = 25


def _one_line(err: BaseException) -> str:
    # "[Errno 1094995529] Invalid data found ...: 'avcodec_send_packet()'" -> "Invalid data found ..."
    text = " ".join(str(err).split())
    text = re.sub(r"^\[Errno -?\d+\] ", "", text)
    text = re.sub(r": '[^']*'$", "", text)
    return text or type(err).__name__


class _Yadif:
    """yadif through an FFmpeg filter graph, rebuilt when the picture format changes.

    It holds one frame back (it needs the next field), so it is used for replay only;
    live input uses field doubling, which adds no delay.
    """

    def __init__(self):
        self._graph = None
        self._key = None

    def __call__(self, vf: av.VideoFrame | None) -> list[av.VideoFrame]:
        if vf is not None:
            key = (vf.width, vf.height, vf.format.name)
            if key != self._key:
                self._build(vf)
                self._key = key
        if self._graph is None:
            return []
        self._graph.push(vf)
        out = []
        while True:
            try:
                out.append(self._graph.pull())
            except (av.error.BlockingIOError, av.error.EOFError):
                return out

    def _build(self, vf: av.VideoFrame) -> None:
        g = av.filter.Graph()
        src = g.add_buffer(
            width=vf.width, height=vf.height, format=vf.format, time_base=vf.time_base or "1/90000"
        )
        yadif = g.add("yadif", "mode=send_frame:parity=auto:deint=interlaced")
        sink = g.add("buffersink")
        src.link_to(yadif)
        yadif.link_to(sink)
        g.configure()
        self._graph = g


class AVSource(Source):
    """Decode the first video stream of anything FFmpeg opens.

    ``live``: frames on their own clock. A live file has no clock but its timestamps, so it
    is paced to them (``speed`` x real time); a device or network sender sets the pace itself.
    A sender's pictures decode with slice threads only (``threading="auto"``): frame threading
    delays every picture by (threads - 1) frames, fine for replay and for a paced file (decoded
    ahead of the clock it is paced to), wrong for a sender. ``deinterlace``: ``auto`` (field
    doubling for a sender, which holds nothing back, yadif otherwise; only when frames are
    flagged interlaced), ``yadif``, ``field``, ``off``. A display matrix (a phone clip's rotation)
    is applied to every picture before it leaves (stream.sources.rotation).
    """

    def __init__(
        self,
        url: str,
        *,
        kind: str = "file",
        format: str | None = None,
        options: dict | None = None,
        timeout: float | tuple | None = None,
        live: bool = False,
        speed: float = 1.0,
        loop: bool = False,
        deinterlace: str = "auto",
        threading: str = "auto",
    ):
        if threading not in ("auto", "slice", "frame"):
            raise SourceError(f"decoder threading must be auto, slice or frame, got {threading!r}")
        try:
            self._container = av.open(url, format=format, options=dict(options or {}), timeout=timeout)
        except av.error.ExitError:
            # FFmpeg says "Immediate exit requested" when our open time-out interrupts it: that is a
            # sender that has sent nothing (yet), which the message must say.
            wait = timeout[0] if isinstance(timeout, tuple) else timeout
            raise SourceTimeout(
                f"no data from {kind} source {url!r} within {wait or 0:g} s: is the sender running "
                "and sending to this address?"
            ) from None
        except (av.error.FFmpegError, OSError) as e:
            hint = (
                " (not a video, or damaged: a recording cut off before its index was written cannot be read)"
                if kind == "file" and isinstance(e, av.error.InvalidDataError)
                else ""
            )
            raise SourceError(f"cannot open {kind} source {url!r}: {_one_line(e)}{hint}") from None
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"{url!r} has no video stream")
        self._stream = s = self._container.streams.video[0]
        cc = s.codec_context
        self.pace = live and kind == "file"
        sender = live and not self.pace  # its pictures must leave the decoder at once
        # auto: frame+slice threads for replay and paced files, slice threads only for a sender.
        # "frame" for a sender buys decode throughput on a weak CPU at (threads - 1) frames of delay.
        cc.thread_type = {"auto": "SLICE" if sender else "AUTO", "slice": "SLICE", "frame": "AUTO"}[threading]
        rate = s.average_rate or s.guessed_rate or cc.framerate
        info = SourceInfo(
            name=url,
            kind=kind,
            width=cc.width or None,
            height=cc.height or None,
            fps=float(rate) if rate else None,
            frames=s.frames or None,
            codec=cc.name,
            pix_fmt=cc.pix_fmt,
            live=live,
        )
        super().__init__(info)
        self.speed, self.loop = speed, loop
        self.deinterlace = deinterlace if deinterlace != "auto" else ("field" if sender else "yadif")
        self._yadif = _Yadif()
        self._upright = Rotator(self.info, s)  # a phone clip's display matrix, applied
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._container.close()

    # -- decoding ---------------------------------------------------------------------
    def _packets(self) -> Iterator[av.Packet]:
        """Demux, stepping over damaged stretches instead of stopping at the first one."""
        failures = 0
        while True:
            try:
                for packet in self._container.demux(self._stream):
                    failures = 0
                    yield packet
                return
            except av.error.EOFError:
                return
            except av.error.ExitError:
                # Our read timeout fired: the sender went quiet. Live readers reconnect on this.
                raise SourceError(
                    f"{self.info.name!r}: no data (read timeout) after frame {self.counters['frames']}"
                ) from None
            except av.error.FFmpegError as e:
                failures += 1
                self.counters["decode_errors"] += 1
                self.note(f"demux error after frame {self.counters['frames']}: {_one_line(e)}")
                if failures >= MAX_CONSECUTIVE_ERRORS:
                    raise SourceError(
                        f"{self.info.name!r}: unreadable after frame "
                        f"{self.counters['frames']}: {_one_line(e)}"
                    ) from None

    def _decoded(self) -> Iterator[av.VideoFrame]:
        failures = 0
        for packet in self._packets():
            if packet.is_corrupt:
                # The demuxer's flag means a discontinuity (MPEG-TS continuity counter): lost packets,
                # or two streams spliced together (a resolution change), which decodes cleanly. So it
                # is counted and said once, as what it is; real damage shows as decode errors below.
                if not self.counters["discontinuities"]:
                    self.note(
                        f"stream discontinuity after frame {self.counters['frames']} (packets lost or "
                        "streams spliced); decoding went on"
                    )
                self.counters["discontinuities"] += 1
            try:
                pictures = packet.decode()
                failures = 0
            except av.error.FFmpegError as e:
                failures += 1
                self.counters["decode_errors"] += 1
                self.note(f"decode error after frame {self.counters['frames']}: {_one_line(e)}")
                if failures >= MAX_CONSECUTIVE_ERRORS:
                    raise SourceError(
                        f"{self.info.name!r}: undecodable after frame "
                        f"{self.counters['frames']}: {_one_line(e)}"
                    ) from None
                continue
            for vf in pictures:
                if vf.interlaced_frame and self.deinterlace == "yadif":
                    yield from self._yadif(vf)
                else:
                    yield vf
        if self.deinterlace == "yadif":
            yield from self._yadif(None)  # flush the frame yadif held back

    def frames(self) -> Iterator[Frame]:
        index, offset, last_pts, first_raw = 0, 0.0, None, None
        dur = 1.0 / self.info.fps if self.info.fps else 0.0
        t0 = pts0 = None
        while True:
            for vf in self._decoded():
                if vf.time is not None and first_raw is None:
                    first_raw = float(vf.time)
                pts = float(vf.time) + offset if vf.time is not None else index * dur
                if self.pace:
                    # Sleep to the file's clock: this is what makes a file behave like a live feed.
                    if t0 is None:
                        t0, pts0 = time.monotonic(), pts
                    wait = t0 + (pts - pts0) / self.speed - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                # The decoder's picture as it is: the model path crops and scales it directly and
                # the full-size RGB conversion happens only if a sink asks for it (stream.frame).
                field_only = bool(vf.interlaced_frame) and self.deinterlace == "field"
                self.counters["frames"] += 1
                yield self._upright(Frame(index, pts, time.monotonic(), picture=vf, field_only=field_only))
                index, last_pts = index + 1, pts
            self._check_complete(index)
            if not self.loop or index == 0:
                return
            # Looping replays the file with continuous timestamps.
            self._container.seek(0)
            offset = (last_pts or 0.0) + dur - (first_raw or 0.0)

    def _check_complete(self, decoded: int) -> None:
        expected = self.info.frames
        if expected and decoded < 0.98 * expected - 1:
            self.note(f"stream ended after {decoded} of {expected} frames (file truncated or damaged)")

"""Network streams (rtsp, udp/rtp MPEG-TS, srt, http) opened for low latency."""

from __future__ import annotations

from urllib.parse import urlparse

from stream.sources.base import Source, SourceError, SourceInfo, SourceTimeout
from stream.sources.lazy_av import av_source_class
from stream.sources.live import LatestFrameReader

SCHEMES = {"rtsp", "rtsps", "rtmp", "udp", "rtp", "srt", "tcp", "http", "https"}


def network_options(url: str, extra: dict | None = None) -> dict[str, str]:
    """FFmpeg options that trade buffering for latency.

    ``low_delay`` stops the decoder from holding frames back; a short probe starts the
    picture sooner (1 s of MPEG-TS is enough to find the codec parameters); UDP buffers absorb
    bursts (keyframes) but are too small to hide a decoder that falls behind: on overrun
    packets are dropped rather than queued or failing.
    No ``fflags=nobuffer``: it throws away the packets read while probing, and with them the
    first keyframe when the sender's is in its first second (x264's default interval sends
    only one every ~8 s): no picture at all, or none for the first interval. The probed second
    is decoded at once and the newest-frame reader skips what the consumer has no time for,
    so keeping it costs no lasting delay.
    """
    scheme = urlparse(url).scheme
    opts = {
        "fflags": "discardcorrupt",
        "flags": "low_delay",
        "probesize": "1000000",
        "analyzeduration": "1000000",
    }
    if scheme in ("rtsp", "rtsps"):
        opts["rtsp_transport"] = "tcp"  # UDP RTP loses packets on busy networks: grey smears
    if scheme in ("udp", "rtp"):
        # Buffers bound the lag a slow decoder can build up (~1 MB socket + ~1 MB FIFO, about
        # 2 s at 8 Mbit/s); beyond that packets are dropped instead of queued.
        opts.update({"fifo_size": "5000", "overrun_nonfatal": "1", "buffer_size": "1048576"})
    opts.update(extra or {})
    return opts


def open_network(
    url: str,
    *,
    options: dict | None = None,
    open_timeout: float = 10.0,
    read_timeout: float = 2.0,
    threading: str = "auto",
    give_up_after: float | None = None,
) -> Source:
    scheme = urlparse(url).scheme
    if scheme not in SCHEMES:
        raise SourceError(
            f"cannot open {url!r}: unsupported scheme {scheme!r} (use one of {sorted(SCHEMES)})"
        )
    opts = network_options(url, options)
    av_source = av_source_class()

    def reopen() -> Source:
        # read_timeout turns a silent sender into an error, which the reader answers by reconnecting.
        return av_source(
            url,
            kind="network",
            options=opts,
            timeout=(open_timeout, read_timeout),
            live=True,
            threading=threading,
        )

    try:
        first = reopen()
    except SourceTimeout as e:
        # Nothing sent yet (a UDP/SRT sender not started): a live session waits for it like for a
        # sender that went quiet, reconnecting until ``give_up_after``. A refused connection or a
        # bad address still fails here, at once: that is bad input.
        reader = LatestFrameReader(
            None, reopen, info=SourceInfo(name=url, kind="network"), give_up_after=give_up_after
        )
        reader.note(f"{e}; waiting for it")
        return reader
    return LatestFrameReader(first, reopen, give_up_after=give_up_after)

"""What a finished (or running) pipeline reports: its summary dict and one error line per stream."""

from __future__ import annotations

from stream.sinks import LatencyStats


def session_summary(
    engine: dict, streams: dict, stats: LatencyStats, wall: float, batches: dict, paused: bool
) -> dict:
    """``streams``: stream id -> stream.loops.Stream."""
    s = stats.summary()
    per_stream = {}
    for sid, st in streams.items():
        c = st.source.counters
        rec = st.recorders
        per_stream[sid] = {
            "source": st.source.info.name,
            "live": st.live,
            "analysed": st.taken,
            "dropped": int(c.get("dropped", 0)),
            "decode_errors": int(c.get("decode_errors", 0)),
            "reconnects": int(c.get("reconnects", 0)),
            "gaps": int(c.get("gaps", 0)),
            "discontinuities": int(c.get("discontinuities", 0)),
            "problems": list(st.source.problems),
            "error": st.error,
            "record_dropped": sum(r.dropped for r in rec),
            "record_errors": [r.error for r in rec if r.error],
        }
    frames = s["counters"].get("frames", 0)
    return {
        "engine": engine,
        "wall_s": round(wall, 3),
        "fps": round(frames / wall, 2) if wall > 0 else 0.0,
        "frames": frames,
        "streams": per_stream,
        "latency_ms": s["stages"],
        "batches": batches,
        "paused": paused,
    }


def stream_errors(streams: dict) -> list[str]:
    """One line per stream that ended on an error it could not recover from (its input gone for
    good, undecodable, a failed engine) or whose recording failed: what exit code 3 means."""
    out = []
    for st in streams.values():
        out += [r.error for r in st.recorders if r.error]
        if st.error:
            out.append(st.error)
    return out


def stream_warnings(streams: dict) -> list[str]:
    """One line per stream that went on past trouble: damaged data the decoder stepped over,
    outages it reconnected after. Reported, not errors: the run still went to its end."""
    out = []
    for st in streams.values():
        c = st.source.counters
        name = st.source.info.name
        if st.source.problems:
            more = len(st.source.problems) - 1
            out.append(f"{name}: {st.source.problems[0]}" + (f" (+{more} more problems)" if more > 0 else ""))
        if c.get("reconnects"):
            out.append(
                f"{name}: {int(c.get('gaps', 0))} outage(s) recovered from after "
                f"{int(c['reconnects'])} reconnect attempt(s); gaps are in the prediction log"
            )
    return out

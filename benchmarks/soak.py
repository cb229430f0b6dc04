"""Soak run (issue 16): a live 1080p30 H.264 MPEG-TS feed over UDP for N minutes, from a separate
ffmpeg process, with three 4 s outages and a resolution change, through the real pipeline.

    python -m benchmarks.soak                 # 10 minutes (the figure in docs/stream.md)
    python -m benchmarks.soak --minutes 1     # a short check that it all works

Reports (JSON on stdout and in --out): frames analysed/offered, reconnects and gap records,
p50/p99 latency per minute, resident memory once warmed up (at the first outage) and at the end (growth must stay within 10%), and
whether the annotated recording decodes to its end. A benchmark, not a test: it takes minutes
and its figures are the machine's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUTAGE_S = 4.0


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sender(port: int, size: str) -> subprocess.Popen:
    # x264 defaults but the preset: keyframes as an encoder in a scope's processor would send them.
    return subprocess.Popen(
        ["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
         "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30", "-b:v", "8M",
         "-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316"],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


def per_minute(recs: list[dict], t0: float) -> list[dict]:
    """Frames and latency percentiles per wall-clock minute of the run."""
    wall = np.array([r["wall"] for r in recs])
    lat = np.array([r["latency_ms"] for r in recs])
    out = []
    for m in range(int((wall.max() - t0) // 60) + 1 if len(wall) else 0):
        sel = (wall >= t0 + 60 * m) & (wall < t0 + 60 * (m + 1))
        if sel.any():
            out.append({"minute": m, "frames": int(sel.sum()), "p50_ms": round(float(np.percentile(lat[sel], 50)), 1),
                        "p99_ms": round(float(np.percentile(lat[sel], 99)), 1)})
    return out


def recording_frames(path: Path) -> tuple[int, float]:
    """Pictures the recording decodes to, and the last one's time: playable to its end."""
    import av

    n, last = 0, 0.0
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            n, last = n + 1, float(f.time or last)
    return n, last


def soak(minutes: float, out: Path, model: str = "") -> dict:
    from stream.pipeline import Pipeline, PipelineConfig
    from stream.sinks import read_predictions

    out.mkdir(parents=True, exist_ok=True)
    pred, rec = out / "soak.jsonl", out / "soak.ts"
    port = _port()
    # Outages at 1/4, 2/4 and 3/4 of the run; after the second the sender comes back at 720p.
    plan = [(minutes * 60 * k / 4, size) for k, size in ((1, "1920x1080"), (2, "1280x720"), (3, "1920x1080"))]
    cfg = PipelineConfig(model=model, engine="auto", device="cpu", batch=1, max_wait_ms=0.0, live=True,
                         predictions=str(pred), record=str(rec), detect_modality=False)  # fmt: skip
    pipe = Pipeline(cfg)
    rss0 = None
    sender = _sender(port, "1920x1080")
    try:
        pipe.add_stream(f"udp://127.0.0.1:{port}")
        t0 = time.time()
        pipe.start()
        for at, size in plan:
            time.sleep(max(0.0, t0 + at - time.time()))
            # Memory at "start" is taken once warmed up (decoder, encoder and engine buffers all
            # allocated), at the first outage: growth after that is what a leak would show.
            rss0 = rss0 or _rss_mb()
            _stop(sender)
            time.sleep(OUTAGE_S)
            sender = _sender(port, size)
        time.sleep(max(0.0, t0 + minutes * 60 - time.time()))
        summary = pipe.stop()
    finally:
        _stop(sender)
    rss1 = _rss_mb()
    recs = read_predictions(pred)
    gaps = [r for r in read_predictions(pred, gaps=True) if r.get("gap")]
    s = summary["streams"]["0"]
    n_rec, last_t = recording_frames(rec)
    report = {
        "command": "python -m benchmarks.soak " + " ".join(sys.argv[1:]),
        "minutes": minutes,
        "frames_analysed": s["analysed"],
        "frames_offered": s["analysed"] + s["dropped"],
        "reconnects": s["reconnects"],
        "gaps": [{k: g[k] for k in ("after_frame", "seconds", "reason")} for g in gaps],
        "error": s["error"],
        "warnings": pipe.warnings(),
        "latency_per_minute": per_minute(recs, t0),
        "rss_mb": {"start": round(rss0, 1), "end": round(rss1, 1), "growth": round(rss1 / rss0 - 1, 3)},
        "recording": {"frames": n_rec, "last_s": round(last_t, 2), "dropped": s["record_dropped"]},
        "engine": summary["engine"],
    }
    (out / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--model", default="", help="exported student; default: the bundled one")
    ap.add_argument("--out", default="/tmp/soak", help="folder for the log, recording and soak.json")
    args = ap.parse_args(argv)
    if shutil.which("ffmpeg") is None:
        print("error: the soak run needs the ffmpeg command line (apt-get install ffmpeg)", file=sys.stderr)
        return 2
    report = soak(args.minutes, Path(args.out), args.model)
    print(json.dumps(report, indent=2))
    ok = report["error"] is None and report["rss_mb"]["growth"] <= 0.10 and report["recording"]["frames"] > 0
    return 0 if ok else 3


if __name__ == "__main__":
    raise SystemExit(main())

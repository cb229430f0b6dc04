"""Replay evaluation for an uploaded video: every frame through the runtime's Pipeline with the
page's current settings, then the runtime's video-level evaluation when labels are given.

Outputs (all in the session's folder, deleted with it): the annotated video, the per-frame
prediction log (JSONL), a run summary (JSON) and, with labels, the evaluation report
(Markdown + JSON + timeline plot).
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from pagkd_core.outputs import lesion_classes
from stream.pipeline import Pipeline
from stream.sinks.record import Recorder
from stream.ui.controls import Controls


@dataclass
class ReplayResult:
    frames: int
    seconds: float
    video: str | None
    downloads: list[Path] = field(default_factory=list)
    report_md: str = ""
    plot: str | None = None  # evaluation timeline (with labels only)


def _summary_md(name: str, summary: dict, rows: list[dict]) -> str:
    s = summary["streams"].get("replay", {})
    lat = summary["latency_ms"].get("total", {})
    calls = {}
    for r in rows:
        calls[r["state"]] = calls.get(r["state"], 0) + 1
    alert = sum(1 for r in rows if r["alert"])
    lines = [
        f"### Replay of `{name}` (synthetic-data model)",
        (
            f"- frames analysed: {summary['frames']} in {summary['wall_s']:.1f} s "
            f"({summary['fps']:.1f} fps), "
            f"engine {summary['engine'].get('engine')} {summary['engine'].get('precision', '')} "
            f"on {summary['engine'].get('device')}"
        ),
        f"- latency arrival->result: p50 {lat.get('p50', 0):.1f} ms, p99 {lat.get('p99', 0):.1f} ms",
        f"- alert frames: {alert} ({100.0 * alert / max(len(rows), 1):.1f}%); calls: "
        + ", ".join(f"{k} {v}" for k, v in sorted(calls.items())),
    ]
    if s.get("error") or s.get("problems"):
        lines.append(f"- input problems: {s.get('error') or '; '.join(s['problems'][:3])}")
    return "\n".join(lines)


def evaluate_replay(
    video: Path, predictions: Path, labels: Path, out_dir: Path, cfg
) -> tuple[str, list[Path]]:
    """The runtime's video-level evaluation (stream.evaluate) on this replay's own raw
    probabilities (its prediction log is the evaluator's cache: no second inference), for
    the page's setting next to no smoothing."""
    from stream import evaluate

    work = out_dir / "eval"
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(labels, work / f"{video.stem}.truth.csv")  # the evaluator's naming: <video>.truth.csv
    shutil.copyfile(predictions, logs / f"{video.stem}.jsonl")
    (work / video.name).symlink_to(video.resolve())
    argv = [
        str(work / video.name),
        "--model",
        cfg.model,
        "--predictions-dir",
        str(logs),
        "--out",
        str(work),
        "--setting",
        cfg.smoothing,
        "--setting",
        "none",
        "--threshold",
        str(cfg.threshold),
        "--hysteresis",
        str(cfg.hysteresis),
        "--uncertain-low",
        str(cfg.uncertain_low),
        "--min-frames",
        str(cfg.min_frames),
        "--min-duration",
        str(cfg.min_duration_s),
        "-q",
    ]
    try:
        evaluate.evaluate_videos(argv)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise ValueError(f"labels {labels.name}: {e}") from None
    md = (work / "report.md").read_text()
    md = "\n".join(
        line for line in md.splitlines() if not line.startswith("![") and not line.startswith("Command:")
    )  # the plot is shown apart; paths are server-side
    files = [work / "report.md", work / "report.json", work / "timelines" / f"{video.stem}.png"]
    return md, [f for f in files if f.is_file()]


def run_replay(
    engine, base, controls: Controls, probe, labels: Path | None, out_dir: Path, progress=None
) -> ReplayResult:
    """`probe`: session.VideoProbe of a checked upload; `labels`: checked per-frame CSV or None;
    `progress((done, total), ...)`: optional (gr.Progress)."""
    from stream.sinks.predictions import read_predictions

    out_dir = Path(out_dir)
    stem = Path(probe.path).stem
    k = len(engine.class_names)
    cfg = copy.copy(base)
    cfg.realtime, cfg.batch, cfg.max_wait_ms = False, 4, 5.0
    cfg.smoothing = controls.smoothing_spec(k)
    for key, v in controls.alert_params(len(lesion_classes(engine.class_names))).items():
        setattr(cfg, key, v)
    cfg.predictions = str(out_dir / f"{stem}.predictions.jsonl")
    video = out_dir / f"{stem}.annotated.mp4"
    t0 = time.monotonic()
    pipe = Pipeline(cfg, engine=engine)
    # Not cfg.record: the runtime's recorder drops frames when its encoder falls behind (right for
    # a live feed); a replay's annotated video must hold every frame, so the replay waits for it.
    rec = Recorder(video, fps=probe.fps or 30.0, lossless=True)
    pipe.display_callbacks.append(rec.write)
    if progress is not None and probe.frames:
        done = [0]

        def tick(_result):
            done[0] += 1
            if done[0] % 15 == 0:
                progress((done[0], probe.frames), desc="replay", unit="frames")

        pipe.result_callbacks.append(tick)
    pipe.add_stream(probe.path, stream_id="replay")
    try:
        summary = pipe.run()
    finally:
        rec.close()
    rows = read_predictions(cfg.predictions)
    if not rows:
        raise RuntimeError(
            f"no frame of {Path(probe.path).name} could be analysed: "
            + "; ".join(pipe.errors() or ["empty video"])
        )
    summary_path = out_dir / f"{stem}.summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, default=str))
    report = _summary_md(Path(probe.path).name, summary, rows)
    downloads = [Path(cfg.predictions), summary_path]
    plot = None
    if labels is not None:
        md, files = evaluate_replay(Path(probe.path), Path(cfg.predictions), labels, out_dir, cfg)
        report += "\n\n" + md
        downloads += files
        plot = next((str(f) for f in files if f.suffix == ".png"), None)
    report += f"\n- annotated video: {rec.error or f'{rec.frames_written} frames'}"
    ok = video.is_file() and video.stat().st_size > 0 and rec.error is None
    if ok:
        downloads.insert(0, video)
    return ReplayResult(len(rows), time.monotonic() - t0, str(video) if ok else None, downloads, report, plot)

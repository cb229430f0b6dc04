"""Replay evaluation for an uploaded video: every frame through the runtime's Pipeline with the
page's current settings, then the runtime's video-level evaluation (stream.video_eval) when
labels are given.

Outputs (all in the session's folder, deleted with it): the annotated video, the per-frame
prediction log (JSONL), a run summary (JSON) and, with labels, the evaluation report
(Markdown + JSON + timeline plot).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from stream.config import PipelineConfig
from stream.pipeline import Pipeline
from stream.sinks import Callback, Recorder, read_predictions
from stream.smoothing import SmoothingConfig
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


def score_replay(video: str, predictions: Path, labels: Path, out_dir: Path, cfg: PipelineConfig, engine: dict,
                 synthetic: bool) -> tuple[str, list[Path]]:
    """The video-level evaluation of this replay's own raw probabilities (its prediction log:
    no second inference) against ``labels``, for the page's setting next to no smoothing."""
    from stream.video_eval import Setting, score_videos
    from stream.video_infer import VideoRun, read_log
    from stream.video_metrics import read_truth

    work = out_dir / "eval"
    settings = [Setting(cfg.smoothing.spec, cfg.smoothing, cfg.alerts),
                Setting("none", SmoothingConfig("none"), cfg.alerts)]  # fmt: skip
    try:
        truth = read_truth(labels)
        run = VideoRun(video, truth, read_log(predictions, len(truth), len(cfg.alerts.class_names)))
        score_videos([run], settings, cfg.alerts, work, model=cfg.model, engine=engine, synthetic=synthetic)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise ValueError(f"labels {labels.name}: {e}") from None
    # The plot is shown apart (its link would name a server-side path).
    md = "\n".join(line for line in (work / "report.md").read_text().splitlines() if not line.startswith("!["))
    files = [work / "report.md", work / "report.json", work / "timelines" / f"{Path(video).stem}.png"]
    return md, [f for f in files if f.is_file()]


def run_replay(
    engine, base: PipelineConfig, controls: Controls, probe, labels: Path | None, out_dir: Path, progress=None
) -> ReplayResult:
    """`base`: the replay's pipeline config, whose smoothing and alerts the page's `controls`
    set; `probe`: session.VideoProbe of a checked upload; `labels`: checked per-frame CSV or
    None; `progress((done, total), ...)`: optional (gr.Progress)."""
    out_dir = Path(out_dir)
    stem = Path(probe.path).stem
    names = list(engine.class_names)
    cfg = replace(base, smoothing=controls.smoothing_config(len(names)), alerts=controls.alert_config(names),
                  predictions=str(out_dir / f"{stem}.predictions.jsonl"))  # fmt: skip
    video = out_dir / f"{stem}.annotated.mp4"
    t0 = time.monotonic()
    pipe = Pipeline(cfg, engine=engine)
    # Not cfg.record: the runtime's recorder drops frames when its encoder falls behind (right for
    # a live feed); a replay's annotated video must hold every frame, so the replay waits for it.
    rec = Recorder(video, fps=probe.fps or 30.0, lossless=True)
    pipe.displays.append(rec.write)
    if progress is not None and probe.frames:
        done = [0]

        def tick(_result):
            done[0] += 1
            if done[0] % 15 == 0:
                progress((done[0], probe.frames), desc="replay", unit="frames")

        pipe.add_sink(Callback(tick))
    pipe.add_stream(probe.path, stream_id="replay")
    try:
        summary = pipe.run()
    finally:
        rec.close()
    rows = read_predictions(cfg.predictions)
    if not rows:
        raise RuntimeError(
            f"no frame of {Path(probe.path).name} could be analysed: "
            + "; ".join(pipe.errors() + pipe.warnings() or ["empty video"])
        )
    summary_path = out_dir / f"{stem}.summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, default=str))
    report = _summary_md(Path(probe.path).name, summary, rows)
    downloads = [Path(cfg.predictions), summary_path]
    plot = None
    if labels is not None:
        synthetic = bool(engine.source.meta.get("synthetic", True))
        md, files = score_replay(Path(probe.path).name, Path(cfg.predictions), labels, out_dir, cfg,
                                 summary["engine"], synthetic)  # fmt: skip
        report += "\n\n" + md
        downloads += files
        plot = next((str(f) for f in files if f.suffix == ".png"), None)
    report += f"\n- annotated video: {rec.error or f'{rec.frames_written} frames'}"
    ok = video.is_file() and video.stat().st_size > 0 and rec.error is None
    if ok:
        downloads.insert(0, video)
    return ReplayResult(len(rows), time.monotonic() - t0, str(video) if ok else None, downloads, report, plot)

"""Video-level evaluation: ``python -m stream evaluate VIDEO|DIR ... --model student.json``.

Runs the real pipeline once per video (fast replay, every frame, no smoothing) to get the raw
per-frame probabilities (stream.video_infer), then re-applies each smoothing/alert setting to them - the live
smoother and alert machine themselves (``Smoother.run``, ``AlertMachine.run``), at a fraction of
the cost - and scores every setting against ``<video>.truth.csv`` side by side (metrics:
stream.video_metrics). Raw probabilities are cached as prediction logs (``--predictions-dir``) so
settings can be re-scored without inference. Writes ``report.md``, ``report.json`` and one
timeline plot per video (probability, smoothed, alert, truth) to ``--out``. The report's key
table holds the video-level targets of issue 14 (stream.video_metrics_report.VIDEO_TARGETS);
older students (no ``no_lesion`` output), logs (no ``modality``) and truth files (no
``modality``, ``coverage``, ``wli_evidence``) still evaluate: the figures that need what they
lack are left empty.

A setting is a smoothing spec with optional alert overrides, e.g. ``hmm:stay=0.98,min_frames=6``
(stream.config.split_setting); without ``--setting``, a student's own ``alert_setting`` goes first.
From Python: ``score_videos(videos, settings, ...) -> report`` scores runs already made (the UI's
replay: its truth and prediction log, typed ``Setting``s); ``evaluate_videos(argv) -> report`` is
the command in-process, raising on bad input (FileNotFoundError, ValueError) where the command
prints a one-line error and exits with 2. ``--ray [ADDRESS]`` infers one video per Ray task, on
this host's cores or a cluster, into the same report (stream.ray_eval, docs/ray.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pagkd_core.filetypes import VIDEO_EXTENSIONS, is_partial
from stream.alerts import AlertConfig, AlertMachine
from stream.config import bundled_model, split_setting
from stream.host import machine_line
from stream.smoothing import SmoothingConfig
from stream.video_infer import Raw, VideoRun, check_cache_owner, infer_here
from stream.video_metrics import Outcome, Truth, outcome, truth_path
from stream.video_metrics_breakdown import breakdowns, figures, pooled_splits
from stream.video_metrics_report import check_targets, markdown, plot_timeline, table

DEFAULT_SETTINGS = ("none", "ema:alpha=0.3", "window:size=8", "hmm:stay=0.98")


def find_videos(paths: list[str]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(v for v in p.iterdir() if v.suffix.lower() in VIDEO_EXTENSIONS
                           and not is_partial(v.name) and truth_path(v).is_file())
            if not found:
                raise FileNotFoundError(f"{p}: no videos with a <video>.truth.csv next to them")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such video or folder")
    return out


@dataclass(frozen=True)
class Setting:
    """One smoothing + alert setting, scored beside the others under its ``name``."""

    name: str
    smoothing: SmoothingConfig
    alerts: AlertConfig

    @classmethod
    def parse(cls, spec: str, base: AlertConfig) -> Setting:
        mode, params, alert = split_setting(spec)
        return cls(spec, SmoothingConfig(mode, params), replace(base, **alert))


def gap_spans(gaps: list[dict], times: np.ndarray) -> list[tuple[float, float]]:
    """(start, end) on the timeline of each outage: from the last frame before it, as long as it
    lasted (frame numbers go on across an outage; the time does not)."""
    out = []
    for g in gaps:
        i = g.get("after_frame", -1)
        if 0 <= i < len(times):
            out.append((float(times[i]), float(times[i]) + float(g.get("seconds") or 0.0)))
    return out



# -- settings -> outcomes ------------------------------------------------------------------
def apply_setting(truth: Truth, times: np.ndarray, raw: Raw, setting: Setting) -> tuple[Outcome, np.ndarray]:
    """The setting's smoother and alert machine over the analysed frames, in order; frames never
    analysed keep their slot in time but feed nothing."""
    probs = raw.probs
    read = np.isfinite(probs).all(1)
    smoothed = np.full_like(probs, np.nan)  # the log's numbers (float64) for the metrics, as read
    states: list = [None] * len(probs)
    if read.any():
        smoothed[read] = setting.smoothing.build().run(probs[read])
        machine = AlertMachine(setting.alerts)
        for i, state in zip(np.flatnonzero(read), machine.run(smoothed[read], times[read].tolist())):
            states[i] = state
    cfg = setting.alerts
    return outcome(setting.name, truth, times, probs, smoothed, states, list(cfg.class_names), cfg.alert_indices,
                   pred_modality=raw.modality, skipped_states=raw.skipped), smoothed


def score_videos(videos: list[VideoRun], settings: list[Setting], base: AlertConfig, out_dir: Path, *,
                 model: str, engine: dict | str, synthetic: bool, command: str = "",
                 inference_fps: float | None = None, problems: list[str] | None = None, plots: bool = True,
                 extra: dict | None = None) -> dict:
    """Score every setting on every video side by side; write report.json, report.md and (with
    ``plots``) ``timelines/<video>.png`` to ``out_dir``; return the report. ``base``: the alert
    configuration the settings start from; the rest describes the run for the report's header
    (``extra``: more top-level keys, e.g. the Ray run's ``ray`` section)."""
    settings = list({s.name: s for s in settings}.values())  # one column per name
    per_video: dict[str, dict] = {}
    outcomes: dict[str, list[Outcome]] = {s.name: [] for s in settings}
    for v in videos:
        times = v.truth.times
        res = {s.name: apply_setting(v.truth, times, v.raw, s) for s in settings}
        for name, (o, _) in res.items():
            outcomes[name].append(o)
        per_video[v.name] = {"frames": len(v.truth), "analysed": v.raw.analysed(),
                             "frames_with_modality": int((v.raw.modality != "").sum()),
                             "gaps": [{k: g.get(k) for k in ("after_frame", "next_frame", "seconds", "reason")}
                                      for g in v.raw.gaps]}
        if plots:
            plot_timeline(out_dir / "timelines" / f"{Path(v.name).stem}.png", v.name, times, res, base.threshold,
                          gaps=gap_spans(v.raw.gaps, times))
    # one evidence split for every table: lesion evidence does not depend on the setting
    ev_median, ev_edges = pooled_splits(outcomes[settings[0].name])
    pooled = {s: figures(os_, ev_median, ev_edges) for s, os_ in outcomes.items()}
    for i, name in enumerate(per_video):
        one = {s: figures([outcomes[s][i]], ev_median, ev_edges) for s in outcomes}
        per_video[name].update(metrics={s: f["metrics"] for s, f in one.items()},
                               breakdowns={s: breakdowns(f) for s, f in one.items()},
                               lesions={s: outcomes[s][i].lesions for s in outcomes},
                               lesion_tracks={s: outcomes[s][i].tracks for s in outcomes})
    report = {"command": command, "machine": machine_line(), "model": model, "class_names": list(base.class_names),
              "engine": engine, "inference_fps": inference_fps, "alert_config": base.to_dict(),
              "settings": list(outcomes),
              "evidence_split": {"median": ev_median, "tertile_edges": ev_edges},
              "pooled": {s: f["metrics"] for s, f in pooled.items()},
              "targets": {s: check_targets(f["metrics"]) for s, f in pooled.items()},
              "breakdowns": {s: breakdowns(f) for s, f in pooled.items()},
              "videos": per_video, "problems": list(problems or []), "no_plots": not plots, "synthetic": synthetic,
              **(extra or {})}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out_dir / "report.md").write_text(markdown(report))
    return report


def default_settings(meta: dict) -> list[str]:
    """Without ``--setting``: the student's own ``alert_setting`` (the runtime's for it) first, then the rest."""
    return list(dict.fromkeys([meta.get("alert_setting") or DEFAULT_SETTINGS[0], *DEFAULT_SETTINGS]))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m stream evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("videos", nargs="+", help="videos (each with <video>.truth.csv) or folders of them")
    ap.add_argument("--model", help="exported student (.json); default: the bundled student")
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--views", default="auto", help="what the student reads of each frame: auto (its own "
                    "setting), whole, or whole,centre (stream.views)")
    ap.add_argument("--setting", action="append", dest="settings",
                    help=f"smoothing spec with alert overrides, repeatable (default: the student's alert_setting, {', '.join(DEFAULT_SETTINGS)})")
    ap.add_argument("--threshold", type=float, default=AlertConfig.threshold)
    ap.add_argument("--hysteresis", type=float, default=AlertConfig.hysteresis)
    ap.add_argument("--uncertain-low", type=float, default=AlertConfig.uncertain_low)
    ap.add_argument("--min-frames", type=int, default=AlertConfig.min_frames)
    ap.add_argument("--min-duration", dest="min_duration_s", type=float, default=AlertConfig.min_duration_s)
    ap.add_argument("--alert-classes", help="comma-separated classes that raise the alert (default: the lesion classes but the first)")
    ap.add_argument("--predictions-dir", help="cache of raw per-frame logs (<video>.jsonl): read if present, else written")
    ap.add_argument("--max-frames", type=int, default=0)
    ap.add_argument("--out", default="runs/video_eval")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                    help="one Ray task per video: alone, a local Ray on this host's cores; 'auto' or "
                         "HOST:PORT joins a cluster (docs/ray.md); put it after the videos")
    ap.add_argument("--ray-cpus", type=float, default=1, help="CPUs each Ray task asks for (default 1)")
    ap.add_argument("--ray-gpus", type=float, default=0,
                    help="GPUs each Ray task asks for, e.g. 0.25 to share one GPU by 4 tasks (default 0: CPU)")
    ap.add_argument("-q", "--quiet", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    """The command: exit code 0, or 2 with a one-line ``error: ...`` on bad input."""
    try:
        evaluate_videos(sys.argv[1:] if argv is None else argv)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def evaluate_videos(argv: list[str]) -> dict:
    """Run ``python -m stream evaluate ARGV`` in-process and return its report (the dict written
    to ``--out``/report.json), raising instead of exiting: a missing video or truth file raises
    FileNotFoundError, a bad setting or truth file ValueError. ``argv`` is parsed by the
    command's own parser (an unknown option exits like any argparse command)."""
    args = build_parser().parse_args(argv)
    for spec in args.settings or ():  # a typo fails now, before any video is read
        split_setting(spec)
    paths = find_videos(args.videos)
    from stream.engines import ModelSource
    model = args.model or os.path.relpath(bundled_model())  # relative: the report is committed
    source = ModelSource.from_path(model)
    specs = args.settings or default_settings(source.meta)
    class_names = list(source.meta["class_names"])
    base = AlertConfig(class_names=tuple(class_names), threshold=args.threshold, hysteresis=args.hysteresis,
                       uncertain_low=args.uncertain_low, min_frames=args.min_frames,
                       min_duration_s=args.min_duration_s,
                       alert_classes=tuple(args.alert_classes.split(",")) if args.alert_classes else None)
    if args.predictions_dir:
        check_cache_owner(Path(args.predictions_dir), source, args)
    if args.ray is not None:  # one task per video on a Ray cluster (stream.ray_eval); Ray loads only here
        from stream.ray_eval import infer_on_ray
        inferred = infer_on_ray(paths, args, model, class_names)
    else:
        inferred = infer_here(paths, args, source, class_names)
    out_dir = Path(args.out)
    report = score_videos(inferred.videos, [Setting.parse(s, base) for s in specs], base, out_dir,
                          command="python -m stream evaluate " + " ".join(argv), model=model,
                          engine=inferred.engine, problems=inferred.problems, plots=not args.no_plots,
                          inference_fps=round(inferred.frames / inferred.seconds, 2) if inferred.seconds else None,
                          synthetic=bool(source.meta.get("synthetic", True)), extra=inferred.extra)
    if not args.quiet:
        print(table(report["pooled"]))
        print(f"wrote {out_dir / 'report.md'}, report.json" + ("" if args.no_plots else ", timelines/*.png"))
    for p in inferred.problems:
        print(f"warning: {p}", file=sys.stderr)
    return report


if __name__ == "__main__":
    sys.exit(main())

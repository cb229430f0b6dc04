"""Video-level evaluation: ``python -m stream evaluate VIDEO|DIR ... --model student.json``.

Runs the real pipeline once per video (fast replay, every frame, no smoothing) to get the raw
per-frame probabilities, then re-applies each smoothing/alert setting to them - exactly what
the live smoother and alert machine would have done, at a fraction of the cost - and scores
every setting against ``<video>.truth.csv`` side by side (metrics: stream.video_metrics).
Raw probabilities are cached as prediction logs (``--predictions-dir``) so settings can be
re-scored without inference. Writes ``report.md``, ``report.json`` and one timeline plot per
video (probability, smoothed, alert, truth) to ``--out``.

A setting is a smoothing spec with optional alert overrides, e.g. ``hmm:stay=0.98,min_frames=6``.
From Python, ``evaluate_videos(argv) -> report`` runs the same in-process and raises on bad input
(FileNotFoundError, ValueError) where the command prints a one-line error and exits with 2.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stream.alerts import AlertConfig, AlertMachine
from stream.smoothing import build_smoother, parse_spec
from stream.video_metrics import Outcome, Truth, outcome, read_truth, runs, summarise, truth_path

VIDEO_EXTS = (".mp4", ".mkv", ".avi", ".mov", ".ts", ".m2ts", ".mpg", ".webm")
DEFAULT_SETTINGS = ("none", "ema:alpha=0.3", "window:size=8", "hmm:stay=0.98")
KEY_METRICS = [("auc_raw", "AUC raw"), ("auc_smoothed", "AUC smoothed"),
               ("auc_lesion_frames_smoothed", "AUC lesion frames"), ("sensitivity", "sens"),
               ("specificity", "spec"), ("lesion_sensitivity", "lesion sens"),
               ("lesion_first_call_correct", "first call correct"), ("false_alarms_per_min", "false alarms/min"),
               ("time_to_correct_call_median_s", "time to correct call (median s)"),
               ("frac_uncertain", "uncertain"), ("frac_no_call", "no call")]


def find_videos(paths: list[str]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(v for v in p.iterdir() if v.suffix.lower() in VIDEO_EXTS and truth_path(v).is_file())
            if not found:
                raise FileNotFoundError(f"{p}: no videos with a <video>.truth.csv next to them")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such video or folder")
    return out


def split_setting(spec: str) -> tuple[str, dict, dict]:
    """``"ema:alpha=0.3,min_frames=6"`` -> (mode, smoother params, alert overrides)."""
    mode, params = parse_spec(spec)
    alert = {k: params.pop(k) for k in list(params) if k in AlertConfig.field_names()}
    build_smoother(mode, **params)  # fail now, with the smoother's own message, not mid-report
    return mode, params, alert


# -- raw probabilities ---------------------------------------------------------------------
def read_log(path: Path, n: int, k: int) -> np.ndarray:
    probs = np.full((n, k), np.nan)
    with open(path) as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                if 0 <= rec["frame"] < n:
                    probs[rec["frame"]] = rec["probs"]
    return probs


def infer_video(video: Path, engine, n: int, args) -> tuple[np.ndarray, list[str]]:
    """Raw softmax per frame from the real pipeline (fast replay, every frame, no smoothing)."""
    from stream.pipeline import Pipeline, PipelineConfig

    probs = np.full((n, engine.num_classes), np.nan)
    bar = tqdm(total=n, desc=video.name, unit="frame", leave=False, disable=args.quiet)

    def collect(res):
        if 0 <= res.frame.index < n:
            probs[res.frame.index] = res.probs
        bar.update(1)

    cfg = PipelineConfig(model=args.model or "", batch=args.batch, realtime=False, smoothing="none",
                         annotate=False, max_frames=args.max_frames or 0)
    pipe = Pipeline(cfg, engine=engine, on_result=collect)
    pipe.add_stream(str(video))
    pipe.run()
    bar.close()
    return probs, pipe.errors()


def write_log(path: Path, probs: np.ndarray, truth: Truth, class_names: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for i, p in enumerate(probs):
            if np.isfinite(p).all():
                f.write(json.dumps({"frame": i, "pts": float(truth.pts[i]), "probs": [round(float(v), 6) for v in p],
                                    "classes": class_names}) + "\n")


def check_cache_owner(cache: Path, source) -> None:
    """Raw probabilities belong to one model: refuse a cache another model wrote (a stale cache
    would silently score the wrong model). Logs without the marker (e.g. a replay's own
    prediction log) are taken as they are."""
    marker = cache / "model.json"
    mine = {"model": source.name, "weights_hash": source.weights_hash()}
    if marker.is_file():
        theirs = json.loads(marker.read_text())
        if theirs.get("weights_hash") != mine["weights_hash"]:
            raise ValueError(f"{cache} holds raw probabilities of another model ({theirs.get('model')}); "
                             f"empty it or pass another --predictions-dir")
    elif not any(cache.glob("*.jsonl")):  # a fresh cache: claim it for this model
        cache.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(mine) + "\n")


# -- settings -> outcomes ------------------------------------------------------------------
def apply_setting(name: str, truth: Truth, times: np.ndarray, probs: np.ndarray, spec: str,
                  base: AlertConfig) -> tuple[Outcome, np.ndarray]:
    mode, params, alert_over = split_setting(spec)
    smoother, machine = build_smoother(mode, **params), AlertMachine(replace(base, **alert_over))
    smoothed = np.full_like(probs, np.nan)
    states: list = [None] * len(probs)
    for i, p in enumerate(probs):  # frames never analysed keep their slot in time but feed nothing
        if np.isfinite(p).all():
            smoothed[i] = smoother.update(p)
            states[i] = machine.update(smoothed[i], float(times[i]))
    cfg = machine.cfg
    return outcome(name, truth, times, probs, smoothed, states, list(cfg.class_names), cfg.alert_indices), smoothed


# -- report --------------------------------------------------------------------------------
def _fmt(v) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def table(rows: dict[str, dict]) -> str:
    head = "| setting | " + " | ".join(label for _, label in KEY_METRICS) + " |"
    sep = "|" + "---|" * (len(KEY_METRICS) + 1)
    body = ["| `" + name + "` | " + " | ".join(_fmt(m[k]) for k, _ in KEY_METRICS) + " |" for name, m in rows.items()]
    return "\n".join([head, sep, *body])


def plot_timeline(path: Path, video: str, times: np.ndarray, out: dict[str, tuple[Outcome, np.ndarray]],
                  threshold: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(out)
    first = out[names[0]][0]
    fig, axes = plt.subplots(len(names), 1, figsize=(12, 1.6 + 1.5 * len(names)), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        o, _ = out[name]
        for s, e in runs(o.visible & ~o.y):
            ax.axvspan(times[s], times[min(e, len(times) - 1)], color="tab:green", alpha=0.15, lw=0)
        for s, e in runs(o.y):
            ax.axvspan(times[s], times[min(e, len(times) - 1)], color="tab:red", alpha=0.18, lw=0)
        ax.plot(times, o.raw, color="0.6", lw=0.6, label="raw probability")
        ax.plot(times, o.smoothed, color="tab:blue", lw=1.2, label="smoothed")
        ax.axhline(threshold, color="k", ls=":", lw=0.8)
        ax.fill_between(times, 1.02, 1.10, where=o.alert, color="tab:red", step="mid", label="alert")
        ax.set_ylim(-0.02, 1.12)
        ax.set_ylabel("P(positive)")
        ax.set_title(f"{name}: {o.false_alarms} false alarm(s)", fontsize=9, loc="left")
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=3)
    axes[-1, 0].set_xlabel("time (s)   shading: red = positive lesion in view, green = other lesion")
    fig.suptitle(f"{video} (SYNTHETIC data) - {first.y.sum()} positive frames of {len(first.y)}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()}-core {cpu}, {platform.system()}"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m stream evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("videos", nargs="+", help="videos (each with <video>.truth.csv) or folders of them")
    ap.add_argument("--model", help="exported student (.json); default: the bundled student")
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--setting", action="append", dest="settings",
                    help=f"smoothing spec with optional alert overrides, repeatable (default: {', '.join(DEFAULT_SETTINGS)})")
    ap.add_argument("--threshold", type=float, default=AlertConfig.threshold)
    ap.add_argument("--hysteresis", type=float, default=AlertConfig.hysteresis)
    ap.add_argument("--uncertain-low", type=float, default=AlertConfig.uncertain_low)
    ap.add_argument("--min-frames", type=int, default=AlertConfig.min_frames)
    ap.add_argument("--min-duration", dest="min_duration_s", type=float, default=AlertConfig.min_duration_s)
    ap.add_argument("--alert-classes", help="comma-separated classes that raise the alert (default: all but the first)")
    ap.add_argument("--predictions-dir", help="cache of raw per-frame logs (<video>.jsonl): read if present, else written")
    ap.add_argument("--max-frames", type=int, default=0)
    ap.add_argument("--out", default="runs/video_eval")
    ap.add_argument("--no-plots", action="store_true")
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
    settings = args.settings or list(DEFAULT_SETTINGS)
    for s in settings:
        split_setting(s)
    videos = find_videos(args.videos)
    from stream.config import bundled_model
    from stream.engines import ModelSource, build_engine
    model = args.model or os.path.relpath(bundled_model())  # relative: the report is committed
    source = ModelSource.from_path(model)
    class_names = list(source.meta["class_names"])
    base = AlertConfig(class_names=tuple(class_names), threshold=args.threshold, hysteresis=args.hysteresis,
                       uncertain_low=args.uncertain_low, min_frames=args.min_frames,
                       min_duration_s=args.min_duration_s,
                       alert_classes=tuple(args.alert_classes.split(",")) if args.alert_classes else None)
    out_dir = Path(args.out)
    if args.predictions_dir:
        check_cache_owner(Path(args.predictions_dir), source)
    engine, t_infer, frames_inferred, problems = None, 0.0, 0, []
    per_video: dict[str, dict] = {}
    outcomes: dict[str, list[Outcome]] = {s: [] for s in settings}
    for video in tqdm(videos, desc="videos", disable=args.quiet or len(videos) < 2):
        truth = read_truth(truth_path(video))
        n = len(truth) if not args.max_frames else min(len(truth), args.max_frames)
        truth = Truth(*(a[:n] for a in (truth.frame, truth.pts, truth.visible, truth.lesion_id, truth.cls)))
        cached = Path(args.predictions_dir) / f"{video.stem}.jsonl" if args.predictions_dir else None
        if cached is not None and cached.is_file():
            probs = read_log(cached, n, len(class_names))
        else:
            if engine is None:
                engine = build_engine(args.engine, source, device=args.device, max_batch=args.batch,
                                      precision=args.precision)
            t0 = time.perf_counter()
            probs, errs = infer_video(video, engine, n, args)
            t_infer += time.perf_counter() - t0
            frames_inferred += int(np.isfinite(probs).all(1).sum())
            problems += [f"{video.name}: {e}" for e in errs]
            if cached is not None:
                write_log(cached, probs, truth, class_names)
        times = np.where(np.isfinite(truth.pts), truth.pts, truth.frame / 30.0)
        res = {s: apply_setting(s, truth, times, probs, s, base) for s in settings}
        for s, (o, _) in res.items():
            outcomes[s].append(o)
        per_video[video.name] = {"frames": n, "analysed": int(np.isfinite(probs).all(1).sum()),
                                 "metrics": {s: summarise([o]) for s, (o, _) in res.items()},
                                 "lesions": {s: o.lesions for s, (o, _) in res.items()}}
        if not args.no_plots:
            plot_timeline(out_dir / "timelines" / f"{video.stem}.png", video.name, times, res, base.threshold)
    pooled = {s: summarise(os_) for s, os_ in outcomes.items()}
    report = {"command": "python -m stream evaluate " + " ".join(argv), "machine": machine_line(),
              "model": model, "engine": engine.describe() if engine else "cached predictions",
              "inference_fps": round(frames_inferred / t_infer, 2) if t_infer else None,
              "alert_config": base.to_dict(), "settings": settings, "pooled": pooled, "videos": per_video,
              "problems": problems, "synthetic": bool(source.meta.get("synthetic", True))}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out_dir / "report.md").write_text(markdown(report))
    if not args.quiet:
        print(table(pooled))
        print(f"wrote {out_dir / 'report.md'}, report.json" + ("" if args.no_plots else ", timelines/*.png"))
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    return report


def markdown(rep: dict) -> str:
    lines = ["# Video-level evaluation" + (" (SYNTHETIC videos)" if rep["synthetic"] else ""), "",
             f"Command: `{rep['command']}`  ", f"Machine: {rep['machine']}  ", f"Model: `{rep['model']}`  ",
             f"Engine: {rep['engine'] if isinstance(rep['engine'], str) else rep['engine']['engine'] + ' ' + rep['engine']['precision']}"
             + (f", {rep['inference_fps']} frames/s through the pipeline" if rep["inference_fps"] else ""), "",
             "Alert machine: " + ", ".join(f"{k}={v}" for k, v in rep["alert_config"].items() if k != "class_names"),
             "", ("Positive = a lesion of an alert class in view. False alarm = an alert episode overlapping no "
                  "positive frame. Lesion = a maximal run of frames showing one lesion."), "",
             f"## All videos pooled ({len(rep['videos'])} videos)", "", table(rep["pooled"]), ""]
    for name, v in rep["videos"].items():
        lines += [f"## {name} ({v['analysed']}/{v['frames']} frames analysed)", "", table(v["metrics"]), "",
                  f"![timeline](timelines/{Path(name).stem}.png)", ""]
    if rep["problems"]:
        lines += ["## Problems", "", *[f"- {p}" for p in rep["problems"]], ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

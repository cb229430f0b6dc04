"""A video's raw per-frame probabilities, as ``python -m stream evaluate`` scores them: inferred by
the runtime's own pipeline (fast replay, every frame, no smoothing), or read from a cached
prediction log (``--predictions-dir``). The local loop (``infer_here``) and each Ray task
(stream.ray_eval) both go through ``video_raw``, so both give stream.video_eval the same numbers.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pagkd_core.digest import file_sha256
from stream.sinks.predictions import is_gap
from stream.smoothing import SmoothingConfig
from stream.video_metrics import Truth, read_truth, truth_path


@dataclass
class Raw:
    """What the runtime said per frame: softmax (NaN rows where it analysed nothing), its
    modality detector ("" where the log has none: older logs) and, for frames not analysed,
    the state it showed instead (e.g. "NBI: not analysed"; None where it logged nothing)."""

    probs: np.ndarray
    modality: np.ndarray
    skipped: list
    gaps: list = field(default_factory=list)  # the log's gap records: outages of a live input
    views: dict[str, np.ndarray] = field(default_factory=dict)  # a student of several views: each one's softmax

    @classmethod
    def empty(cls, n: int, k: int) -> Raw:
        return cls(np.full((n, k), np.nan), np.full(n, "", dtype=object), [None] * n)

    def put(self, rec: dict) -> None:
        """One prediction-log line (stream.result.Result.record's format). Frames another model
        read (``model``: the NBI teacher) are not the student's to re-smooth: they keep the
        state the runtime showed, like frames no model read."""
        if is_gap(rec):  # an outage: kept as such, never read as a frame
            self.gaps.append(rec)
            return
        i = rec["frame"]
        if not 0 <= i < len(self.probs):
            return
        if rec.get("probs") is not None and rec.get("model", "student") == "student":
            self.probs[i] = rec["probs"]
            for view, p in (rec.get("view_probs") or {}).items():
                self.views.setdefault(view, np.full_like(self.probs, np.nan))[i] = p
        else:
            self.skipped[i] = rec.get("state")
        self.modality[i] = rec.get("modality") or ""

    def analysed(self) -> int:
        return int(np.isfinite(self.probs).all(1).sum())


def read_log(path: Path, n: int, k: int) -> Raw:
    raw = Raw.empty(n, k)
    with open(path) as f:
        for line in f:
            if line.strip():
                raw.put(json.loads(line))
    return raw


def _pipeline_config(args):
    from stream.pipeline import PipelineConfig

    return PipelineConfig(model=args.model or "", batch=args.batch, live=False, smoothing=SmoothingConfig("none"),
                          annotate=False, max_frames=args.max_frames or 0, views=getattr(args, "views", "auto"))


def teacher_for(args, engine):
    """The NBI teacher's engine as the evaluation's pipeline would load it, built once to serve
    every video (building it per video cost more than a short video's inference), or None: no
    teacher, or one that does not load - the pipeline then tries itself and says why in one line."""
    from stream.lanes import open_engine, teacher_path

    cfg = _pipeline_config(args)
    try:
        path = teacher_path(cfg, engine)
        return open_engine(cfg, path) if path is not None else None
    except Exception:  # noqa: BLE001 - reported by the pipeline's own attempt (stream.lanes.teacher_lane)
        return None


def infer_video(video: Path, engine, n: int, args, teacher=None) -> tuple[Raw, list[str]]:
    """Raw softmax per frame from the real pipeline (fast replay, every frame, no smoothing);
    ``teacher``: the NBI teacher's engine, kept for the next video (None: the pipeline loads it)."""
    from stream.pipeline import Pipeline

    raw = Raw.empty(n, engine.num_classes)
    names = list(engine.class_names)
    bar = tqdm(total=n, desc=video.name, unit="frame", leave=False, disable=args.quiet)

    def collect(res):
        raw.put(res.record(names))  # the log line: probs, and modality where the runtime has one
        bar.update(1)

    pipe = Pipeline(_pipeline_config(args), engine=engine, teacher=teacher, on_result=collect)
    pipe.add_stream(str(video))
    pipe.run()
    bar.close()
    return raw, pipe.errors() + pipe.warnings()


def write_log(path: Path, raw: Raw, truth: Truth, class_names: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for i, p in enumerate(raw.probs):
            rec = {"frame": i, "pts": float(truth.pts[i]), "classes": class_names}
            if np.isfinite(p).all():
                rec["probs"] = [round(float(v), 6) for v in p]
                if raw.views:
                    rec["view_probs"] = {v: [round(float(x), 6) for x in q[i]] for v, q in raw.views.items()}
            elif raw.skipped[i] or raw.modality[i]:
                rec.update(probs=None, state=raw.skipped[i])
            else:
                continue
            if raw.modality[i]:
                rec["modality"] = raw.modality[i]
            f.write(json.dumps(rec) + "\n")


CACHE_MARKER = "model.json"  # in a --predictions-dir: which model, run how, made its logs (cache_key)


def read_cache_marker(cache: Path) -> dict | None:
    """The cache's marker (``cache_key`` of the run that claimed it), None when it has none."""
    marker = cache / CACHE_MARKER
    return json.loads(marker.read_text()) if marker.is_file() else None


def cache_key(source, args) -> dict:
    """What a video's raw probabilities depend on: the student (weights and run metadata), the
    engine, device and precision asked for, the views it reads (stream.views), and the int8
    graphs beside the student by content (a graph calibrated again over the old one changes int8
    numbers while the weights stay)."""
    from stream.views import resolve_views

    graphs = {g.path.name: file_sha256(g.path, 16) for g in source.int8_graphs()}
    views = list(resolve_views(getattr(args, "views", "auto"), source.meta))
    return {"model": source.name, "weights_hash": source.weights_hash(), "engine": args.engine,
            "device": args.device, "precision": args.precision, "int8_graphs": graphs, "views": views}


def check_cache_owner(cache: Path, source, args) -> None:
    """Raw probabilities belong to one model run one way: refuse a cache made otherwise (a stale
    cache would silently score the wrong model or engine): other weights; an engine, device or
    precision asked for by name ("auto" takes the cache's); int8 graphs changed since a run that
    may have used them. Logs without the marker (e.g. a replay's own prediction log) are taken as
    they are; a marker from before the engine was recorded is checked on the weights only."""
    mine = cache_key(source, args)
    theirs = read_cache_marker(cache)
    if theirs is not None:
        if theirs.get("weights_hash") != mine["weights_hash"]:
            raise ValueError(f"{cache} holds raw probabilities of another model ({theirs.get('model')}); "
                             f"empty it or pass another --predictions-dir")
        # an explicit request must match; "auto" takes whatever engine made the cache
        diff = [k for k in ("engine", "device", "precision") if k in theirs and mine[k] != "auto" and theirs[k] != mine[k]]
        theirs.setdefault("views", ["whole"])  # caches from before views read the whole field
        if theirs["views"] != mine["views"]:
            diff.append("views")
        if theirs.get("precision") in ("int8", "auto") and theirs.get("int8_graphs", mine["int8_graphs"]) != mine["int8_graphs"]:
            diff.append("int8_graphs")
        if diff:
            raise ValueError(f"{cache} holds raw probabilities of this model run with another {diff[0]} "
                             f"({theirs[diff[0]]} against {mine[diff[0]]} now); empty it or pass another --predictions-dir")
    elif not any(cache.glob("*.jsonl")):  # a fresh cache: claim it for this model and engine
        cache.mkdir(parents=True, exist_ok=True)
        (cache / CACHE_MARKER).write_text(json.dumps(mine) + "\n")


def cached_engine(args) -> str:
    """What a run that read every video from the ``--predictions-dir`` cache reports as its engine:
    the engine, device and precision the cache's first run asked for (its marker), since none was
    built now."""
    asked = (read_cache_marker(Path(args.predictions_dir)) if args.predictions_dir else None) or {}
    made = ", ".join(f"{k} {asked[k]}" for k in ("engine", "device", "precision") if asked.get(k) is not None)
    return f"cached predictions ({made} asked for)" if made else "cached predictions"


def video_truth(video: Path, max_frames: int) -> Truth:
    truth = read_truth(truth_path(video))
    return truth.head(len(truth) if not max_frames else min(len(truth), max_frames))


def video_raw(video: Path, truth: Truth, args, engine_for, class_names: list[str]) -> tuple[Raw, list[str], float | None]:
    """One video's raw probabilities: read from the ``--predictions-dir`` cache, else inferred with
    the engines ``engine_for()`` returns, (student, NBI teacher or None), built on first use (a
    fully cached run builds none), and cached. -> (raw, problems, seconds of inference or None when read from the cache). The local
    loop and each Ray task (stream.ray_eval) call this, so both score the same numbers."""
    n = len(truth)
    cached = Path(args.predictions_dir) / f"{video.stem}.jsonl" if args.predictions_dir else None
    if cached is not None and cached.is_file():
        return read_log(cached, n, len(class_names)), [], None
    engine, teacher = engine_for()
    t0 = time.perf_counter()
    raw, errs = infer_video(video, engine, n, args, teacher)
    seconds = time.perf_counter() - t0
    if cached is not None:
        write_log(cached, raw, truth, class_names)
    return raw, [f"{video.name}: {e}" for e in errs], seconds


@dataclass
class Inferred:
    """Every video's raw probabilities and how they were made, for score_videos."""

    videos: list  # VideoRun, in the order the videos were given
    engine: dict | str = "cached predictions"  # the engine's description
    seconds: float = 0.0  # inference time, summed over the videos (and over the workers on Ray)
    frames: int = 0  # frames inferred in that time
    problems: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # more for the report (stream.ray_eval's ``ray`` section)

    def add(self, name: str, truth: Truth, raw: Raw, problems: list[str], seconds: float | None) -> None:
        self.videos.append(VideoRun(name, truth, raw))
        self.problems += problems
        if seconds is not None:
            self.seconds += seconds
            self.frames += raw.analysed()


def infer_here(paths: list[Path], args, source, class_names: list[str]) -> Inferred:
    """The local run: one video after another in this process, one engine for all of them."""
    from stream.engines import build_engine
    engine = teacher = None

    def engine_for():
        nonlocal engine, teacher
        if engine is None:
            engine = build_engine(args.engine, source, device=args.device, max_batch=args.batch,
                                  precision=args.precision)
            teacher = teacher_for(args, engine)
        return engine, teacher

    out = Inferred([], cached_engine(args))
    for video in tqdm(paths, desc="videos", disable=args.quiet or len(paths) < 2):
        truth = video_truth(video, args.max_frames)
        out.add(video.name, truth, *video_raw(video, truth, args, engine_for, class_names))
    if engine is not None:
        out.engine = engine.describe()
    return out


@dataclass
class VideoRun:
    """One video's truth and what the runtime said about each of its frames."""

    name: str
    truth: Truth
    raw: Raw

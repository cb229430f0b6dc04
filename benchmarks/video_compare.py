"""Two students on the same held-out videos, paired: ``python -m benchmarks.video_compare``.

    python -m benchmarks.video_compare --videos DIR [DIR ...] --a LABEL=PREDS_DIR --b LABEL=PREDS_DIR \\
        [--out FILE.md] [--json FILE.json] [--resamples 2000] [--seed 0]

No inference: each PREDS_DIR holds the raw prediction logs (``<video>.jsonl``) that
``python -m stream evaluate --predictions-dir`` cached for that student. For each figure: A, B,
and B - A with a paired bootstrap 95% percentile interval. The frame arrays and masks come from
the evaluation itself (stream.video_infer.read_log, stream.video_metrics.outcome/pool), the AUCs and
the paired bootstrap from pagkd_core.metrics; what is new here is only which frames and units
each figure pairs.

Figures (frames scored: truth WLI, or no modality column; analysed by BOTH students - a frame
either logged with null ``probs`` is dropped for both, and counted):

* class AUC, close view: frames with a lesion covering >= 5% of the field (truth ``coverage``);
  positive = the alert classes (every lesion class but the first), score = P(positive)
  renormalised over the lesion classes. A video whose truth has no coverage uses all its lesion
  frames here (the report names it).
* class AUC, all WLI lesion frames (the same score).
* presence AUC: lesion in view or not, score 1 - P(no_lesion); only when both have ``no_lesion``.
* per-lesion majority vote on close-view frames (the frames of the first figure): each frame
  votes for the argmax of its lesion-class probabilities; the lesion's call is the class with
  most votes (a tie goes to the higher mean renormalised probability); the figure is the share
  of lesions called right.

Resampling unit (UNIT_TEXT): a lesion = one lesion id in one video, all its frames (it may leave
the view and come back); the frames of one video with no lesion in view form one more unit, one
per video. Ids are taken per video, so equal ids in two videos are two lesions. Each figure
resamples, with replacement, as many units as carry frames of that figure (its "n units"), and
applies the same draw to A and B.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pagkd_core.metrics import metric_value, paired_bootstrap_diff
from pagkd_core.outputs import background_index, lesion_classes
from stream.alerts import AlertConfig
from stream.video_eval import find_videos
from stream.video_infer import read_log
from stream.video_metrics import Truth, outcome, pool, read_truth, truth_path
from stream.video_metrics_report import fmt

NO_LESION_UNIT = "(no lesion)"
UNIT_TEXT = ("lesion = one lesion id in one video (all its frames); plus, per video, its frames with "
             "no lesion in view as one unit. Each figure resamples its own units with replacement; "
             "A and B get the same draw.")


@dataclass
class Student:
    label: str
    folder: Path
    classes: list[str]
    probs: np.ndarray          # (T, K) every video's frames end to end; NaN rows: not analysed
    frames: dict               # the pooled Outcome arrays and masks (stream.video_metrics.pool)

    @property
    def has_no_lesion(self) -> bool:
        return background_index(self.classes) is not None


def parse_side(text: str, folder_kind: str = "PREDS_DIR", flag: str = "") -> tuple[str, Path]:
    """``LABEL=FOLDER`` -> (label, folder): one student of a comparison (the folder is checked by
    whoever reads it, or by ``parse_preds``)."""
    label, sep, folder = text.partition("=")
    if not sep or not label or not folder:
        raise ValueError(f"{flag + ': ' if flag else ''}expected LABEL={folder_kind}, got {text!r}")
    return label, Path(folder)


def parse_preds(text: str) -> tuple[str, Path]:
    """``LABEL=PREDS_DIR``, the folder of a student's cached per-frame logs, which must exist."""
    label, path = parse_side(text)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such predictions folder (student {label})")
    return label, path


def log_classes(path: Path) -> list[str]:
    """The class list a prediction log names (read_log needs K before it reads)."""
    with open(path) as f:
        for line in f:
            names = json.loads(line).get("classes") if line.strip() else None
            if names:
                return list(names)
    raise ValueError(f"{path}: no line names its classes")


def logged_videos(paths: list[str]) -> list[Path]:
    """The videos under ``paths``, their names unique: a student's log of a video is ``<stem>.jsonl``."""
    videos = find_videos(paths)
    stems = [v.stem for v in videos]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise ValueError(f"two videos are named {twice[0]}: their prediction logs would be one file")
    return videos


def read_logs(label: str, folder: Path, videos: list[Path], truths: list[Truth]) -> tuple[list[str], list]:
    """A student's cached per-frame logs of ``videos``: (class names, one ``Raw`` per video), each log
    checked to exist, to name the same classes and to have analysed frames within its video."""
    missing = [v.stem for v in videos if not (folder / f"{v.stem}.jsonl").is_file()]
    if missing:
        found = sorted(p.stem for p in folder.glob("*.jsonl"))
        raise FileNotFoundError(f"{folder} (student {label}) has no log for {len(missing)} of the {len(videos)} videos "
                                f"(e.g. {missing[0]}.jsonl); its logs are for {found[:3] or 'nothing'}"
                                f"{' ...' if len(found) > 3 else ''}: logs of other videos?")
    classes, raws = None, []
    for video, truth in zip(videos, truths):
        log = folder / f"{video.stem}.jsonl"
        names = log_classes(log)
        if classes is not None and names != classes:
            raise ValueError(f"{log}: classes {names} differ from the other logs' {classes}")
        classes = names
        raw = read_log(log, len(truth), len(names))
        if not raw.analysed():
            raise ValueError(f"{log}: no analysed frame within {video.name}'s {len(truth)} frames: a log of another video?")
        raws.append(raw)
    return classes, raws


def load_student(label: str, folder: Path, videos: list[Path], truths: list[Truth]) -> Student:
    classes, raws = read_logs(label, folder, videos, truths)
    # No alert figures here: the alert machine is not run, so every frame's state is None.
    outcomes = [outcome(video.stem, truth, truth.times, raw.probs, raw.probs, [None] * len(truth), classes,
                        AlertConfig(class_names=tuple(classes)).alert_indices)
                for video, truth, raw in zip(videos, truths, raws)]
    return Student(label, folder, classes, np.concatenate([raw.probs for raw in raws]), vars(pool(outcomes)))


def check_classes(a: Student, b: Student, truths: list[Truth]) -> list[str]:
    lesion = lesion_classes(a.classes)
    if lesion != lesion_classes(b.classes):
        raise ValueError(f"the students' lesion classes differ: {a.label} {lesion_classes(a.classes)}, "
                         f"{b.label} {lesion_classes(b.classes)} (a paired comparison needs the same classes, same order)")
    unknown = sorted({str(c) for t in truths for c in t.cls[t.visible]} - set(lesion))
    if unknown:
        raise ValueError(f"truth classes {unknown} are not among the students' lesion classes {lesion}")
    return lesion


def unit_ids(videos: list[Path], truths: list[Truth]) -> np.ndarray:
    """The resampling unit of every frame, end to end (see UNIT_TEXT)."""
    return np.concatenate([np.where(t.visible, [f"{v.stem}/{lid}" for lid in t.lesion_id], f"{v.stem}/{NO_LESION_UNIT}")
                           for v, t in zip(videos, truths)])


def majority_calls(s: Student, lesion: list[str], rows: np.ndarray, units: np.ndarray, order: list[str]) -> np.ndarray:
    """(lesions, lesion classes): votes per class over the lesion's ``rows`` frames plus half the mean
    renormalised probability, so the argmax is the majority call, a tie going to the more probable
    class (half a mean probability is worth less than one vote). Classes by name: the students may
    order no_lesion differently."""
    idx = [s.classes.index(c) for c in lesion]
    units = units[rows]
    p = s.probs[rows][:, idx]
    p = p / np.clip(p.sum(1, keepdims=True), 1e-12, None)
    votes = np.eye(len(idx))[p.argmax(1)]
    out = np.zeros((len(order), len(idx)))
    for i, u in enumerate(order):
        m = units == u
        out[i] = votes[m].sum(0) + 0.5 * p[m].mean(0)
    return out


def paired(key: str, name: str, y, score_a, score_b, groups: np.ndarray, metric: str, args) -> dict:
    """One figure: A, B, and the paired bootstrap of B - A (pagkd_core.metrics.paired_bootstrap_diff
    gives first - second, so B goes first)."""
    kinds = set(groups.tolist())
    groups_nl = sum(u.endswith(NO_LESION_UNIT) for u in kinds)
    row = {"key": key, "figure": name, "n_units": len(kinds), "n_lesions": len(kinds) - groups_nl,
           "n_no_lesion_groups": groups_nl, "n_rows": len(y)}
    a = metric_value(metric, y, score_a) if len(y) else math.nan
    b = metric_value(metric, y, score_b) if len(y) else math.nan
    row.update(a=a, b=b, diff=math.nan, ci95=[math.nan, math.nan], p_b_greater=math.nan)
    if math.isfinite(a) and math.isfinite(b):
        boot = paired_bootstrap_diff(y, [score_b], [score_a], groups, metric=metric, n_boot=args.resamples,
                                     seed=args.seed)
        row.update(diff=boot["diff"], ci95=boot["ci95"], p_b_greater=boot["p_greater"])
    return row


def as_two_columns(score: np.ndarray) -> np.ndarray:
    """A binary score as (N, 2) probabilities, the form metric_value('auc') takes (AUC of column 1)."""
    return np.stack([1.0 - score, score], 1)


def compare(argv: list[str]) -> dict:
    """The comparison as a dict (the --json file); raises FileNotFoundError/ValueError on bad input."""
    args = build_parser().parse_args(argv)
    videos = logged_videos(args.videos)
    truths = [read_truth(truth_path(v)) for v in videos]
    (la, da), (lb, db) = parse_preds(args.a), parse_preds(args.b)
    a, b = load_student(la, da, videos, truths), load_student(lb, db, videos, truths)
    lesion = check_classes(a, b, truths)
    fa, fb = a.frames, b.frames
    units = unit_ids(videos, truths)
    scored = fa["scored"] & fb["scored"]          # WLI frames both students analysed
    lesion_frames = scored & fa["visible"]
    no_cov = [v.name for v, t in zip(videos, truths) if not np.isfinite(t.coverage).any()]
    no_cov_frames = np.concatenate([np.full(len(t), v.name in no_cov) for v, t in zip(videos, truths)])
    close = lesion_frames & (fa["close"] | no_cov_frames)
    two = lambda m, s: (as_two_columns(a.frames[s][m]), as_two_columns(b.frames[s][m]))
    rows = [paired("auc_class_close", "class AUC, WLI frames with a lesion >= 5% of the field", fa["y"][close],
                   *two(close, "cls_raw"), units[close], "auc", args),
            paired("auc_class_lesion_frames", "class AUC, all WLI lesion frames", fa["y"][lesion_frames],
                   *two(lesion_frames, "cls_raw"), units[lesion_frames], "auc", args)]
    both_bg = a.has_no_lesion and b.has_no_lesion
    if both_bg:
        rows.append(paired("auc_presence", "presence AUC (1 - P(no_lesion)), WLI frames", fa["visible"][scored],
                           *two(scored, "presence_raw"), units[scored], "auc", args))
    order = list(dict.fromkeys(units[close].tolist()))   # the close-view lesions, first seen first
    cls_of = dict(zip(units[close].tolist(), fa["cls"][close].tolist()))   # one class per lesion id
    truth_cls = np.array([lesion.index(str(cls_of[u])) for u in order], int)
    rows.append(paired("lesion_majority_close", "per-lesion majority vote right, close-view frames", truth_cls,
                       majority_calls(a, lesion, close, units, order), majority_calls(b, lesion, close, units, order),
                       np.array(order, dtype=object), "accuracy", args))
    return {"command": "python -m benchmarks.video_compare " + shlex.join(argv),
            "a": {"label": a.label, "predictions": str(a.folder), "classes": a.classes},
            "b": {"label": b.label, "predictions": str(b.folder), "classes": b.classes},
            "videos": [str(v) for v in videos], "unit": UNIT_TEXT, "resamples": args.resamples, "seed": args.seed,
            "frames": {"total": len(units), "not_analysed_a": int((~fa["analysed"]).sum()),
                       "not_analysed_b": int((~fb["analysed"]).sum()),
                       "skipped_either": int((~(fa["analysed"] & fb["analysed"])).sum()),
                       "nbi": int((~fa["wli"]).sum()), "scored": int(scored.sum()), "close": int(close.sum())},
            "videos_without_coverage": no_cov,
            "presence": None if both_bg else "left out: a student has no no_lesion output",
            "figures": rows}


def _ci(r: dict) -> str:
    lo, hi = r["ci95"]
    return f"{r['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]" if math.isfinite(r["diff"]) else "–"


def _units(r: dict) -> str:
    nl = r["n_no_lesion_groups"]
    return f"{r['n_lesions']} lesions" + (f" + {nl} no-lesion groups" if nl else "")


def markdown(rep: dict) -> str:
    a, b, f = rep["a"]["label"], rep["b"]["label"], rep["frames"]
    num = lambda v: fmt(None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v)
    lines = ["# Paired comparison of two students on the same videos", "", "```", rep["command"], "```", "",
             (f"A = `{a}` ({rep['a']['predictions']}), B = `{b}` ({rep['b']['predictions']}); "
             f"{len(rep['videos'])} videos, {rep['resamples']} paired bootstrap resamples (seed {rep['seed']}), "
             "95% percentile interval of B - A."), "",
             f"| figure | A: {a} | B: {b} | B - A [95% CI] | n units |", "|---|---|---|---|---|"]
    lines += [f"| {r['figure']} | {num(r['a'])} | {num(r['b'])} | {_ci(r)} | {_units(r)} |" for r in rep["figures"]]
    lines += ["", f"Resampling unit: {rep['unit']}", "",
              (f"Frames: {f['total']}; not analysed (null or no probs) by A {f['not_analysed_a']}, by B "
              f"{f['not_analysed_b']}; skipped for both students: {f['skipped_either']}; NBI (truth, not "
              f"scored): {f['nbi']}; scored: {f['scored']}, of them close view: {f['close']}.")]
    if rep["videos_without_coverage"]:
        lines.append(f"No coverage in the truth of {', '.join(rep['videos_without_coverage'])}: all their WLI "
                     "lesion frames count as close view there.")
    if rep["presence"]:
        lines.append(f"Presence AUC {rep['presence']}.")
    return "\n".join(lines) + "\n"


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


def build_parser() -> argparse.ArgumentParser:
    ap = command_parser("video_compare", __doc__)
    ap.add_argument("--videos", nargs="+", required=True, help="folders of videos, each with <video>.truth.csv")
    ap.add_argument("--a", required=True, help="LABEL=PREDS_DIR: student A's cached prediction logs")
    ap.add_argument("--b", required=True, help="LABEL=PREDS_DIR: student B's (the difference is B - A)")
    ap.add_argument("--out", help="markdown report (default: printed)")
    ap.add_argument("--json", help="the same as JSON")
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    return ap


def command_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """The parser of ``python -m benchmarks.<prog>``, described by the first line of ``doc``, whose
    own errors (a missing or unknown flag) are one line ``<prog>: error: ...``, exit code 2."""
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks.{prog}", description=doc.split("\n")[0])
    ap.error = lambda msg: sys.exit(print(f"{prog}: error: {msg}", file=sys.stderr) or 2)
    return ap


def run(compare_fn, markdown_fn, build_parser_fn, argv: list[str] | None, error_prefix: str = "error",
        always_print: bool = False) -> int:
    """A comparison command: ``compare_fn(argv)`` -> its markdown to ``--out`` (and printed, or
    printed only without ``--out`` unless ``always_print``) and its dict to ``--json``. Exit code
    0, or 2 with one line ``<error_prefix>: ...`` on bad input."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        rep = compare_fn(argv)
    except (FileNotFoundError, ValueError) as e:
        print(f"{error_prefix}: {e}", file=sys.stderr)
        return 2
    args, text = build_parser_fn().parse_args(argv), markdown_fn(rep)
    for path, body in ((args.out, text), (args.json, json.dumps(_jsonable(rep), indent=2) + "\n")):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(body)
    if always_print or not args.out:
        print(text, end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit code 0, or 2 with one line on bad input: ``error: ...`` for the inputs' content,
    ``video_compare: error: ...`` for a missing or unknown flag."""
    return run(compare, markdown, build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())

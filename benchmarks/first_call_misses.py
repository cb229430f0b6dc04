"""Why a student's first call on each close-view lesion was not right: ``python -m benchmarks.first_call_misses``.

    python -m benchmarks.first_call_misses --videos DIR [DIR ...] --preds DIR --setting SPEC \\
        [--out FILE.md] [--json FILE.json]

No inference: PREDS holds the per-frame logs (``<video>.jsonl``) that ``python -m stream evaluate
--predictions-dir`` cached for one student; SPEC is one alert setting in stream evaluate's grammar
(e.g. ``ema:alpha=0.3,threshold=0.55,presence=0.5,min_frames=15``). The setting's smoother and
alert machine are re-run on the logs (stream.video_eval.apply_setting), and each close-view lesion
(a track of stream.video_metrics with ``close_view``) gets exactly one category, the first that holds:

1. right: its first call (the track's ``first_call``) is its class;
2. wrong, called far: a wrong first call, made on a frame where it covered < CLOSE_COVERAGE
   (5%) of the field (unknown coverage counts as far, as in stream.video_metrics);
3. wrong, called close: a wrong first call made at >= 5%;
4. not seen: no call, and on more than half of its close-view WLI frames (coverage >= 5%, truth
   modality WLI) the state is "no lesion": the student's presence never let a call start;
5. seen, never sure: no call otherwise (uncertain / no call).

The frame of the first call: the lesion's first frame (truth lesion id) whose state is a lesion
class name. A student without a ``no_lesion`` output never shows "no lesion", so category 4 cannot
occur; the report says so. Counts and shares per category overall, by WLI evidence half (split at
the median of the close-view lesions' evidence, stream.video_metrics.evidence_median, upper half
>= it) and by true class, then one row per miss. Bad input: one line ``first_call_misses: error: ...``.

Beside the alert's first call, each lesion gets the classifier's **vote**: the lesion class with the
highest sum of log P(class | lesion) over all its analysed WLI frames in view, each frame weighted
by its P(lesion) = 1 - P(no_lesion) (weight 1 without that output). The vote sees the whole view,
so it is what an alert could reach by waiting: a wrong first call whose vote is right was made too
early; one whose vote is wrong is the classifier's own error. A table by WLI evidence band
(``EVIDENCE_BANDS``) gives both rates: where the first call is short of the vote, the alert
setting can still gain; where the vote is low, only a better classifier can.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

from benchmarks.video_compare import command_parser, logged_videos, read_logs, run
from pagkd_core.outputs import background_index, lesion_classes, lesion_indices
from stream.alerts import NO_LESION_STATE, AlertConfig
from stream.video_eval import Setting, apply_setting
from stream.video_metrics import CLOSE_COVERAGE, Truth, evidence_median, read_truth, truth_path
from stream.video_metrics_report import fmt

PROG = "first_call_misses"
RIGHT, FAR, CLOSE, NOT_SEEN, NEVER_SURE = ("right", "wrong, called far", "wrong, called close", "not seen",
                                           "seen, never sure")
CATEGORIES = (RIGHT, FAR, CLOSE, NOT_SEEN, NEVER_SURE)
EVIDENCE_BANDS = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)   # lower edges inclusive; the last band includes 1.0


def vote(probs: np.ndarray, rows: np.ndarray, names: list[str]) -> str | None:
    """The presence-weighted log-probability vote over ``rows`` (module docstring); None when no
    row was analysed."""
    p = probs[rows]
    p = p[np.isfinite(p).all(1)]
    if not len(p):
        return None
    bg = background_index(names)
    idx = lesion_indices(names)
    weight = np.ones(len(p)) if bg is None else 1.0 - p[:, bg]
    cls = p[:, idx] / np.clip(p[:, idx].sum(1, keepdims=True), 1e-12, None)
    return names[idx[int((weight[:, None] * np.log(np.clip(cls, 1e-6, 1.0))).sum(0).argmax())]]


def classify(track: dict, truth: Truth, states: np.ndarray, called: np.ndarray, probs: np.ndarray,
             names: list[str]) -> dict:
    """One close-view track's category, the first call's frame and coverage, the share of its
    close-view WLI frames in state "no lesion", and the classifier's vote over its WLI frames."""
    mine = truth.visible & (truth.lesion_id.astype(str) == track["lesion_id"])
    voted = vote(probs, mine & (truth.modality.astype(str) == "WLI"), names)
    calls = np.flatnonzero(mine & called)
    frame = int(calls[0]) if len(calls) else None
    cov = float(truth.coverage[frame]) if frame is not None else None
    close = mine & (truth.modality.astype(str) == "WLI") & (truth.coverage >= CLOSE_COVERAGE)
    unseen = float((states[close] == NO_LESION_STATE).mean()) if close.any() else None
    first = track["first_call"]
    if frame is not None and str(states[frame]) != first:
        raise ValueError(f"lesion {track['lesion_id']}: first call {first!r} but frame {frame} shows {states[frame]!r}")
    if first == track["class"]:
        cat = RIGHT
    elif first is not None:
        cat = CLOSE if cov is not None and cov >= CLOSE_COVERAGE else FAR   # NaN coverage: never close
    else:
        cat = NOT_SEEN if unseen is not None and unseen > 0.5 else NEVER_SURE
    return {"lesion_id": track["lesion_id"], "class": track["class"], "evidence": track["evidence"], "category": cat,
            "first_call": first, "first_call_frame": frame, "coverage_at_first_call": cov,
            "close_wli_frames": int(close.sum()), "close_no_lesion_share": unseen,
            "vote": voted, "vote_right": voted == track["class"]}


def misses(argv: list[str]) -> dict:
    """The analysis as a dict (the --json file); raises FileNotFoundError/ValueError on bad input."""
    args = build_parser().parse_args(argv)
    videos = logged_videos(args.videos)
    folder = Path(args.preds)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such predictions folder")
    truths = [read_truth(truth_path(v)) for v in videos]
    names, raws = read_logs(folder.name, folder, videos, truths)
    setting = Setting.parse(args.setting, AlertConfig(class_names=tuple(names)))
    lesions = []
    for video, truth, raw in zip(videos, truths, raws):
        o, _ = apply_setting(truth, truth.times, raw, setting)
        states = o.states.astype(str)
        lesions += [{"video": video.stem, **classify(t, truth, states, o.called, raw.probs, names)}
                    for t in o.tracks if t["close_view"]]
    if not lesions:
        raise ValueError(f"no close-view lesion (>= {CLOSE_COVERAGE:.0%} of the WLI field) in the {len(videos)} videos")
    med = evidence_median([{**les, "close_view": True} for les in lesions])
    for les in lesions:
        ev = les["evidence"]
        les["evidence_half"] = "unknown" if ev is None or med is None else ("upper" if ev >= med else "lower")
    return {"command": f"python -m benchmarks.{PROG} " + shlex.join(argv), "synthetic": True, "preds": str(folder),
            "setting": setting.name, "classes": names, "has_no_lesion": background_index(names) is not None,
            "videos": [v.stem for v in videos], "evidence_median": med, "lesions": lesions,
            "counts": {cat: sum(les["category"] == cat for les in lesions) for cat in CATEGORIES}}


def _cell(n: int, total: int) -> str:
    return f"{n} ({n / total:.0%})" if total else "–"


def markdown(rep: dict) -> str:
    lesions, med = rep["lesions"], rep["evidence_median"]
    groups = [("all", lesions)]
    for half, label in (("lower", f"evidence < {fmt(med)}"), ("upper", f"evidence >= {fmt(med)}"),
                        ("unknown", "evidence unknown")):
        part = [les for les in lesions if les["evidence_half"] == half]
        if part or half != "unknown":
            groups.append((label, part))
    classes = lesion_classes(rep["classes"])
    classes += sorted({les["class"] for les in lesions} - set(classes))
    groups += [(f"class {c}", [les for les in lesions if les["class"] == c]) for c in classes]
    n = len(lesions)
    lines = ["# Why first calls on close-view lesions were not right (SYNTHETIC videos)", "",
             "```", rep["command"], "```", "",
             (f"Student: `{rep['preds']}`, setting `{rep['setting']}`; {len(rep['videos'])} videos, "
              f"{n} close-view lesions, "
              f"{rep['counts'][RIGHT]} called right first ({rep['counts'][RIGHT] / n:.0%}). Cells: lesions (share of "
              f"the column). Evidence halves split at the close-view lesions' median WLI evidence {fmt(med)}."), "",
             "| category | " + " | ".join(g for g, _ in groups) + " |", "|---" * (len(groups) + 1) + "|"]
    for cat in CATEGORIES:
        lines.append(f"| {cat} | " + " | ".join(_cell(sum(les["category"] == cat for les in ls), len(ls))
                                                 for _, ls in groups) + " |")
    lines.append("| close-view lesions | " + " | ".join(str(len(ls)) for _, ls in groups) + " |")
    lines.append("| wrong first call, vote right (called too early) | " + " | ".join(
        _cell(sum(les["category"] in (FAR, CLOSE) and les["vote_right"] for les in ls), len(ls)) for _, ls in groups) + " |")
    lines.append("| vote right (what waiting could reach) | " + " | ".join(
        _cell(sum(les["vote_right"] for les in ls), len(ls)) for _, ls in groups) + " |")
    if not rep["has_no_lesion"]:
        lines += ["", (f"The student has no no_lesion output (classes {rep['classes']}): it never shows "
                       f"\"{NO_LESION_STATE}\", so 'not seen' cannot occur; its uncalled lesions are all 'seen, never sure'.")]
    lines += ["", ("Categories: right = first call is the class; wrong, called far / close = a wrong first call on a "
                   f"frame where the lesion covered < / >= {CLOSE_COVERAGE:.0%} of the field; not seen = no call and "
                   f"over half of its close-view WLI frames in state \"{NO_LESION_STATE}\"; seen, never sure = no call "
                   "otherwise. Vote: the class the presence-weighted sum of log P(class | lesion) over all the "
                   "lesion's WLI frames picks (the classifier with the whole view)."), "",
              *evidence_bands(lesions), "", "## The misses", "",
              ("| video | lesion | class | evidence | category | first call | coverage at first call "
               "| close WLI frames \"no lesion\" | vote |"), "|---|---|---|---|---|---|---|---|---|"]
    order = {c: i for i, c in enumerate(CATEGORIES)}
    for les in sorted((x for x in lesions if x["category"] != RIGHT), key=lambda x: (order[x["category"]], x["video"])):
        lines.append(f"| {les['video']} | {les['lesion_id']} | {les['class']} | {fmt(les['evidence'])} "
                     f"| {les['category']} | {les['first_call'] or '–'} | {fmt(les['coverage_at_first_call'])} "
                     f"| {fmt(les['close_no_lesion_share'])} of {les['close_wli_frames']} | {les['vote'] or '–'} |")
    return "\n".join(lines) + "\n"


def evidence_bands(lesions: list[dict]) -> list[str]:
    """The table by WLI evidence band: first call right and vote right."""
    lines = ["## By WLI evidence band", "",
             "| WLI evidence | close-view lesions | first call right | vote right |", "|---|---|---|---|"]
    edges = EVIDENCE_BANDS
    for i, lo in enumerate(edges[:-1]):
        hi, last = edges[i + 1], i == len(edges) - 2
        part = [les for les in lesions if les["evidence"] is not None
                and lo <= les["evidence"] and (les["evidence"] <= hi if last else les["evidence"] < hi)]
        n = len(part)
        lines.append(f"| {lo:g}-{hi:g} | {n} | {_cell(sum(x['category'] == RIGHT for x in part), n)} "
                     f"| {_cell(sum(x['vote_right'] for x in part), n)} |")
    return lines


def build_parser() -> argparse.ArgumentParser:
    ap = command_parser(PROG, __doc__)
    ap.add_argument("--videos", nargs="+", required=True, help="videos or folders of them (each with <video>.truth.csv)")
    ap.add_argument("--preds", required=True, help="the student's cached per-frame logs (<video>.jsonl)")
    ap.add_argument("--setting", required=True, help="one alert setting, e.g. ema:alpha=0.3,threshold=0.55")
    ap.add_argument("--out", help="also write the markdown report here")
    ap.add_argument("--json", help="the analysis as JSON")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Exit code 0 (the markdown printed, and written to --out), or 2 with one line ``first_call_misses: error: ...``."""
    return run(misses, markdown, build_parser, argv, f"{PROG}: error", always_print=True)


if __name__ == "__main__":
    sys.exit(main())

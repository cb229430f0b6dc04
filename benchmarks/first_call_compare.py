"""Two students' alert machines on the same held-out videos, paired over lesions: ``python -m benchmarks.first_call_compare``.

    python -m benchmarks.first_call_compare --a LABEL=REPORT_DIR --b LABEL=REPORT_DIR \\
        [--setting-a NAME] [--setting-b NAME] [--out FILE.md] [--json FILE.json] [--resamples 2000] [--seed 0]

No inference: each REPORT_DIR is the ``--out`` of ``python -m stream evaluate VIDEOS`` for one
student (its report.json). Each side is read under one alert setting, by default the report's
first (the student's own). For each figure: A, B, and B - A with a paired bootstrap 95%
percentile interval. The per-lesion tracks come from the evaluation itself
(stream.video_metrics._track), the figures from stream.video_metrics.lesion_figures/median_time,
the percentile from pagkd_core.metrics; what is new here is only the pairing over lesions of the
lesion-level figures, which benchmarks.video_compare (frame AUCs, majority vote) does not cover.

Figures (close-view lesions: a lesion covering >= 5% of the WLI field at some point):

* first call right: the alert machine's first lesion call equals the truth class (no call: wrong);
  target >= 0.85.
* the same on the close-view lesions with WLI evidence >= the median in A's report.json
  (``evidence_split.median``); target >= 0.95.
* called at all: any lesion call, right or wrong.
* median time from close view to a right call, a lesion never called right counting as
  infinitely late ('–' when over half are); B - A only over the draws where both medians are finite.

Resampling unit (UNIT_TEXT): a lesion = one lesion id in one video. Each figure resamples its own
lesions with replacement, and applies the same draw to A and B. The two reports must cover the
same videos with the same lesions (the same truth).
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys

import numpy as np

from benchmarks.video_compare import _ci, command_parser, parse_side, run
from pagkd_core.metrics import _percentile
from stream.video_metrics import lesion_figures, rate
from stream.video_metrics_report import fmt

PROG = "first_call_compare"
UNIT_TEXT = ("lesion = one lesion id in one video. Each figure resamples its own lesions with replacement; "
             "A and B get the same draw.")


def load_side(text: str, flag: str, setting: str | None) -> dict:
    label, folder = parse_side(text, "REPORT_DIR", flag)
    path = folder / "report.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such report (student {label}; write it with python -m stream evaluate --out)")
    rep = json.loads(path.read_text())
    if not all(k in rep for k in ("settings", "videos", "evidence_split")):
        raise ValueError(f"{path}: not a python -m stream evaluate report (no settings, videos or evidence_split)")
    setting = setting or rep["settings"][0]
    if setting not in rep["settings"]:
        raise ValueError(f"{path}: no setting {setting!r}; it has {rep['settings']}")
    tracks = {}
    for video, v in rep["videos"].items():
        if setting not in v.get("lesion_tracks", {}):
            raise ValueError(f"{path}: video {video} has no lesion_tracks for {setting!r} (an older report?)")
        tracks[video] = {t["lesion_id"]: t for t in v["lesion_tracks"][setting]}
    return {"label": label, "folder": str(folder), "setting": setting, "synthetic": bool(rep.get("synthetic")),
            "evidence_median": rep["evidence_split"]["median"], "tracks": tracks}


def pair(a: dict, b: dict) -> tuple[list[dict], list[dict]]:
    """The lesions of both reports, in A's order, as two aligned lists of tracks."""
    va, vb = set(a["tracks"]), set(b["tracks"])
    if va != vb:
        only = sorted(va - vb)[:1] + sorted(vb - va)[:1]
        raise ValueError(f"the reports cover different videos ({len(va)} in {a['label']}, {len(vb)} in {b['label']}, "
                         f"e.g. {only[0]} is in one only)")
    ta, tb = [], []
    truth = lambda t: (t["class"], t["close_view"], t["evidence"])
    for video, la in a["tracks"].items():
        lb = b["tracks"][video]
        if set(la) != set(lb) or any(truth(la[i]) != truth(lb[i]) for i in la):
            raise ValueError(f"video {video}: the reports have different lesions (ids, classes, close view or "
                             f"evidence: {sorted(la)[:3]} vs {sorted(lb)[:3]}): not the same truth")
        ta += la.values()
        tb += [lb[i] for i in la]
    return ta, tb


def figure(key: str, name: str, fn, rows: list[int], ta: list[dict], tb: list[dict], args) -> dict:
    """fn(tracks) -> float | None on A's and B's tracks of ``rows``, then on ``args.resamples``
    draws of ``rows`` with replacement (the same draw for both); the percentile interval of B - A
    over the draws where both are finite."""
    num = lambda v: math.nan if v is None else float(v)
    a, b = num(fn([ta[i] for i in rows])), num(fn([tb[i] for i in rows]))
    row = {"key": key, "figure": name, "n_lesions": len(rows), "a": a, "b": b, "diff": b - a,
           "ci95": [math.nan, math.nan], "draws_left_out": 0}
    if not (rows and math.isfinite(a) and math.isfinite(b)):
        row["diff"] = math.nan
        return row
    rng, idx, diffs = np.random.default_rng(args.seed), np.asarray(rows), []
    for _ in range(args.resamples):
        d = idx[rng.integers(len(idx), size=len(idx))]
        diffs.append(num(fn([tb[i] for i in d])) - num(fn([ta[i] for i in d])))
    row.update(ci95=_percentile(diffs, 0.95), draws_left_out=sum(not math.isfinite(x) for x in diffs))
    return row


def compare(argv: list[str]) -> dict:
    """The comparison as a dict (the --json file); raises FileNotFoundError/ValueError on bad input."""
    args = build_parser().parse_args(argv)
    a, b = load_side(args.a, "--a", args.setting_a), load_side(args.b, "--b", args.setting_b)
    ta, tb = pair(a, b)
    med = a["evidence_median"]
    close = [i for i, t in enumerate(ta) if t["close_view"]]
    upper = [i for i in close if med is not None and ta[i]["evidence"] is not None and ta[i]["evidence"] >= med]
    lf = lambda key: (lambda ls: lesion_figures(ls, med)[key])
    called = lambda ls: rate(sum(t["first_call"] is not None for t in ls), len(ls))
    rows = [figure("close_first_call_correct", "first call right, close-view lesions (target >= 0.85)",
                   lf("close_first_call_correct"), close, ta, tb, args),
            figure("close_first_call_correct_upper_evidence",
                   f"first call right, close-view lesions with evidence >= {fmt(med)} (target >= 0.95)",
                   lf("close_first_call_correct_upper_evidence"), upper, ta, tb, args),
            figure("close_called", "called at all, close-view lesions", called, close, ta, tb, args),
            figure("time_close_to_correct_median_s", "median time from close view to a right call (s)",
                   lf("time_close_to_correct_median_s"), close, ta, tb, args)]
    side = lambda s: {k: s[k] for k in ("label", "folder", "setting", "synthetic", "evidence_median")}
    return {"command": "python -m benchmarks.first_call_compare " + shlex.join(argv), "a": side(a), "b": side(b),
            "videos": sorted(a["tracks"]), "lesions": len(ta), "evidence_median": med, "unit": UNIT_TEXT,
            "resamples": args.resamples, "seed": args.seed, "figures": rows}


def markdown(rep: dict) -> str:
    a, b = rep["a"], rep["b"]
    num = lambda v: fmt(None if not math.isfinite(v) else v)
    synthetic = " (SYNTHETIC videos)" if a["synthetic"] or b["synthetic"] else ""
    lines = [f"# Paired first-call comparison of two students on the same videos{synthetic}", "",
             "```", rep["command"], "```", "",
             (f"A = `{a['label']}` ({a['folder']}, setting `{a['setting']}`), B = `{b['label']}` ({b['folder']}, "
              f"setting `{b['setting']}`); {len(rep['videos'])} videos, {rep['lesions']} lesions, {rep['resamples']} "
              f"paired bootstrap resamples (seed {rep['seed']}), 95% percentile interval of B - A."), "",
             f"| figure | A: {a['label']} | B: {b['label']} | B - A [95% CI] | n lesions |", "|---|---|---|---|---|"]
    lines += [f"| {r['figure']} | {num(r['a'])} | {num(r['b'])} | {_ci(r)} | {r['n_lesions']} |" for r in rep["figures"]]
    lines += ["", f"Resampling unit: {rep['unit']}", "",
              f"Evidence split: the median {fmt(rep['evidence_median'])} from A's report.json (evidence_split.median)"
              + ("." if b["evidence_median"] == a["evidence_median"]
                 else f"; B's report has {fmt(b['evidence_median'])}, not used.")]
    for r in rep["figures"]:
        if r["draws_left_out"]:
            lines.append(f"{r['figure']}: {r['draws_left_out']} of {rep['resamples']} draws had an infinite median "
                         "(over half never called right) and are left out of the interval.")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    ap = command_parser(PROG, __doc__)
    ap.add_argument("--a", required=True, help="LABEL=REPORT_DIR: student A's python -m stream evaluate --out")
    ap.add_argument("--b", required=True, help="LABEL=REPORT_DIR: student B's (the difference is B - A)")
    ap.add_argument("--setting-a", help="alert setting of A (default: the report's first, the student's own)")
    ap.add_argument("--setting-b", help="alert setting of B (default: the report's first)")
    ap.add_argument("--out", help="markdown report (default: printed)")
    ap.add_argument("--json", help="the same as JSON")
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Exit code 0, or 2 with a one-line ``first_call_compare: error: ...`` on bad input."""
    return run(compare, markdown, build_parser, argv, f"{PROG}: error")


if __name__ == "__main__":
    sys.exit(main())

"""How high lesion-presence AUC can go on a set of videos: ``python -m benchmarks.presence_ceiling``.

    python -m benchmarks.presence_ceiling --videos DIR [DIR ...] [--preds DIR] [--out FILE.md] [--json FILE.json]

Presence AUC (stream.video_metrics) ranks the WLI frames with a lesion in view against those
without one. The generator's procedures hold lesions that are in view and barely show (far, in
the dark of the lumen, low on evidence), and its truth records how much each one shows: the
frame's ``lesion_contrast``, the mean change of display luma over the lesion in grey levels,
measured on the render before the codec (docs/synthetic_data.md). A detector that finds every
lesion at contrast >= c and cannot tell the ones below c from bare mucosa (it scores them as it
scores frames with no lesion: ties, half credit) reaches

    AUC(c) = 1 - share of lesion frames below c / 2

whatever it does elsewhere. One row per c gives that ceiling, so a target can be read against
what the videos let any detector reach. With ``--preds`` (a student's cached per-frame logs, as
``python -m stream evaluate --predictions-dir`` writes them; NaN rows, frames it did not analyse,
left out) each row also gives the student's own presence AUC (score 1 - P(no_lesion)) on the
lesion frames at contrast >= c against every no-lesion frame: how well it finds what is there to
find. Lesion frames without a recorded contrast count as below every c.

A second table does the same by size in view (the truth's ``coverage``, share of the endoscope
field): a detector blind to lesions smaller than s. A student that reads the field at a few hundred
pixels sees a lesion of 0.5% of the field as a blob some 18 px across, so the rows say how much of
the target such small lesions hold. No inference, no timing. Bad input: one line
``presence_ceiling: error: ...``.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

from benchmarks.video_compare import command_parser, logged_videos, read_logs, run
from pagkd_core.outputs import background_index
from stream.video_metrics import auc, read_truth, truth_path
from stream.video_metrics_report import fmt

PROG = "presence_ceiling"
TARGET = 0.95                       # issue 14's presence target
CONTRASTS = (1.0, 2.0, 3.0, 4.0, 8.0)   # grey levels
COVERAGES = (0.005, 0.01, 0.02, 0.05)   # share of the field; 0.05 is "close view"


def ceiling_rows(visible: np.ndarray, measure: np.ndarray, presence: np.ndarray | None,
                 cuts: tuple[float, ...] = CONTRASTS) -> list[dict]:
    """One row per cut c over the WLI frames given (``visible``: lesion in view; ``measure``: how
    much each lesion frame shows, contrast or coverage; NaN counts as below every cut)."""
    seen = np.nan_to_num(measure, nan=-np.inf)
    n_lesion = int(visible.sum())
    rows = []
    for c in cuts:
        below = int((visible & (seen < c)).sum())
        row = {"from": c, "lesion_frames_below": below, "share_below": below / n_lesion if n_lesion else None,
               "ceiling": 1.0 - below / n_lesion / 2.0 if n_lesion else None}
        if presence is not None:
            keep = ~visible | (seen >= c)
            row["student_above"] = auc(visible[keep], presence[keep])
        rows.append(row)
    return rows


def build_parser() -> argparse.ArgumentParser:
    ap = command_parser(PROG, __doc__)
    ap.add_argument("--videos", nargs="+", required=True, help="videos (each with <video>.truth.csv) or folders of them")
    ap.add_argument("--preds", type=Path, help="a student's per-frame logs (stream evaluate --predictions-dir)")
    ap.add_argument("--out", type=Path, help="write the table as Markdown (printed either way)")
    ap.add_argument("--json", type=Path, help="write the figures as JSON")
    return ap


def measure(argv: list[str]) -> dict:
    args = build_parser().parse_args(argv)
    videos = logged_videos(args.videos)
    truths = [read_truth(truth_path(v)) for v in videos]
    for video, t in zip(videos, truths):
        if t.visible.any() and np.isnan(t.contrast[t.visible]).all():
            raise ValueError(f"{truth_path(video)} has no lesion_contrast: make the videos with this version's synth-video")
    wli = np.concatenate([t.modality.astype(str) == "WLI" for t in truths])
    visible = np.concatenate([t.visible for t in truths])
    contrast = np.concatenate([t.contrast for t in truths])
    coverage = np.concatenate([t.coverage for t in truths])
    presence = None
    if args.preds is not None:
        classes, raws = read_logs("student", args.preds, videos, truths)
        bg = background_index(classes)
        if bg is None:
            raise ValueError(f"{args.preds}: the student has no no_lesion output, so no presence score")
        presence = np.concatenate([1.0 - r.probs[:, bg] for r in raws])
        wli &= np.isfinite(presence)
        presence = presence[wli]
    visible, contrast, coverage = visible[wli], contrast[wli], coverage[wli]
    return {"command": f"python -m benchmarks.{PROG} " + shlex.join(argv), "videos": len(videos),
            "lesion_frames": int(visible.sum()), "no_lesion_frames": int((~visible).sum()),
            "student_all": None if presence is None else auc(visible, presence), "preds": str(args.preds or ""),
            "target": TARGET, "rows": ceiling_rows(visible, contrast, presence),
            "coverage_rows": ceiling_rows(visible, coverage, presence, COVERAGES)}


def _table(rows: list[dict], axis: str, student: bool, cut=str) -> list[str]:
    head = f"| lesions seen from {axis} | lesion frames below | share | ceiling AUC |"
    lines = [head + (" student's AUC on the frames at or above it |" if student else ""),
             "|---|---|---|---|" + ("---|" if student else "")]
    for r in rows:
        lines.append(f"| {cut(r['from'])} | {r['lesion_frames_below']} | {fmt(r['share_below'])} | "
                     f"{fmt(r['ceiling'])} |" + (f" {fmt(r['student_above'])} |" if student else ""))
    return lines


def markdown(rep: dict) -> str:
    student = rep["preds"] != ""
    lines = ["# How high presence AUC can go (SYNTHETIC videos)", "", f"```\n{rep['command']}\n```", "",
             f"{rep['videos']} videos: {rep['lesion_frames']} WLI frames with a lesion in view, "
             f"{rep['no_lesion_frames']} without" + (" (frames the student analysed)." if student else ".")
             + f" Target: presence AUC >= {rep['target']}."
             + (f" The student's presence AUC on all of them: {fmt(rep['student_all'])}." if student else ""), "",
             "## By contrast", ""]
    lines += _table(rep["rows"], "contrast (grey levels)", student, cut=lambda c: f"{c:g}")
    lines += ["", "## By size in view", ""]
    lines += _table(rep["coverage_rows"], "size in view (share of the field)", student, cut=lambda c: f"{c:.1%}")
    lines += ["", ("Ceiling: the AUC of a detector that finds every lesion at or above the cut and none "
              "below it (ties with no-lesion frames, half credit). Contrast: the truth's `lesion_contrast`, mean "
              "change of display luma over the lesion, measured before the codec. Size in view: the truth's "
              "`coverage`, the share of the endoscope field the lesion covers.")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Exit code 0 (the table printed, and written to --out), or 2 with one line ``presence_ceiling: error: ...``."""
    return run(measure, markdown, build_parser, argv, f"{PROG}: error", always_print=True)


if __name__ == "__main__":
    sys.exit(main())

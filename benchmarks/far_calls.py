"""How sure a student is of a lesion's class by the lesion's size in view, from cached logs.

A first call is the first class label the alert machine shows from a lesion's first visible
frame, so a student that is sure of the class of a far lesion (a few pixels wide) calls it
early and at chance. This prints, per coverage bin of WLI frames with a lesion in view: the
share of frames where the class probability renormalised over the lesion classes exceeds
`--sure` and how many of those are right, and the quantiles of 1 - P(no_lesion) (also on
frames with no lesion in view: what the presence gate sees there). No inference: it reads the
per-frame logs `python -m stream evaluate --predictions-dir DIR` (or `stream tune`) cached.

    python -m benchmarks.far_calls --videos VAL_DIR [VAL_DIR ...] --preds LABEL=DIR [LABEL=DIR ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.video_compare import parse_preds, read_logs
from pagkd_core.outputs import background_index, lesion_indices
from stream.video_eval import find_videos
from stream.video_metrics import read_truth, truth_path

BINS = ((0.0, 0.02, "<2%"), (0.02, 0.05, "2-5%"), (0.05, 0.15, "5-15%"), (0.15, 1.01, ">=15%"))


def far_calls(videos: list[Path], folder: Path, sure: float) -> list[dict]:
    """One row per coverage bin (and one for frames with no lesion in view)."""
    score, cov, right, none = [], [], [], []
    truths = [read_truth(truth_path(v)) for v in videos]
    names, raws = read_logs(folder.name, folder, videos, truths)
    bg = background_index(names)
    if bg is None:
        raise ValueError(f"{folder}: the student has no no_lesion output; presence is not defined")
    lesion_cols = lesion_indices(names)
    for truth, raw in zip(truths, raws):
        probs = raw.probs
        wli = (truth.modality == "WLI") & np.isfinite(probs).all(axis=1)
        cls_p = probs[:, lesion_cols] / probs[:, lesion_cols].sum(axis=1, keepdims=True)
        called = np.array(names, dtype=object)[lesion_cols][cls_p.argmax(axis=1)]
        seen = wli & truth.visible
        score.append(np.c_[1 - probs[seen, bg], cls_p[seen].max(axis=1)])
        cov.append(truth.coverage[seen])
        right.append(called[seen] == truth.cls[seen])
        none.append(1 - probs[wli & ~truth.visible, bg])
    score, cov, right = np.concatenate(score), np.concatenate(cov), np.concatenate(right)
    rows = []
    for lo, hi, name in BINS:
        m = (cov >= lo) & (cov < hi)
        sure_m = m & (score[:, 1] > sure)
        rows.append({"bin": name, "frames": int(m.sum()), "sure": sure_m.sum() / max(m.sum(), 1),
                     "sure_right": right[sure_m].mean() if sure_m.any() else float("nan"),
                     "presence_q": np.quantile(score[m, 0], [0.1, 0.5, 0.9]) if m.any() else None})  # fmt: skip
    none = np.concatenate(none)
    rows.append({"bin": "no lesion", "frames": len(none), "sure": float("nan"), "sure_right": float("nan"),
                 "presence_q": np.quantile(none, [0.1, 0.5, 0.9]) if len(none) else None})  # fmt: skip
    return rows


def markdown(label: str, rows: list[dict], sure: float) -> str:
    head = f"| {label}: bin | frames | class prob > {sure:g} | of those right | 1 - P(no_lesion) p10 / p50 / p90 |"
    lines = [head, "|---|---|---|---|---|"]
    for r in rows:
        q = " / ".join(f"{v:.2f}" for v in r["presence_q"]) if r["presence_q"] is not None else "–"
        sure_s = "–" if np.isnan(r["sure"]) else f"{r['sure']:.2f}"
        right_s = "–" if np.isnan(r["sure_right"]) else f"{r['sure_right']:.2f}"
        lines.append(f"| {r['bin']} | {r['frames']} | {sure_s} | {right_s} | {q} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.far_calls", description=__doc__.splitlines()[0])
    ap.add_argument("--videos", nargs="+", required=True, help="videos or folders (each with its .truth.csv)")
    ap.add_argument("--preds", nargs="+", required=True, metavar="LABEL=DIR", help="cached per-frame logs")
    ap.add_argument(
        "--sure", type=float, default=0.85, help="class probability counted as sure (default 0.85)"
    )
    args = ap.parse_args(argv)
    try:
        videos = find_videos([Path(v) for v in args.videos])
        for label, folder in (parse_preds(p) for p in args.preds):
            print(markdown(label, far_calls(videos, folder, args.sure), args.sure) + "\n")
    except (OSError, ValueError) as e:
        print(f"far_calls: error: {e}", file=__import__("sys").stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

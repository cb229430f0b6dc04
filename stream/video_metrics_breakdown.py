"""Breakdowns of the video figures by WLI evidence strength and lesion size in view, and all
figures of one setting together (``figures``), as the evaluation report stores them.

* by size in view: WLI lesion frames binned by coverage (``COVERAGE_BINS``): class AUC and
  presence AUC (the bin's lesion frames against every no-lesion frame), frames carrying the
  right label; lesions binned by their peak coverage: first call right.
* by WLI evidence: cut points are quantiles of the close-view lesions' evidence (tertiles by
  default), computed once over all videos (``evidence_cuts``) so every video is cut alike;
  close-view frames binned by their own evidence (class AUC), close-view lesions by their mean
  evidence over close-view frames (first call right, time to a correct call).
Truth without coverage or evidence (older CSVs) gives empty bins, not errors.
"""
from __future__ import annotations

from itertools import pairwise

import numpy as np

from stream.video_metrics import Outcome, auc, evidence_median, median_time, pool, rate, summarise
from stream.video_metrics_modality import modality_summary

COVERAGE_BINS = (0.0, 0.02, 0.05, 0.15, np.inf)   # share of the field: <2%, 2-5%, 5-15%, >15%


def bin_of(values, edges) -> np.ndarray:
    """Bin index per value for bins [edges[i], edges[i+1]) (last bin closed); -1 for NaN/None
    and values outside the edges."""
    v = np.array([np.nan if x is None else x for x in np.atleast_1d(values)], float)
    idx = np.searchsorted(np.asarray(edges, float), v, side="right") - 1
    idx[v == edges[-1]] = len(edges) - 2
    idx[~np.isfinite(v) | (idx < 0) | (idx > len(edges) - 2)] = -1
    return idx


def bin_labels(edges, pct: bool) -> list[str]:
    f = (lambda x: f"{100 * x:g}%") if pct else (lambda x: f"{x:.2f}")
    out = []
    for lo, hi in pairwise(edges):
        out.append(f">={f(lo)}" if not np.isfinite(hi) else f"<{f(hi)}" if lo <= 0 and pct else f"{f(lo)}-{f(hi)}")
    return out


def evidence_cuts(lesions: list[dict], n: int = 3) -> list[float] | None:
    """Edges of ``n`` quantile bins of the close-view lesions' evidence (None: no evidence known).
    The outer edges are 0 and 1, the scale's ends, so every lesion falls in a bin."""
    ev = [les["evidence"] for les in lesions if les["close_view"] and les["evidence"] is not None]
    if not ev:
        return None
    inner = np.quantile(ev, np.arange(1, n) / n).tolist()
    return [0.0, *inner, 1.0]


def _lesion_row(lesions: list[dict]) -> dict:
    return {"lesions": len(lesions),
            "first_call_correct": rate(sum(les["first_call"] == les["class"] for les in lesions), len(lesions)),
            "time_close_to_correct_median_s": median_time([les for les in lesions if les["close_view"]])}


def by_coverage(outcomes: list[Outcome], edges=COVERAGE_BINS) -> list[dict]:
    p = pool(outcomes)
    lesion_frames = p.scored & p.visible
    negatives = p.scored & ~p.visible
    fbin = bin_of(p.coverage, edges)
    lbin = bin_of([les["peak_coverage"] for les in p.tracks], edges)
    rows = []
    for k, label in enumerate(bin_labels(edges, pct=True)):
        f = lesion_frames & (fbin == k)
        both = f | negatives
        rows.append({"bin": label, "frames": int(f.sum()),
                     "auc_class_raw": auc(p.y[f], p.cls_raw[f]), "auc_class": auc(p.y[f], p.cls_smoothed[f]),
                     "auc_presence_raw": auc(p.visible[both], p.presence_raw[both]),
                     "frac_correct_label": float((p.states[f] == p.cls[f]).mean()) if f.any() else None,
                     **_lesion_row([les for les, b in zip(p.tracks, lbin) if b == k])})
    return rows


def by_evidence(outcomes: list[Outcome], edges) -> list[dict]:
    if not edges:
        return []
    p = pool(outcomes)
    fbin = bin_of(p.evidence, edges)
    close = [les for les in p.tracks if les["close_view"]]
    lbin = bin_of([les["evidence"] for les in close], edges)
    rows = []
    for k, label in enumerate(bin_labels(edges, pct=False)):
        f = p.close & (fbin == k)
        rows.append({"bin": label, "frames": int(f.sum()),
                     "auc_class_raw": auc(p.y[f], p.cls_raw[f]), "auc_class": auc(p.y[f], p.cls_smoothed[f]),
                     "frac_correct_label": float((p.states[f] == p.cls[f]).mean()) if f.any() else None,
                     **_lesion_row([les for les, b in zip(close, lbin) if b == k])})
    return rows


def figures(outcomes: list[Outcome], ev_median: float | None, ev_edges) -> dict:
    """Everything one setting reports for these outcomes: metrics (flat) and the two breakdowns."""
    metrics = summarise(outcomes, ev_median)
    metrics.update(modality_summary([(o.true_modality, o.pred_modality) for o in outcomes]))
    return {"metrics": metrics, "by_coverage": by_coverage(outcomes), "by_evidence": by_evidence(outcomes, ev_edges)}


def pooled_splits(outcomes: list[Outcome]) -> tuple[float | None, list[float] | None]:
    """(evidence median, evidence tertile edges) of all videos' lesions: one split for every table."""
    tracks = [t for o in outcomes for t in o.tracks]
    return evidence_median(tracks), evidence_cuts(tracks)

"""Breakdowns of the video figures by WLI evidence strength, lesion size in view and lesion
contrast, and all figures of one setting together (``figures``), as the evaluation report stores them.

* by size in view: WLI lesion frames binned by coverage (``COVERAGE_BINS``): class AUC and
  presence AUC (the bin's lesion frames against every no-lesion frame), frames carrying the
  right label; lesions binned by their peak coverage: first call right.
* by contrast: the same, binned by how much the lesion changes the picture (``CONTRAST_BINS``,
  grey levels: the truth's ``lesion_contrast``): coverage says how big a lesion is in view,
  contrast whether it can be seen at all, so this table separates lesions no model could find
  in the pixels from lesions the student misses. ``by_onset_contrast``: close-view lesions by
  their contrast over the first second of close view (first call right, time to a correct call:
  a lesion still faint when the clock starts is called later).
* by WLI evidence: cut points are quantiles of the close-view lesions' evidence (tertiles by
  default), computed once over all videos (``evidence_cuts``) so every video is cut alike;
  close-view frames binned by their own evidence (class AUC), close-view lesions by their mean
  evidence over close-view frames (first call right, time to a correct call).
Truth without coverage, evidence or contrast (older CSVs) gives empty bins, not errors.
"""
from __future__ import annotations

from itertools import pairwise

import numpy as np

from stream.video_metrics import Outcome, auc, evidence_median, median_time, pool, rate, summarise
from stream.video_metrics_modality import modality_summary

COVERAGE_BINS = (0.0, 0.02, 0.05, 0.15, np.inf)   # share of the field: <2%, 2-5%, 5-15%, >15%
CONTRAST_BINS = (0.0, 2.0, 4.0, 8.0, 16.0, np.inf)  # mean change of display luma over the lesion, grey levels


def bin_of(values, edges) -> np.ndarray:
    """Bin index per value for bins [edges[i], edges[i+1]) (last bin closed); -1 for NaN/None
    and values outside the edges."""
    v = np.array([np.nan if x is None else x for x in np.atleast_1d(values)], float)
    idx = np.searchsorted(np.asarray(edges, float), v, side="right") - 1
    idx[v == edges[-1]] = len(edges) - 2
    idx[~np.isfinite(v) | (idx < 0) | (idx > len(edges) - 2)] = -1
    return idx


def bin_labels(edges, pct: bool = False, open_scale: bool = False) -> list[str]:
    """'<2%', '2%-5%', '>=15%' for shares (``pct``); '<2', '2-4', '>=16' for a scale open at the
    top such as grey levels (``open_scale``); '0.00-0.25' for the closed 0..1 evidence scale."""
    f = (lambda x: f"{100 * x:g}%") if pct else (lambda x: f"{x:g}") if open_scale else (lambda x: f"{x:.2f}")
    out = []
    for lo, hi in pairwise(edges):
        out.append(f">={f(lo)}" if not np.isfinite(hi) else f"<{f(hi)}" if lo <= 0 and (pct or open_scale)
                   else f"{f(lo)}-{f(hi)}")
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
    return _by_lesion_frames(outcomes, "coverage", edges, bin_labels(edges, pct=True))


def by_contrast(outcomes: list[Outcome], edges=CONTRAST_BINS) -> list[dict]:
    return _by_lesion_frames(outcomes, "contrast", edges, bin_labels(edges, open_scale=True))


def by_onset_contrast(outcomes: list[Outcome], edges=CONTRAST_BINS) -> list[dict]:
    close = [les for o in outcomes for les in o.tracks if les["close_view"]]
    lbin = bin_of([les["onset_contrast"] for les in close], edges)
    return [{"bin": label, **_lesion_row([les for les, b in zip(close, lbin) if b == k])}
            for k, label in enumerate(bin_labels(edges, open_scale=True))]


def _by_lesion_frames(outcomes: list[Outcome], key: str, edges, labels: list[str]) -> list[dict]:
    """WLI lesion frames binned by their ``key`` (presence AUC against every no-lesion frame, class
    AUC, right label); lesions by its peak (first call right)."""
    p = pool(outcomes)
    lesion_frames = p.scored & p.visible
    negatives = p.scored & ~p.visible
    fbin = bin_of(getattr(p, key), edges)
    lbin = bin_of([les[f"peak_{key}"] for les in p.tracks], edges)
    rows = []
    for k, label in enumerate(labels):
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
    for k, label in enumerate(bin_labels(edges)):
        f = p.close & (fbin == k)
        rows.append({"bin": label, "frames": int(f.sum()),
                     "auc_class_raw": auc(p.y[f], p.cls_raw[f]), "auc_class": auc(p.y[f], p.cls_smoothed[f]),
                     "frac_correct_label": float((p.states[f] == p.cls[f]).mean()) if f.any() else None,
                     **_lesion_row([les for les, b in zip(close, lbin) if b == k])})
    return rows


def figures(outcomes: list[Outcome], ev_median: float | None, ev_edges) -> dict:
    """Everything one setting reports for these outcomes: metrics (flat) and the breakdowns."""
    metrics = summarise(outcomes, ev_median)
    metrics.update(modality_summary([(o.true_modality, o.pred_modality) for o in outcomes]))
    return {"metrics": metrics, "by_coverage": by_coverage(outcomes), "by_contrast": by_contrast(outcomes),
            "by_onset_contrast": by_onset_contrast(outcomes), "by_evidence": by_evidence(outcomes, ev_edges)}


def breakdowns(fig: dict) -> dict:
    """The tables of one ``figures`` result without its metrics: what a report keeps per setting."""
    return {k: v for k, v in fig.items() if k != "metrics"}


def pooled_splits(outcomes: list[Outcome]) -> tuple[float | None, list[float] | None]:
    """(evidence median, evidence tertile edges) of all videos' lesions: one split for every table."""
    tracks = [t for o in outcomes for t in o.tracks]
    return evidence_median(tracks), evidence_cuts(tracks)

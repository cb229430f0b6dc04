"""Classification metrics and bootstrap confidence intervals (numpy; scikit-learn is the tests'
reference).

Named figures (docs/training.md, "Metrics"):

- ``accuracy`` and the macro figures ``macro_precision``, ``macro_recall``, ``macro_f1``,
  ``macro_specificity`` over all K classes (per-class one-vs-rest, then the mean; for two
  classes macro specificity equals macro recall, which is why it is not *the* specificity).
- ``auc``: one-vs-rest macro ROC AUC over all K classes (two classes: the usual AUC).
- ``class_auc``, ``sensitivity``, ``specificity``: on lesion frames only, over the lesion
  classes with probabilities renormalised over them. ``class_auc`` is the AUC of the lesion
  classes (OvR macro for three); sensitivity/specificity are those of the *positive set*
  (``positive_classes``: adenoma for hyperplastic/adenoma, neoplastic = adenoma +
  adenocarcinoma for three classes): a frame is called positive when its most probable lesion
  class is in the set. Without a ``no_lesion`` class every frame is a lesion frame and
  ``class_auc`` equals ``auc``.
- With a ``no_lesion`` class (index 0): ``presence_auc`` (positive = any lesion class, score =
  1 - P(no_lesion)) and ``presence_sensitivity`` / ``presence_specificity`` (a frame is
  called a lesion when its argmax is not no_lesion).
- ``score``: the model-selection figure = mean of ``presence_auc`` and ``class_auc`` with a
  ``no_lesion`` class, else ``class_auc`` (NaN when undefined; the trainer then falls back
  to accuracy).

The bootstrap resamples whole units (the split's top-level unit: patient, else lesion), since
images of one lesion, and lesions of one patient, are not independent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from pagkd_core.outputs import NO_LESION

NEOPLASTIC = ("adenoma", "adenocarcinoma")
NAMES = (
    "accuracy", "macro_precision", "macro_recall", "macro_specificity", "macro_f1", "auc",
    "class_auc", "sensitivity", "specificity", "presence_auc", "presence_sensitivity",
    "presence_specificity", "score",
)


def positive_classes(class_names: Sequence[str] | None, k: int) -> list[int]:
    """Indices of the positive set among the lesion classes: the neoplastic ones present
    (adenoma, adenocarcinoma); else, for unknown names, the last lesion class."""
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    lesion = [i for i, n in enumerate(names) if n != NO_LESION]
    pos = [i for i in lesion if names[i] in NEOPLASTIC]
    return pos if pos and len(pos) < len(lesion) else lesion[-1:]


def positive_name(class_names: Sequence[str]) -> str:
    return "+".join(class_names[i] for i in positive_classes(class_names, len(class_names)))


def binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC from ranks (Mann-Whitney, ties averaged) = sklearn's roc_auc_score; NaN when
    one side is empty."""
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_score(y: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC of (N, K) class probabilities: of the second class for two, else one-vs-rest
    macro; NaN when a class is missing from ``y``."""
    y, probs = np.asarray(y), np.asarray(probs)
    k = probs.shape[1]
    if len(np.unique(y)) < k:
        return math.nan
    if k == 2:
        return binary_auc(y == 1, probs[:, 1])
    return float(np.mean([binary_auc(y == c, probs[:, c]) for c in range(k)]))  # = sklearn "ovr" macro


def _rates(pred_pos: np.ndarray, true_pos: np.ndarray) -> tuple[float, float]:
    """(sensitivity, specificity) of a binary decision; NaN where a side is empty."""
    sens = pred_pos[true_pos].mean() if true_pos.any() else math.nan
    spec = (~pred_pos[~true_pos]).mean() if (~true_pos).any() else math.nan
    return float(sens), float(spec)


def lesion_view(y: np.ndarray, probs: np.ndarray, class_names: Sequence[str] | None):
    """(labels, renormalised probabilities, lesion class indices) of the lesion frames only."""
    k = probs.shape[1]
    names = list(class_names) if class_names is not None else []
    lesion = [i for i in range(k) if i >= len(names) or names[i] != NO_LESION]
    if len(lesion) == k:
        return y, probs, lesion
    keep = np.isin(y, lesion)
    p = probs[keep][:, lesion]
    p = p / np.clip(p.sum(1, keepdims=True), 1e-12, None)
    remap = np.full(k, -1)
    remap[lesion] = np.arange(len(lesion))
    return remap[y[keep]], p, lesion


def classification_metrics(y, probs, class_names: Sequence[str] | None = None) -> dict[str, float]:
    """Every figure of the module docstring from labels (N,) and probabilities (N, K).
    ``class_names`` decide the positive set and whether a ``no_lesion`` class exists."""
    y = np.asarray(y, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    names = list(class_names) if class_names is not None else None
    cm = np.bincount(y * k + probs.argmax(1), minlength=k * k).reshape(k, k).astype(np.float64)
    tp, col, row = np.diag(cm), cm.sum(0), cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(col > 0, tp / col, 0.0)
        rec = np.where(row > 0, tp / row, 0.0)
        f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
        tn, fp = cm.sum() - col - row + tp, col - tp
        spec = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
    out = {
        "accuracy": float(tp.sum() / cm.sum()) if cm.sum() else math.nan,
        "macro_precision": float(prec.mean()),
        "macro_recall": float(rec.mean()),
        "macro_specificity": float(np.nanmean(spec)) if np.isfinite(spec).any() else math.nan,
        "macro_f1": float(f1.mean()),
        "auc": auc_score(y, probs),
    }
    ly, lp, lesion = lesion_view(y, probs, names)
    out["class_auc"] = auc_score(ly, lp) if len(ly) else math.nan
    pos_global = positive_classes(names, k)
    pos = np.isin(np.asarray(lesion)[lp.argmax(1)], pos_global) if len(ly) else np.zeros(0, bool)
    out["sensitivity"], out["specificity"] = _rates(pos, np.isin(np.asarray(lesion)[ly], pos_global))
    if len(lesion) < k:  # a no_lesion class exists (index 0 by the class-order rule)
        nl = next(i for i in range(k) if i not in lesion)
        is_lesion = y != nl
        out["presence_auc"] = binary_auc(is_lesion, 1.0 - probs[:, nl])
        out["presence_sensitivity"], out["presence_specificity"] = _rates(probs.argmax(1) != nl, is_lesion)
        parts = (out["presence_auc"], out["class_auc"])
        out["score"] = float(np.mean(parts)) if all(map(math.isfinite, parts)) else math.nan
    else:
        out["score"] = out["class_auc"]
    out["n"] = len(y)
    return out


def metric_value(name: str, y, probs, class_names: Sequence[str] | None = None) -> float:
    """One named figure; the AUCs without computing the rest (the paired bootstrap's inner loop)."""
    y, probs = np.asarray(y, dtype=np.int64), np.asarray(probs, dtype=np.float64)
    if name == "auc":
        return auc_score(y, probs)
    if name == "class_auc":
        ly, lp, _ = lesion_view(y, probs, class_names)
        return auc_score(ly, lp) if len(ly) else math.nan
    return classification_metrics(y, probs, class_names).get(name, math.nan)


def _unit_members(groups, n: int) -> list[np.ndarray]:
    groups = np.arange(n) if groups is None else np.asarray(groups)
    _, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    return np.split(order, np.cumsum(np.bincount(inverse))[:-1])


def _percentile(values: list[float], level: float) -> list[float]:
    v = [x for x in values if math.isfinite(x)]
    a = (1 - level) / 2 * 100
    return [float(np.percentile(v, a)), float(np.percentile(v, 100 - a))] if v else [math.nan, math.nan]


def bootstrap_ci(y, probs, groups=None, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                 class_names: Sequence[str] | None = None) -> dict:
    """Percentile intervals {metric: [lo, hi]} from resampling `groups` (units: patients or
    lesions; None = images) with replacement."""
    y, probs = np.asarray(y), np.asarray(probs)
    members = _unit_members(groups, len(y))
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {m: [] for m in NAMES}
    for _ in range(n_boot):
        idx = np.concatenate([members[g] for g in rng.integers(len(members), size=len(members))])
        m = classification_metrics(y[idx], probs[idx], class_names)
        for name in NAMES:
            if name in m:
                draws[name].append(m[name])
    return {name: _percentile(v, level) for name, v in draws.items() if v}


def paired_bootstrap_diff(y, probs_a: Sequence[np.ndarray], probs_b: Sequence[np.ndarray] | None, groups,
                          metric: str = "class_auc", class_names: Sequence[str] | None = None,
                          n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Difference of ``metric`` between methods A and B on the same test images.

    ``probs_a[s]`` / ``probs_b[s]``: (N, K) predictions of training seed s (paired: seed s of A
    and of B share the teacher and the student's initialisation). Each resample draws units
    (``groups``) and seeds with replacement, the same draw for A and B; the statistic is the
    mean over the drawn seeds of metric(A_s) - metric(B_s). The interval thus covers both
    test-sample and training-seed variation. Returns the point estimate (all units, all
    seeds), the interval, the per-seed differences and the share of resamples with A > B.
    ``probs_b`` None: B scores 0, i.e. the same resampling gives A's own value and interval.
    """
    y = np.asarray(y)
    if probs_b is not None and len(probs_a) != len(probs_b) or not len(probs_a):
        raise ValueError("paired bootstrap needs the same (non-zero) number of seeds for both methods")
    probs_b = probs_b if probs_b is not None else [None] * len(probs_a)

    def value(p, idx):
        if p is None:
            return 0.0
        return metric_value(metric, y[idx], np.asarray(p)[idx], class_names)

    everything = np.arange(len(y))
    per_seed = [value(a, everything) - value(b, everything) for a, b in zip(probs_a, probs_b)]
    members = _unit_members(groups, len(y))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        idx = np.concatenate([members[g] for g in rng.integers(len(members), size=len(members))])
        seeds = rng.integers(len(probs_a), size=len(probs_a))
        d = [value(probs_a[s], idx) - value(probs_b[s], idx) for s in seeds]
        draws.append(float(np.mean(d)) if all(map(math.isfinite, d)) else math.nan)
    finite = [d for d in draws if math.isfinite(d)]
    return {
        "diff": float(np.mean(per_seed)),
        "ci95": _percentile(draws, level),
        "per_seed": [float(d) for d in per_seed],
        "p_greater": float(np.mean([d > 0 for d in finite])) if finite else math.nan,
        "n_units": len(members),
        "n_seeds": len(probs_a),
    }

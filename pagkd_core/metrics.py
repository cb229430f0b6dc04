"""Classification metrics (scikit-learn) and bootstrap confidence intervals.

Macro averages over classes; specificity of class c = TN / (TN + FP) in one-vs-rest; AUC is
one-vs-rest macro (binary: the usual AUC). The bootstrap resamples whole lesions (clusters) by
default, since images of one lesion are not independent.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

NAMES = ("accuracy", "precision", "recall", "specificity", "f1", "auc")


def classification_metrics(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    y = np.asarray(y, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    pred = probs.argmax(1)
    labels = list(range(k))
    prec, rec, f1, _ = precision_recall_fscore_support(
        y, pred, labels=labels, average="macro", zero_division=0
    )
    cm = confusion_matrix(y, pred, labels=labels)
    fp = cm.sum(0) - np.diag(cm)
    tn = cm.sum() - cm.sum(0) - cm.sum(1) + np.diag(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        spec = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
    present = np.unique(y)
    if len(present) < k:
        auc = math.nan  # one-vs-rest AUC needs positives and negatives of every class
    elif k == 2:
        auc = roc_auc_score(y, probs[:, 1])
    else:
        auc = roc_auc_score(
            y, probs / probs.sum(1, keepdims=True), multi_class="ovr", average="macro", labels=labels
        )
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "precision": float(prec),
        "recall": float(rec),
        "specificity": float(np.nanmean(spec)) if np.isfinite(spec).any() else math.nan,
        "f1": float(f1),
        "auc": float(auc),
        "n": len(y),
    }


def auc_score(y: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC of (N, K) class probabilities: of the second class for two, else one-vs-rest
    macro; NaN when a class is missing from ``y``."""
    k = probs.shape[1]
    if len(np.unique(y)) < k:
        return math.nan
    if k == 2:
        return float(roc_auc_score(y, probs[:, 1]))
    return float(np.mean([roc_auc_score(y == c, probs[:, c]) for c in range(k)]))  # = sklearn "ovr" macro


def fast_metrics(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Same numbers as `classification_metrics` from one confusion matrix (numpy), for the many
    bootstrap resamples where scikit-learn's input checking dominates the run time."""
    k = probs.shape[1]
    cm = np.bincount(y * k + probs.argmax(1), minlength=k * k).reshape(k, k).astype(np.float64)
    tp, col, row = np.diag(cm), cm.sum(0), cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(col > 0, tp / col, 0.0)
        rec = np.where(row > 0, tp / row, 0.0)
        f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
        tn, fp = cm.sum() - col - row + tp, col - tp
        spec = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
    return {
        "accuracy": float(tp.sum() / cm.sum()),
        "precision": float(prec.mean()),
        "recall": float(rec.mean()),
        "specificity": float(np.nanmean(spec)) if np.isfinite(spec).any() else math.nan,
        "f1": float(f1.mean()),
        "auc": auc_score(y, probs),
    }


def bootstrap_ci(y, probs, groups=None, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile intervals {metric: [lo, hi]} from resampling `groups` (or images) with replacement."""
    y, probs = np.asarray(y), np.asarray(probs)
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    draws = {m: [] for m in NAMES}
    for _ in range(n_boot):
        idx = np.concatenate([members[g] for g in rng.integers(len(uniq), size=len(uniq))])
        m = fast_metrics(y[idx], probs[idx])
        for name in NAMES:
            if math.isfinite(m[name]):
                draws[name].append(m[name])
    a = (1 - level) / 2 * 100
    return {
        name: ([float(np.percentile(v, a)), float(np.percentile(v, 100 - a))] if v else [math.nan, math.nan])
        for name, v in draws.items()
    }

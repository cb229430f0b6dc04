"""Metrics against scikit-learn on random data; bootstrap intervals; pooled evaluation report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score
from test_core_fixtures import TINY, make_generic

from pagkd_core.config import load_config
from pagkd_core.evaluate import evaluate
from pagkd_core.metrics import bootstrap_ci, classification_metrics, fast_metrics
from pagkd_core.train import train_stage


@pytest.mark.parametrize("k", [2, 3, 4])
def test_metrics_match_sklearn(k):
    rng = np.random.default_rng(k)
    for _ in range(5):
        y = rng.integers(0, k, 200)
        y[:k] = np.arange(k)
        logits = rng.normal(size=(200, k)) + 1.5 * np.eye(k)[y] * rng.uniform()
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        pred = probs.argmax(1)
        m = classification_metrics(y, probs)
        assert m["accuracy"] == pytest.approx((pred == y).mean())
        assert m["precision"] == pytest.approx(precision_score(y, pred, average="macro", zero_division=0))
        assert m["recall"] == pytest.approx(recall_score(y, pred, average="macro", zero_division=0))
        assert m["f1"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
        ref_auc = roc_auc_score(y, probs[:, 1]) if k == 2 else roc_auc_score(y, probs, multi_class="ovr")
        assert m["auc"] == pytest.approx(ref_auc)
        # specificity of class c = recall of "not c"
        spec = np.mean([recall_score(y != c, pred != c) for c in range(k)])
        assert m["specificity"] == pytest.approx(spec)
        fast = fast_metrics(y, probs)  # the bootstrap's path gives the same numbers
        assert all(fast[n] == pytest.approx(m[n]) for n in fast)


def test_auc_undefined_when_a_class_is_missing():
    m = classification_metrics(np.array([0, 0, 0]), np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]))
    assert np.isnan(m["auc"]) and m["accuracy"] == pytest.approx(2 / 3)


def test_bootstrap_interval_contains_estimate_and_shrinks():
    rng = np.random.default_rng(0)

    def sample(n):
        y = rng.integers(0, 2, n)
        p1 = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.25, n), 0, 1)
        return y, np.stack([1 - p1, p1], 1)

    y, p = sample(100)
    ci = bootstrap_ci(y, p, n_boot=200)
    m = classification_metrics(y, p)
    assert ci["auc"][0] <= m["auc"] <= ci["auc"][1]
    y2, p2 = sample(1000)
    ci2 = bootstrap_ci(y2, p2, n_boot=200)
    assert ci2["auc"][1] - ci2["auc"][0] < ci["auc"][1] - ci["auc"][0]
    groups = np.repeat(np.arange(50), 2)  # clustered: intervals from 50 lesions, not 100 images
    assert bootstrap_ci(y, p, groups, n_boot=50, seed=1) == bootstrap_ci(y, p, groups, n_boot=50, seed=1)


def test_pooled_evaluation_report(tmp_path):
    root = make_generic(tmp_path / "data")
    cfg = load_config(
        None,
        [
            *TINY,
            f"data.root={root}",
            f"run.out_dir={tmp_path / 'run'}",
            "distill.method=none",
            "optim.epochs=1",
        ],
    )
    for fold in range(cfg.data.folds):
        train_stage(
            load_config(
                None,
                [
                    *TINY,
                    f"data.root={root}",
                    f"run.out_dir={tmp_path / 'run'}",
                    "distill.method=none",
                    "optim.epochs=1",
                    f"data.fold={fold}",
                ],
            ),
            "student",
        )
    s = evaluate(cfg, "student", n_boot=50)
    n_wli = sum(1 for line in (root / "manifest.csv").read_text().splitlines()[1:] if ",WLI," in line)
    assert s["n_images"] == n_wli, "every WLI image is tested exactly once across the folds"
    out = tmp_path / "run" / "eval-student"
    for f in ("report.json", "report.md", "confusion.png", "roc.png", "predictions.csv"):
        assert (out / f).stat().st_size > 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["synthetic"] is True and set(rep["ci95"]) >= {"auc", "accuracy", "specificity"}
    assert "synthetic" in (out / "report.md").read_text()
    with pytest.raises(FileNotFoundError, match="fold checkpoint"):
        evaluate(cfg, "teacher", n_boot=10)

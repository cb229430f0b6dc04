"""Metrics against scikit-learn on random data; bootstrap intervals; pooled evaluation report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score
from test_core_fixtures import TINY, make_generic

from pagkd_core.config import load_config
from pagkd_core.evaluate import evaluate, summarise
from pagkd_core.metrics import (
    binary_auc,
    bootstrap_ci,
    classification_metrics,
    paired_bootstrap_diff,
    positive_classes,
)
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
        assert m["macro_precision"] == pytest.approx(precision_score(y, pred, average="macro", zero_division=0))
        assert m["macro_recall"] == pytest.approx(recall_score(y, pred, average="macro", zero_division=0))
        assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
        ref_auc = roc_auc_score(y, probs[:, 1]) if k == 2 else roc_auc_score(y, probs, multi_class="ovr")
        assert m["auc"] == pytest.approx(ref_auc) and m["class_auc"] == pytest.approx(ref_auc)
        assert m["score"] == m["class_auc"] and "presence_auc" not in m  # no no_lesion class
        # macro specificity: mean over classes of the recall of "not c"
        spec = np.mean([recall_score(y != c, pred != c) for c in range(k)])
        assert m["macro_specificity"] == pytest.approx(spec)


def test_binary_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + y, 1)  # many ties
    assert binary_auc(y == 1, s) == pytest.approx(roc_auc_score(y, s))
    assert np.isnan(binary_auc(np.ones(3, bool), np.arange(3.0)))


def test_two_class_specificity_is_for_the_named_positive_class():
    # adenoma positive: sensitivity = recall of adenoma, specificity = recall of hyperplastic. The
    # old macro specificity equalled macro recall for two classes (same number twice).
    names = ["hyperplastic", "adenoma"]
    y = np.array([0] * 10 + [1] * 10)
    pred = np.array([0] * 9 + [1] + [1] * 6 + [0] * 4)  # hyperplastic recall 0.9, adenoma 0.6
    probs = np.eye(2)[pred] * 0.8 + 0.1
    m = classification_metrics(y, probs, names)
    assert m["sensitivity"] == pytest.approx(0.6) and m["specificity"] == pytest.approx(0.9)
    assert m["macro_recall"] == pytest.approx(0.75) and m["specificity"] != pytest.approx(m["macro_recall"])
    assert positive_classes(names, 2) == [1]


def test_three_class_sensitivity_is_neoplastic_vs_not():
    names = ["hyperplastic", "adenoma", "adenocarcinoma"]
    assert positive_classes(names, 3) == [1, 2]
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 0, 1, 2, 0, 1, 2])  # adenoma <-> carcinoma confusions are still neoplastic
    m = classification_metrics(y, np.eye(3)[pred] * 0.7 + 0.1, names)
    assert m["sensitivity"] == pytest.approx(3 / 4) and m["specificity"] == pytest.approx(3 / 4)


def test_no_lesion_presence_and_lesion_class_figures():
    names = ["no_lesion", "hyperplastic", "adenoma"]
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    logits = rng.normal(size=(120, 3)) + 2.0 * np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = classification_metrics(y, probs, names)
    assert m["presence_auc"] == pytest.approx(roc_auc_score(y > 0, 1 - probs[:, 0]))
    les = y > 0
    renorm = probs[les][:, 1:] / probs[les][:, 1:].sum(1, keepdims=True)
    assert m["class_auc"] == pytest.approx(roc_auc_score(y[les] == 2, renorm[:, 1]))
    pred_ad = renorm.argmax(1) == 1
    assert m["sensitivity"] == pytest.approx(pred_ad[y[les] == 2].mean())
    assert m["specificity"] == pytest.approx((~pred_ad)[y[les] == 1].mean())
    assert m["presence_sensitivity"] == pytest.approx((probs.argmax(1) != 0)[les].mean())
    assert m["score"] == pytest.approx((m["presence_auc"] + m["class_auc"]) / 2)
    assert positive_classes(names, 3) == [2]


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


def test_summary_bootstraps_patients_when_known():
    # Folds are made by patient: the interval must resample patients, not lesions.
    rng = np.random.default_rng(1)
    n = 60
    y = np.tile([0, 1], n // 2)
    p1 = np.clip(0.5 + 0.2 * (y - 0.5) + rng.normal(0, 0.3, n), 0, 1)
    pred = {"labels": y, "probs": np.stack([1 - p1, p1], 1), "lesions": [f"l{i // 2}" for i in range(n)],
            "patients": [f"p{i // 10}" for i in range(n)], "folds": [0] * n, "fold_list": [0],
            "class_names": ["hyperplastic", "adenoma"], "modality": "WLI", "stage": "student"}
    s = summarise(pred, n_boot=40, seed=2)
    assert s["bootstrap"]["unit"] == "patient" and s["n_units"] == 6
    ref = bootstrap_ci(y, pred["probs"], pred["patients"], n_boot=40, seed=2, class_names=pred["class_names"])
    assert s["ci95"]["class_auc"] == ref["class_auc"]
    s2 = summarise(dict(pred, patients=pred["lesions"]), n_boot=40, seed=2)
    assert s2["bootstrap"]["unit"] == "lesion" and s2["n_units"] == 30


def test_paired_bootstrap_difference():
    n = 200
    y = np.tile([0, 1], n // 2)
    groups = np.arange(n) // 2

    def probs(signal, seed):
        r = np.random.default_rng(seed)
        p1 = 1 / (1 + np.exp(-(signal * (y - 0.5) + r.normal(0, 1, n))))
        return np.stack([1 - p1, p1], 1)

    good = [probs(3.0, s) for s in range(3)]
    bad = [probs(0.5, 10 + s) for s in range(3)]
    d = paired_bootstrap_diff(y, good, bad, groups, n_boot=200, seed=0)
    assert d["ci95"][0] > 0 and d["diff"] > 0 and d["n_units"] == 100 and d["n_seeds"] == 3
    same = paired_bootstrap_diff(y, good, good, groups, n_boot=50, seed=0)
    assert same["diff"] == 0 and same["ci95"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="same"):
        paired_bootstrap_diff(y, good, bad[:2], groups)


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
    assert rep["synthetic"] is True and set(rep["ci95"]) >= {"auc", "accuracy", "specificity", "sensitivity"}
    assert rep["positive_class"] == "adenoma" and rep["bootstrap"]["unit"] == "lesion"
    assert rep["grad_norm"]["epochs"] == [1] and rep["grad_norm"]["ce"][0] > 0
    assert "Gradient norm" in (out / "report.md").read_text()
    assert "synthetic" in (out / "report.md").read_text()
    with pytest.raises(FileNotFoundError, match="fold checkpoint"):
        evaluate(cfg, "teacher", n_boot=10)

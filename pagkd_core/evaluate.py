"""Pooled k-fold evaluation: each fold's selected model predicts its own test fold; the
predictions of all folds are pooled and the metrics computed once, with bootstrap intervals
over lesions.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from pagkd_core.checkpoint import load_weights
from pagkd_core.config import Config
from pagkd_core.data import ImageSet, prepare
from pagkd_core.metrics import bootstrap_ci, classification_metrics
from pagkd_core.models import LesionNet, model_from_config

log = logging.getLogger("pagkd_core.evaluate")


@torch.no_grad()
def predict(
    model: LesionNet, images: ImageSet, device="cpu", batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (N, K) and labels (N,) on un-augmented images."""
    was_training = model.training
    model.eval()
    probs = []
    for x, _ in DataLoader(images, batch_size=batch_size, shuffle=False):
        probs.append(torch.softmax(model(x.to(device)).float(), dim=1).cpu())
    model.train(was_training)
    k = model.num_classes
    return (torch.cat(probs).numpy() if probs else np.zeros((0, k))), np.asarray(
        images.labels, dtype=np.int64
    )


def pooled_predictions(
    cfg: Config,
    stage: str = "student",
    folds: list[int] | None = None,
    modality: str | None = None,
    device: str = "cpu",
    data=None,
) -> dict:
    """Run every fold's best checkpoint of `stage` on its test fold. Teacher: NBI, else WLI."""
    from pagkd_core.train import stage_dir

    modality = modality or ("NBI" if stage == "teacher" else "WLI")
    data = data or prepare(cfg, cfg.run.out_dir, progress=cfg.run.progress)
    folds = list(range(cfg.data.folds)) if folds is None else folds
    spec = cfg.teacher if stage == "teacher" else cfg.student
    ckpts = {
        f: stage_dir(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, fold=f)), stage)
        / "best.safetensors"
        for f in folds
    }
    missing = [str(p) for p in ckpts.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} fold checkpoint(s) missing, first: {missing[0]}; train those "
            f"folds or pass --folds with the trained ones"
        )
    rows = {"probs": [], "labels": [], "lesions": [], "folds": [], "paths": []}
    for f in folds:
        model = model_from_config(spec, len(data.class_names), cfg.distill.embed_dim, pretrained=False)
        load_weights(ckpts[f], {"model": model})
        test = dataclasses.replace(data, fold=f).images("test", modality)
        probs, labels = predict(model.to(device), test, device)
        rows["probs"].append(probs)
        rows["labels"].append(labels)
        rows["lesions"] += [s.lesion for s in test.samples]
        rows["folds"] += [f] * len(test)
        rows["paths"] += [s.path for s in test.samples]
    return {
        "probs": np.concatenate(rows["probs"]),
        "labels": np.concatenate(rows["labels"]),
        "lesions": rows["lesions"],
        "folds": rows["folds"],
        "paths": rows["paths"],
        "class_names": data.class_names,
        "modality": modality,
        "stage": stage,
        "fold_list": folds,
    }


def summarise(pred: dict, n_boot: int = 1000, seed: int = 0) -> dict:
    m = classification_metrics(pred["labels"], pred["probs"])
    ci = bootstrap_ci(pred["labels"], pred["probs"], pred["lesions"], n_boot=n_boot, seed=seed)
    per_fold = {}
    folds = np.asarray(pred["folds"])
    for f in pred["fold_list"]:
        sel = folds == f
        per_fold[str(f)] = classification_metrics(pred["labels"][sel], pred["probs"][sel])
    return {
        "metrics": m,
        "ci95": ci,
        "per_fold": per_fold,
        "n_images": len(pred["labels"]),
        "n_lesions": len(set(pred["lesions"])),
        "class_names": pred["class_names"],
        "modality": pred["modality"],
        "stage": pred["stage"],
        "bootstrap": {"n": n_boot, "unit": "lesion"},
    }


def write_predictions(pred: dict, path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "lesion", "fold", "label", *[f"p_{c}" for c in pred["class_names"]]])
        for i, p in enumerate(pred["probs"]):
            w.writerow(
                [
                    pred["paths"][i],
                    pred["lesions"][i],
                    pred["folds"][i],
                    int(pred["labels"][i]),
                    *[f"{v:.6f}" for v in p],
                ]
            )


def evaluate(
    cfg: Config,
    stage: str = "student",
    folds: list[int] | None = None,
    out: str | Path | None = None,
    n_boot: int = 1000,
) -> dict:
    """Pool, summarise and write report.{json,md}, confusion.png, roc.png, predictions.csv."""
    from pagkd_core.report import write_report

    pred = pooled_predictions(cfg, stage, folds)
    summary = summarise(pred, n_boot=n_boot, seed=cfg.run.seed)
    out = Path(out) if out else Path(cfg.run.out_dir) / f"eval-{stage}"
    out.mkdir(parents=True, exist_ok=True)
    write_predictions(pred, out / "predictions.csv")
    write_report(summary, pred, out, title=f"{stage} on {pred['modality']} ({cfg.run.out_dir})")
    return summary

"""Pooled k-fold evaluation: each fold's selected model predicts its own test fold; the
predictions of all folds are pooled and the metrics computed once, with bootstrap intervals
over the split's top-level unit (patients when the data name them, else lesions: folds are
made by patient, so lesions of one patient are not independent test units).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from pagkd_core.checkpoint import load_weights
from pagkd_core.config import Config, stage_dir
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
    modality = modality or ("NBI" if stage == "teacher" else "WLI")
    data = data or prepare(cfg, cfg.run.out_dir, progress=cfg.run.progress)
    folds = list(range(cfg.data.folds)) if folds is None else folds
    spec = cfg.teacher if stage == "teacher" else cfg.student
    ckpts = {f: stage_dir(cfg, stage, f) / "best.safetensors" for f in folds}
    missing = [str(p) for p in ckpts.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} fold checkpoint(s) missing, first: {missing[0]}; train those "
            f"folds or pass --folds with the trained ones"
        )
    rows = {"probs": [], "labels": [], "lesions": [], "patients": [], "folds": [], "paths": []}
    for f in folds:
        model = model_from_config(spec, data.class_names, cfg.distill.embed_dim, pretrained=False)
        load_weights(ckpts[f], {"model": model})
        test = dataclasses.replace(data, fold=f).images("test", modality)
        probs, labels = predict(model.to(device), test, device)
        rows["probs"].append(probs)
        rows["labels"].append(labels)
        rows["lesions"] += [s.lesion for s in test.samples]
        rows["patients"] += [s.patient for s in test.samples]
        rows["folds"] += [f] * len(test)
        rows["paths"] += [s.path for s in test.samples]
    return {
        "probs": np.concatenate(rows["probs"]),
        "labels": np.concatenate(rows["labels"]),
        "lesions": rows["lesions"],
        "patients": rows["patients"],
        "folds": rows["folds"],
        "paths": rows["paths"],
        "class_names": data.class_names,
        "modality": modality,
        "stage": stage,
        "fold_list": folds,
    }


def bootstrap_units(pred: dict) -> tuple[str, list[str]]:
    """The split's top-level unit and each image's unit id: patient when any patient id differs
    from its lesion id (the data name patients), else lesion."""
    patients = pred.get("patients") or pred["lesions"]
    if any(p != les for p, les in zip(patients, pred["lesions"])):
        return "patient", list(patients)
    return "lesion", list(pred["lesions"])


def summarise(pred: dict, n_boot: int = 1000, seed: int = 0) -> dict:
    from pagkd_core.metrics import positive_name

    names = pred["class_names"]
    m = classification_metrics(pred["labels"], pred["probs"], names)
    unit, groups = bootstrap_units(pred)
    ci = bootstrap_ci(pred["labels"], pred["probs"], groups, n_boot=n_boot, seed=seed, class_names=names)
    per_fold = {}
    folds = np.asarray(pred["folds"])
    for f in pred["fold_list"]:
        sel = folds == f
        per_fold[str(f)] = classification_metrics(pred["labels"][sel], pred["probs"][sel], names)
    return {
        "metrics": m,
        "ci95": ci,
        "per_fold": per_fold,
        "n_images": len(pred["labels"]),
        "n_lesions": len(set(pred["lesions"])),
        "n_units": len(set(groups)),
        "class_names": pred["class_names"],
        "positive_class": positive_name(names),
        "modality": pred["modality"],
        "stage": pred["stage"],
        "bootstrap": {"n": n_boot, "unit": unit},
    }


def grad_norm_history(cfg: Config, stage: str, folds: list[int]) -> dict:
    """Per-loss backbone gradient norms per epoch (run.grad_norm_every), averaged over the folds
    whose last.json records them: {"epochs": [...], "<loss>": [...]} or {} when none do."""
    per_epoch: dict[int, dict[str, list[float]]] = {}
    for f in folds:
        path = stage_dir(cfg, stage, f) / "last.json"
        if not path.is_file():
            continue
        for rec in json.loads(path.read_text()).get("history", []):
            for k, v in (rec.get("grad_norm") or {}).items():
                per_epoch.setdefault(rec["epoch"], {}).setdefault(k, []).append(v)
    if not per_epoch:
        return {}
    losses = sorted({k for e in per_epoch.values() for k in e}, key=lambda k: (k != "ce", k))
    epochs = sorted(per_epoch)
    out: dict = {"epochs": epochs}
    for k in losses:
        out[k] = [float(np.mean(per_epoch[e][k])) if k in per_epoch[e] else float("nan") for e in epochs]
    return out


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
    summary["grad_norm"] = grad_norm_history(cfg, "teacher" if stage == "teacher" else stage, pred["fold_list"])
    out = Path(out) if out else Path(cfg.run.out_dir) / f"eval-{stage}"
    out.mkdir(parents=True, exist_ok=True)
    write_predictions(pred, out / "predictions.csv")
    write_report(summary, pred, out, title=f"{stage} on {pred['modality']} ({cfg.run.out_dir})")
    return summary

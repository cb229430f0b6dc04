"""Tiny on-disk datasets for the training-core tests (no tests here; imported by test_core_*).

Class 0 ('hyperplastic') is a smooth blob, class 1 ('adenoma') a striped one; NBI renders the
same lesion greener. Enough signal that a few steps of training move the loss."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("hyperplastic", "adenoma")
TINY = [
    "data.image_size=32",
    "data.folds=2",
    "data.val_fraction=0.34",
    "data.cache=true",
    "student.backbone=resnet10t",
    "teacher.backbone=resnet10t",
    "optim.epochs=2",
    "optim.batch_size=4",
    "optim.steps_per_epoch=2",
    "teacher_optim.epochs=1",
    "teacher_optim.batch_size=4",
    "teacher_optim.steps_per_epoch=2",
    "run.progress=false",
    "distill.warmup_epochs=0",
    "distill.n_queries=4",
    "distill.par_iters=2",
    "run.threads=1",
]


def lesion_image(cls: int, modality: str, rng: np.random.Generator, size: int = 40) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    cx, cy = rng.uniform(0.35, 0.65, 2)
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.05)
    pattern = 0.5 + 0.5 * np.sin(xx * 40 + rng.uniform(0, 6)) if cls == 1 else np.ones_like(xx)
    base = np.array([0.8, 0.4, 0.35]) if modality == "WLI" else np.array([0.3, 0.6, 0.5])
    img = base[None, None] * (0.5 + 0.5 * blob * pattern)[..., None] + rng.normal(0, 0.03, (size, size, 3))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_generic(
    root: Path,
    lesions_per_class: int = 6,
    views: int = 2,
    seed: int = 0,
    manifest: bool = True,
    paired_every: int = 2,
) -> Path:
    """<root>/<WLI|NBI>/<class>/<lesion>_<n>.png (+ manifest.csv). Every `paired_every`-th lesion
    has both modalities; the others alternate between WLI only and NBI only."""
    rng = np.random.default_rng(seed)
    rows = []
    for c, name in enumerate(CLASSES):
        for i in range(lesions_per_class):
            lesion = f"{name[:3]}{i:03d}"
            mods = ("WLI", "NBI") if i % paired_every == 0 else (("WLI",) if i % 2 else ("NBI",))
            for m in mods:
                d = root / m / name
                d.mkdir(parents=True, exist_ok=True)
                for v in range(views):
                    rel = f"{m}/{name}/{lesion}_{v}.png"
                    Image.fromarray(lesion_image(c, m, rng)).save(root / rel)
                    rows.append([rel, lesion, name, m, v, int(len(mods) == 2)])
    if manifest:
        with open(root / "manifest.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "lesion_id", "class", "modality", "view", "paired"])
            w.writerows(rows)
    return root


def exported_student(cfg, name: str, out: Path) -> Path:
    """A student trained with ``cfg`` (pagkd_core.train) and exported as ``out`` (no ONNX), to be
    continued with ``student.pretrained=<out>.safetensors``: returns that .safetensors path."""
    from pagkd_core.cli import main
    from pagkd_core.config import stage_dir
    from pagkd_core.train import train_stage

    train_stage(cfg, "student", name=name)
    code = main(["export", "--config", str(stage_dir(cfg, name) / "config.json"), "--name", name,
                 "--out", str(out), "--no-onnx"])  # fmt: skip
    assert code in (0, None), f"export of {name} failed: {code}"
    return out.with_name(out.name + ".safetensors")

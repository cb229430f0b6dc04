"""The training runs of `python -m benchmarks.distill` and their cached test predictions.

Layout under --out: splits.json (one split for every seed, regime and row), then per training
seed s: seed<s>/fold<k>/teacher (one NBI teacher per seed and fold, shared by every row and
both regimes: it never sees WLI data) and seed<s>/fold<k>/<regime>.<row> (one student each).
A finished stage (last epoch reached) is skipped; an interrupted one resumes from its last
epoch. Each stage's test-fold predictions are cached next to it (test_predictions.json), so the
tables can be rebuilt from pieces run at different times or on different hosts.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pagkd_core.config import Config
from pagkd_core.evaluate import pooled_predictions
from pagkd_core.train import resume_key, stage_dir, train_stage

# name -> (table label, distill overrides, needs true pairs)
ROWS: dict[str, tuple[str, dict, bool]] = {
    "wli_only": ("WLI-only (cross-entropy)", {"method": "none"}, False),
    "pagkd": ("PaGKD (GKD-Pro + GKD-Den)", {"method": "pro+den", "level": "group"}, False),
    "gkd_pro": ("GKD-Pro only", {"method": "pro", "level": "group"}, False),
    "gkd_den": ("GKD-Den only", {"method": "den", "level": "group"}, False),
    "swap": (
        "Control: class-swapped teacher (PaGKD, WLI c grouped with NBI c+1)",
        {"method": "pro+den", "level": "group", "teacher_class_shift": 1},
        False,
    ),
    # Transfer without the method: the student starts from the NBI teacher's backbone. If this
    # helps and PaGKD does not, the NBI data hold knowledge the method fails to pass on.
    "tinit": ("WLI-only, backbone from the NBI teacher", {"method": "none", "init_from_teacher": True}, False),
    "tinit_pagkd": (
        "PaGKD, backbone from the NBI teacher",
        {"method": "pro+den", "level": "group", "init_from_teacher": True},
        False,
    ),
    "img_both": ("Image-level Pro + Den", {"method": "pro+den", "level": "image"}, False),
    "img_pro": ("Image-level Pro", {"method": "pro", "level": "image"}, False),
    "img_den": ("Image-level Den", {"method": "den", "level": "image"}, False),
    "logit_kd": ("Logit KD, paired data", {"method": "kd", "pairing": "true"}, True),
    "add": (
        "Image-level dense (ADD-style), paired data",
        {"method": "add", "level": "image", "pairing": "true"},
        True,
    ),
}
BASELINE, METHOD = "wli_only", "pagkd"  # every row is compared with both
REGIMES = {
    "full": "all WLI training labels",
    "few": "few labels: N WLI training lesions per class (seeded, whole lesions), all NBI data",
}


@dataclass
class Plan:
    base: Config  # data root, image size, schedules, ...; run.out_dir = the benchmark's --out
    seeds: list[int]
    folds: list[int]
    few_lesions: int = 10
    few_steps: int = 0  # few-labels regime's steps per epoch (0: one pass over its images)

    @property
    def out(self) -> Path:
        return Path(self.base.run.out_dir)

    def config(self, seed: int, fold: int, regime: str = "full", row: str | None = None,
               distill: dict | None = None) -> Config:
        """The run's config; `distill`: overrides on top of the row's (the validation sweep)."""
        c = self.base
        data = dataclasses.replace(c.data, fold=fold)
        optim = c.optim
        if regime == "few":
            data = dataclasses.replace(data, wli_train_lesions=self.few_lesions)
            # Same number of optimiser steps as the full regime: with 10 lesions per class one
            # pass is a handful of steps and the distillation losses would barely act.
            if not optim.steps_per_epoch and self.few_steps:
                optim = dataclasses.replace(optim, steps_per_epoch=self.few_steps)
        distill = dataclasses.replace(c.distill, **{**(ROWS[row][1] if row else {}), **(distill or {})})
        run = dataclasses.replace(c.run, seed=seed, out_dir=str(self.out / f"seed{seed}"))
        return dataclasses.replace(c, data=data, optim=optim, distill=distill, run=run)


def stage_name(regime: str, row: str) -> str:
    return f"{regime}.{row}"


def _key(cfg: Config, stage: str) -> str:
    return resume_key(cfg.to_dict(), "teacher" if stage == "teacher" else "student")


def _saved_key(where: Path) -> tuple[str, int] | None:
    """(settings key, epochs reached) of the run saved in `where`, keyed by today's resume_key
    (so a key that learned to ignore a setting applies to runs made before it did)."""
    last = where / "last.json"
    if not last.is_file():
        return None
    state = json.loads(last.read_text())
    return resume_key(state["config"], state["stage"]), state.get("epoch", 0)


def finished(cfg: Config, stage: str) -> bool:
    """The stage reached its last epoch with these settings (other settings: the trainer refuses)."""
    saved = _saved_key(stage_dir(cfg, stage))
    epochs = cfg.teacher_optim.epochs if stage == "teacher" else cfg.optim.epochs
    return saved is not None and saved[1] >= epochs and saved[0] == _key(cfg, stage)


def run_stage(cfg: Config, stage: str, data) -> None:
    """Train one stage unless it has finished (then its cached predictions are still made)."""
    if not finished(cfg, stage):
        train_stage(cfg, "teacher" if stage == "teacher" else "student", resume=True, name=stage, data=data)
    fold_predictions(cfg, stage, data)


def fold_predictions(cfg: Config, stage: str, data=None) -> dict | None:
    """This stage's predictions on its test fold, cached in test_predictions.json (remade when
    the selected weights are newer). None when the stage has no selected model yet."""
    where = stage_dir(cfg, stage)
    cache, best = where / "test_predictions.json", where / "best.safetensors"
    if not best.is_file():
        return None
    if cache.is_file() and cache.stat().st_mtime >= best.stat().st_mtime:
        got = json.loads(cache.read_text())
        saved = _saved_key(where)
        if (saved[0] if saved else got.get("key")) != _key(cfg, stage):
            raise ValueError(f"{where} was trained with other settings than these options ask for; "
                             f"use the original options (see its config.json) or another --out")
        return got
    if data is None:
        return None
    import torch

    device = "cuda" if cfg.run.device in ("cuda", "auto") and torch.cuda.is_available() else "cpu"
    p = pooled_predictions(cfg, stage, folds=[cfg.data.fold], data=data, device=device)
    out = {
        "probs": np.asarray(p["probs"]).tolist(),
        "labels": np.asarray(p["labels"]).tolist(),
        **{k: list(p[k]) for k in ("lesions", "patients", "paths")},
        "class_names": list(p["class_names"]),
        "modality": p["modality"],
        "fold": cfg.data.fold,
        "key": _key(cfg, stage),  # the settings it was trained with (train.resume_key)
    }
    tmp = cache.with_name(cache.name + ".tmp")
    tmp.write_text(json.dumps(out) + "\n")
    tmp.replace(cache)
    return out


def pooled(plan: Plan, regime: str, row: str | None, seed: int) -> dict | None:
    """One seed's test predictions pooled over the plan's folds (row None = the teacher), or
    None if any fold is missing."""
    parts = []
    for f in plan.folds:
        cfg = plan.config(seed, f, regime, row)
        p = fold_predictions(cfg, "teacher" if row is None else stage_name(regime, row))
        if p is None:
            return None
        parts.append(p)
    return {
        "probs": np.concatenate([np.asarray(p["probs"], dtype=np.float64) for p in parts]),
        "labels": np.concatenate([np.asarray(p["labels"], dtype=np.int64) for p in parts]),
        "lesions": [x for p in parts for x in p["lesions"]],
        "patients": [x for p in parts for x in p["patients"]],
        "paths": [x for p in parts for x in p["paths"]],
        "class_names": parts[0]["class_names"],
        "modality": parts[0]["modality"],
    }


def needs_teacher(rows: list[str]) -> bool:
    """Whether any of these rows reads the fold's NBI teacher (distils from it or starts from it)."""
    return any(ROWS[r][1].get("method") != "none" or ROWS[r][1].get("init_from_teacher") for r in rows)


def done(cfg: Config, stage: str) -> bool:
    """Finished and its test predictions cached: a re-launch has nothing left to do for it.
    Raises ValueError when the folder holds the stage trained with other settings."""
    return finished(cfg, stage) and fold_predictions(cfg, stage) is not None


def execute(plan: Plan, regimes: list[str], rows: list[str], data, after_block=None, log=print) -> None:
    """Seed-major: after each (seed, regime) block every row has one more complete seed, so an
    interrupted run still leaves usable (if smaller) tables; `after_block()` rebuilds them."""
    distilling = needs_teacher(rows)
    for seed in plan.seeds:
        if distilling:
            for f in plan.folds:
                log(f"seed {seed} fold {f}: teacher")
                run_stage(plan.config(seed, f), "teacher", data)
        for regime in regimes:
            for row in rows:
                for f in plan.folds:
                    log(f"seed {seed} fold {f}: {regime}.{row}")
                    run_stage(plan.config(seed, f, regime, row), stage_name(regime, row), data)
            if after_block is not None:
                after_block()


def recorded_minutes(plan: Plan, regimes: list[str], rows: list[str]) -> float:
    """Training time the finished and partial runs of these rows recorded (epoch `seconds` in
    their last.json, teachers included): what the tables cost, however many pieces made them."""
    stages = {(s, f, "teacher") for s in plan.seeds for f in plan.folds}
    stages |= {(s, f, stage_name(g, r)) for s in plan.seeds for f in plan.folds for g in regimes for r in rows}
    total = 0.0
    for seed, fold, stage in stages:
        last = stage_dir(plan.config(seed, fold), stage) / "last.json"
        if last.is_file():
            total += sum(h.get("seconds", 0.0) for h in json.loads(last.read_text()).get("history", []))
    return total / 60


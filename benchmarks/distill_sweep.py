"""Validation-only sweep of PaGKD's loss weights and the distiller's learning rate.

`python -m benchmarks.distill --sweep "pro_weight=0.01,0.1,1;den_weight=0.1,1;lr=1e-4,1e-3" --regime few`
trains full PaGKD for every combination in each regime given, on the plan's seeds and folds,
and ranks them by the *validation* selection score of each run's selected epoch (best.json,
mean over folds and seeds). The regime matters: weights that suit all WLI labels need not
suit ten lesions per class. Test folds are never predicted here, so choosing the weights this way
and then running the decisive table with them (`--set distill.pro_weight=...`) keeps the test
data out of every choice.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np

from benchmarks.distill_runs import METHOD, Plan, finished
from pagkd_core.config import ConfigError, DistillConfig, apply_updates
from pagkd_core.train import stage_dir, train_stage


def parse_grid(text: str) -> list[dict]:
    """"a=1,2;b=3" -> [{a: 1, b: 3}, {a: 2, b: 3}], values typed as DistillConfig fields."""
    axes = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        if "=" not in part:
            raise ConfigError(f"sweep axis {part!r} must look like key=v1,v2 (keys of the distill section)")
        key, values = part.split("=", 1)
        probe = [apply_updates(DistillConfig(), {key.strip(): v.strip()}) for v in values.split(",") if v.strip()]
        axes.append([(key.strip(), getattr(c, key.strip())) for c in probe])
    return [dict(combo) for combo in itertools.product(*axes)]


def name_of(combo: dict, regime: str) -> str:
    return f"sweep.{regime}." + "_".join(f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}" for k, v in combo.items())


def run_sweep(plan: Plan, grid: list[dict], data, regime: str, log=print) -> str:
    """Train every combination in `regime` (skipping finished ones); returns the markdown ranking."""
    for seed in plan.seeds:
        for f in plan.folds:
            teacher = plan.config(seed, f)
            if not finished(teacher, "teacher"):
                train_stage(teacher, "teacher", resume=True, data=data)
            for combo in grid:
                cfg = plan.config(seed, f, regime, METHOD, combo)
                if not finished(cfg, name_of(combo, regime)):
                    log(f"seed {seed} fold {f}: {name_of(combo, regime)}")
                    train_stage(cfg, "student", resume=True, name=name_of(combo, regime), data=data)
    ranked = []
    for combo in grid:
        scores = []
        for seed in plan.seeds:
            for f in plan.folds:
                best = stage_dir(plan.config(seed, f, regime, METHOD, combo), name_of(combo, regime)) / "best.json"
                scores.append(json.loads(best.read_text())["val"]["score"])
        ranked.append((float(np.mean(scores)), float(np.std(scores)), combo))
    ranked.sort(key=lambda r: -r[0] if math.isfinite(r[0]) else math.inf)
    lines = [f"### Regime `{regime}`", "", "| distill settings | validation score, mean over folds x seeds | sd |", "|---|---|---|"]
    for mean, sd, combo in ranked:
        lines.append(f"| {', '.join(f'{k}={v}' for k, v in combo.items())} | {100 * mean:.1f} | {100 * sd:.1f} |")
    best = " ".join(f"--set distill.{k}={v}" for k, v in ranked[0][2].items())
    lines += ["", f"Chosen on validation data only (test folds never predicted): `{best}`", ""]
    return "\n".join(lines)

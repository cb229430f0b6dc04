"""The ablation table: every baseline and PaGKD variant through the one trainer, on synthetic data.

    python -m benchmarks.distill            # full: ~30 min on 2 CPU cores (unloaded)
    python -m benchmarks.distill --quick    # seconds-scale smoke run (tests)

Per fold: one NBI teacher, then one student per row. Metrics come from the pooled k-fold test
predictions (AUC with a lesion-bootstrap 95% interval) and per fold (mean and spread).
Interrupted runs continue where they stopped (each stage resumes from its last epoch).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pagkd_core.config import add_config_arguments, load_config
from pagkd_core.data import prepare
from pagkd_core.evaluate import pooled_predictions, summarise
from pagkd_core.train import train_stage

# name -> (table label, distill overrides, needs true pairs)
ROWS: dict[str, tuple[str, dict, bool]] = {
    "wli_only": ("WLI-only (cross-entropy)", {"method": "none"}, False),
    "pagkd": ("PaGKD (GKD-Pro + GKD-Den)", {"method": "pro+den", "level": "group"}, False),
    "gkd_pro": ("GKD-Pro only", {"method": "pro", "level": "group"}, False),
    "gkd_den": ("GKD-Den only", {"method": "den", "level": "group"}, False),
    "logit_kd": ("Logit KD, paired data", {"method": "kd", "pairing": "true"}, True),
    "add": (
        "Image-level dense (ADD-style), paired data",
        {"method": "add", "level": "image", "pairing": "true"},
        True,
    ),
    "img_both": ("Image-level Pro + Den", {"method": "pro+den", "level": "image"}, False),
    "img_pro": ("Image-level Pro", {"method": "pro", "level": "image"}, False),
    "img_den": ("Image-level Den", {"method": "den", "level": "image"}, False),
}
DATA = {
    # Views of one lesion are strongly correlated: more lesions with fewer views give more
    # independent evidence (and larger validation/test splits) for the same training cost.
    "full": ["--size", "128", "--lesions-per-class", "90", "--views", "2", "--seed", "7"],
    "quick": ["--size", "48", "--lesions-per-class", "6", "--views", "2", "--seed", "7"],
}
# The full run's budget (about 30 min on 2 CPU cores): short schedules, one warm-up epoch.
FULL = ["optim.epochs=12", "teacher_optim.epochs=6", "distill.warmup_epochs=1", "run.progress=false"]
QUICK = [
    "data.image_size=32",
    "data.folds=2",
    "optim.epochs=1",
    "optim.steps_per_epoch=1",
    "optim.batch_size=4",
    "teacher_optim.epochs=1",
    "teacher_optim.steps_per_epoch=1",
    "teacher_optim.batch_size=4",
    "distill.warmup_epochs=0",
    "distill.n_queries=4",
    "distill.par_iters=2",
    "run.progress=false",
]


def ensure_data(root: Path, quick: bool) -> None:
    if (root / "manifest.csv").is_file():
        return
    from pagkd_core.synth.cli import main as synth

    rc = synth(["images", "--out", str(root), *DATA["quick" if quick else "full"], "--no-progress"])
    if rc:
        raise SystemExit(f"synthetic data generation failed ({rc})")


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of a t 95% interval over folds (NaN-free values)."""
    v = np.asarray([x for x in values if math.isfinite(x)])
    if len(v) < 2:
        return (float(v.mean()) if len(v) else math.nan), math.nan
    from scipy import stats

    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def row_result(cfg, stage: str, n_boot: int, data) -> dict:
    s = summarise(pooled_predictions(cfg, stage, data=data), n_boot=n_boot, seed=cfg.run.seed)
    aucs = [m["auc"] for m in s["per_fold"].values()]
    mean, half = interval(aucs)
    return {
        "auc": s["metrics"]["auc"],
        "auc_ci": s["ci95"]["auc"],
        "acc": s["metrics"]["accuracy"],
        "f1": s["metrics"]["f1"],
        "fold_auc": aucs,
        "fold_mean": mean,
        "fold_half": half,
        "n_images": s["n_images"],
        "n_lesions": s["n_lesions"],
    }


def pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:.1f}"


def markdown(results: dict, meta: dict) -> str:
    lines = [
        "| Method | needs paired data | AUC pooled [95% CI] | AUC per fold: mean ± 95% t | Acc | F1 |",
        "|---|---|---|---|---|---|",
    ]
    for r in results.values():
        ci = f"{pct(r['auc'])} [{pct(r['auc_ci'][0])}, {pct(r['auc_ci'][1])}]"
        fold = f"{pct(r['fold_mean'])} ± {pct(r['fold_half'])}"
        lines.append(
            f"| {r['label']} | {'yes' if r['paired'] else 'no'} | {ci} | {fold} | {pct(r['acc'])} | "
            f"{pct(r['f1'])} |"
        )
    lines += [
        "",
        (
            f"SYNTHETIC data; {meta['folds']}-fold lesion-level CV, predictions pooled over folds; "
            f"the NBI teacher row is tested on NBI images, all others on WLI. "
            f"Command: `{meta['command']}`; {meta['machine']}; wall time {meta['minutes']:.1f} min."
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.distill", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny data and 1 step per stage (smoke test)")
    add_config_arguments(p, "training config the rows start from", "optim.epochs=3",
                         default_config="configs/synthetic_small.yaml")
    p.add_argument("--data", help="dataset root (default: generated under --out)")
    p.add_argument("--out", default="runs/bench_distill")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma list from {','.join(ROWS)}")
    p.add_argument("--n-boot", type=int, default=1000)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        print(f"error: unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}", file=sys.stderr)
        return 2
    t0, out = time.time(), Path(args.out)
    root = Path(args.data) if args.data else out / "data"
    if not args.data:
        ensure_data(root, args.quick)
    base = [f"data.root={root}", f"run.out_dir={out}", *(QUICK if args.quick else FULL), *args.overrides]
    cfg = load_config(args.config, base)
    n_boot = 50 if args.quick else args.n_boot
    data = prepare(cfg, cfg.run.out_dir, progress=False)  # decoded once, shared by every run
    meta = {
        "command": ("python -m benchmarks.distill " + shlex.join(argv if argv is not None else sys.argv[1:])).strip(),
        "machine": f"2-core CPU dev machine ({platform.machine()}, {torch.get_num_threads()} torch threads), "
        f"torch {torch.__version__}",
        "folds": cfg.data.folds,
        "config": cfg.to_dict(),
        "synthetic": True,
    }
    folds = [
        dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, fold=f)) for f in range(cfg.data.folds)
    ]
    for fcfg in folds:
        print(f"fold {fcfg.data.fold + 1}/{cfg.data.folds}: teacher", flush=True)
        train_stage(fcfg, "teacher", resume=True, data=data)
    results = {
        "nbi_teacher": {
            "label": "NBI teacher (tested on NBI)",
            "paired": False,
            **row_result(cfg, "teacher", n_boot, data),
        }
    }
    # Row by row over all folds, writing the table after each: an interrupted run still reports
    # its finished rows, and a rerun resumes the rest.
    for name in rows:
        for fcfg in folds:
            print(f"fold {fcfg.data.fold + 1}/{cfg.data.folds}: {name}", flush=True)
            train_stage(
                dataclasses.replace(fcfg, distill=dataclasses.replace(fcfg.distill, **ROWS[name][1])),
                "student",
                resume=True,
                name=name,
                data=data,
            )
        rcfg = dataclasses.replace(cfg, distill=dataclasses.replace(cfg.distill, **ROWS[name][1]))
        results[name] = {
            "label": ROWS[name][0],
            "paired": ROWS[name][2],
            **row_result(rcfg, name, n_boot, data),
        }
        meta["minutes"] = (time.time() - t0) / 60
        (out / "table.md").write_text(markdown(results, meta))
        (out / "results.json").write_text(json.dumps({"rows": results, "meta": meta}, indent=1) + "\n")
    print(markdown(results, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())

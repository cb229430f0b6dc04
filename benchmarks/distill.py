"""Decisive distillation benchmark: seeds x folds, paired intervals against WLI-only, two controls.

    python -m benchmarks.distill                    # preset "cpu": about 40 min on 2 CPU cores
    python -m benchmarks.distill --preset gpu       # the full protocol, one command, GPU host
    python -m benchmarks.distill --quick            # = --preset smoke: about a minute (tests)
    python -m benchmarks.distill --data DIR         # any manifest dataset (e.g. frames with no_lesion)
    python -m benchmarks.distill --ray auto         # every run a Ray task on a cluster (distill_ray.py)

Every row trains through the one trainer on the same lesion/patient-level split; per training
seed and fold one NBI teacher, then one student per (regime, row). Regimes: "full" (all WLI
labels) and "few" (--few-lesions WLI training lesions per class, all NBI data). Controls: the
class-swapped teacher (row "swap", distill.teacher_class_shift=1) and the few-labels regime.
Tables (one per regime, <out>/table-<regime>.md) give each row's test metric pooled over folds
and its difference against WLI-only and full PaGKD with paired bootstrap intervals
(benchmarks/distill_tables.py). Resumable: finished stages are skipped, interrupted ones resume;
--rows/--seeds/--folds/--regime run pieces; --table-only rebuilds the tables from what exists
(a table covers the --seeds/--folds given). --sweep ranks PaGKD loss weights on validation data
only (benchmarks/distill_sweep.py). docs/training.md, "Decisive protocol".
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
from pathlib import Path

import torch

from benchmarks.distill_runs import REGIMES, ROWS, Plan, execute, recorded_minutes
from pagkd_core.config import ConfigError, add_config_arguments, load_config
from pagkd_core.data import prepare
from pagkd_core.data.layouts import scan
from pagkd_core.outputs import NO_LESION
from stream.host import machine_line

DATA = {
    # Views of one lesion are strongly correlated: more lesions with fewer views give more
    # independent evidence (and larger validation/test splits) for the same training cost.
    "full": ["--size", "128", "--lesions-per-class", "90", "--views", "2", "--seed", "7"],
    "quick": ["--size", "48", "--lesions-per-class", "6", "--views", "2", "--seed", "7"],
    "gpu": ["--size", "256", "--lesions-per-class", "150", "--views", "2", "--seed", "7"],
}
COMMON = ["run.progress=false", "run.grad_norm_every=20"]
# name -> data, config overrides, image size, output stride, seeds, rows, few-labels lesions, resamples.
PRESETS: dict[str, dict] = {
    "smoke": {
        "data": "quick",
        "set": ["data.folds=2", "optim.epochs=1", "optim.steps_per_epoch=1", "optim.batch_size=4",
                "teacher_optim.epochs=1", "teacher_optim.steps_per_epoch=1", "teacher_optim.batch_size=4",
                "distill.warmup_epochs=0", "distill.n_queries=4", "distill.par_iters=2", "run.grad_norm_every=1"],
        "size": 32, "stride": 32, "seeds": "0", "rows": "wli_only,pagkd,swap", "few": 1, "n_boot": 50,
    },
    # Sized for about 40 min on a quiet 2-core CPU: the decisive rows only (WLI-only, PaGKD, the
    # swapped control), 2 seeds x 3 folds x 2 regimes; stride 16 gives 6x6 maps at 96 px.
    "cpu": {
        "data": "full",
        "set": ["optim.epochs=10", "teacher_optim.epochs=6", "distill.warmup_epochs=1"],
        "size": 96, "stride": 16, "seeds": "0,1", "rows": "wli_only,pagkd,swap", "few": 10, "n_boot": 1000,
    },
    # The full protocol: 5 seeds x 5 folds, every module row and the image-level comparison;
    # 192 px at stride 16 = 12x12 maps for GKD-Den.
    "gpu": {
        "data": "gpu",
        "set": ["data.folds=5", "data.workers=4", "optim.epochs=40", "optim.batch_size=24",
                "teacher_optim.epochs=30", "teacher_optim.batch_size=24", "distill.warmup_epochs=3",
                "run.device=cuda", "run.threads=0"],
        "size": 192, "stride": 16, "seeds": "0,1,2,3,4", "rows": "wli_only,pagkd,gkd_pro,gkd_den,img_both,swap",
        "few": 10, "n_boot": 2000,
    },
}
CLASS_SETS = {"2": ["hyperplastic", "adenoma"], "3": ["hyperplastic", "adenoma", "adenocarcinoma"]}
METRICS = ("class_auc", "presence_auc", "score", "auc", "sensitivity", "specificity")


def ensure_data(root: Path, preset_data: str, classes: list[str] | None) -> None:
    if (root / "manifest.csv").is_file():
        return
    from pagkd_core.synth.cli import main as synth

    extra = ["--classes", ",".join(classes)] if classes else []
    rc = synth(["images", "--out", str(root), *DATA[preset_data], *extra, "--no-progress"])
    if rc:
        raise SystemExit(f"synthetic data generation failed ({rc})")


def class_list(choice: str, root: Path, layout: str) -> list[str]:
    """data.classes for --classes: 2 or 3 lesion classes, plus no_lesion when the data have it."""
    if choice == "all":
        return []
    from pagkd_core.config import DataConfig

    _, samples = scan(DataConfig(root=str(root), layout=layout))
    has_none = any(s.cls == NO_LESION for s in samples)
    return ([NO_LESION] if has_none else []) + CLASS_SETS[choice]


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.distill", description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--quick", action="store_true", help="= --preset smoke (about a minute; tests)")
    add_config_arguments(p, "training config the rows start from", "optim.epochs=3",
                         default_config="configs/synthetic_small.yaml")
    p.add_argument("--data", help="manifest dataset root (default: synthetic close-ups generated under --out)")
    p.add_argument("--out", help="default: runs/bench_distill/<preset>-<classes>cls-<size>px-os<stride>")
    p.add_argument("--rows", help=f"comma list from {','.join(ROWS)} (default: the preset's)")
    p.add_argument("--seeds", help="training seeds, e.g. 0,1,2 (default: the preset's)")
    p.add_argument("--folds", help="folds to run and pool, e.g. 0,1 (default: all)")
    p.add_argument("--regime", default="full,few", help="comma list from " + ",".join(REGIMES))
    p.add_argument("--few-lesions", type=int, help="WLI training lesions per class in regime few")
    p.add_argument("--image-size", type=int, help="student and teacher input size (default: the preset's)")
    p.add_argument("--output-stride", type=int, choices=(8, 16, 32), help="student and teacher")
    p.add_argument("--classes", choices=("2", "3", "all"), default="2",
                   help="lesion classes: 2 hyperplastic/adenoma, 3 + adenocarcinoma (NICE 1/2/3); no_lesion kept")
    p.add_argument("--metric", choices=METRICS, default="class_auc", help="figure compared in the tables")
    p.add_argument("--n-boot", type=int)
    p.add_argument("--table-only", action="store_true", help="rebuild the tables from finished runs; train nothing")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="each run a Ray task: alone, a local Ray on this host's cores; 'auto' or HOST:PORT "
                        "joins a cluster (--out must be shared by its nodes; docs/ray.md)")
    p.add_argument("--ray-cpus", type=float, default=1, help="CPUs each run asks Ray for (default 1)")
    p.add_argument("--ray-gpus", type=float, default=0, help="GPUs each run asks Ray for (default 0)")
    p.add_argument("--sweep", metavar="GRID", help='validation-only sweep of PaGKD in each --regime, e.g. '
                   '"pro_weight=0.1,1;den_weight=0.1,1;lr=1e-4,1e-3" (distill keys); writes <out>/sweep.md, '
                   'no test predictions')
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    preset = PRESETS["smoke" if args.quick else args.preset]
    rows = (args.rows or preset["rows"]).split(",")
    regimes = [r for r in args.regime.split(",") if r]
    bad = [r for r in rows if r not in ROWS] + [r for r in regimes if r not in REGIMES]
    if bad:
        print(f"error: unknown row/regime {', '.join(bad)}; rows: {', '.join(ROWS)}; regimes: "
              f"{', '.join(REGIMES)}", file=sys.stderr)
        return 2
    if args.sweep and args.ray is not None:
        print("error: --ray runs the grid's runs; run --sweep without it", file=sys.stderr)
        return 2
    size, stride = args.image_size or preset["size"], args.output_stride or preset["stride"]
    out = Path(args.out or f"runs/bench_distill/{'smoke' if args.quick else args.preset}-"
               f"{args.classes}cls-{size}px-os{stride}")
    if args.data:
        root = Path(args.data)
    else:
        root = out.parent / f"data-{preset['data']}-{args.classes}cls"
        ensure_data(root, preset["data"], CLASS_SETS.get(args.classes))
    t0 = time.time()
    base = [*COMMON, *preset["set"], f"data.image_size={size}", f"student.output_stride={stride}",
            f"teacher.output_stride={stride}", f"data.root={root}", f"run.out_dir={out}"]
    cfg = load_config(args.config, [*base, *args.overrides])
    classes = class_list(args.classes, root, cfg.data.layout)
    if classes:
        cfg.data.classes = classes
    data = prepare(cfg, out, progress=False)  # decoded once, shared by every run; writes <out>/splits.json
    folds = [int(f) for f in args.folds.split(",")] if args.folds else list(range(cfg.data.folds))
    seeds = [int(s) for s in (args.seeds or preset["seeds"]).split(",")]
    n_wli = len(data.for_config(cfg).part("train", "WLI"))
    plan = Plan(cfg, seeds, folds, args.few_lesions or preset["few"], math.ceil(n_wli / cfg.optim.batch_size))
    n_boot = args.n_boot or preset["n_boot"]
    meta = {
        "command": "python -m benchmarks.distill " + shlex.join(argv),
        # the runs' own thread setting (train_stage applies run.threads; this process has not yet)
        "machine": f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() and cfg.run.device != 'cpu' else machine_line()}, "
        f"{cfg.run.threads or torch.get_num_threads()} torch threads per run, torch {torch.__version__}",
        "data": f"{root}",
        "classes": "classes " + ", ".join(data.class_names),
        "student": f"{cfg.student.backbone} at {size} px, output stride {stride}, {cfg.optim.epochs} epochs",
    }

    def tables(resamples: int = n_boot) -> None:
        from benchmarks.distill_tables import regime_table

        meta["minutes"] = (time.time() - t0) / 60
        meta["train_minutes"] = recorded_minutes(plan, regimes, rows)
        suffix = "" if args.metric == "class_auc" else f"-{args.metric}"
        for regime in regimes:
            md, res = regime_table(plan, regime, rows, args.metric, resamples, meta)
            (out / f"table-{regime}{suffix}.md").write_text(md)
            (out / f"results-{regime}{suffix}.json").write_text(
                json.dumps({"rows": res, "meta": meta, "config": cfg.to_dict(), "synthetic": True}, indent=1) + "\n")

    try:
        if args.sweep:
            from benchmarks.distill_sweep import parse_grid, run_sweep

            grid = parse_grid(args.sweep)
            md = "\n".join(run_sweep(plan, grid, data, regime, log=lambda m: print(m, flush=True)) for regime in regimes)
            md += f"\nCommand: `{meta['command']}`; {meta['machine']}; wall time {(time.time() - t0) / 60:.1f} min.\n"
            (out / "sweep.md").write_text(md)
            print(md)
            return 0
        failed = []
        if args.ray is not None and not args.table_only:
            from benchmarks.distill_ray import execute_on_ray

            failed = execute_on_ray(plan, regimes, rows, data, args.ray, args.ray_cpus, args.ray_gpus,
                                    log=lambda m: print(m, flush=True))
        elif not args.table_only:
            # Interim tables after each (seed, regime) block use fewer resamples (they are
            # overwritten); the final one below uses --n-boot.
            execute(plan, regimes, rows, data, after_block=lambda: tables(min(n_boot, 200)),
                    log=lambda m: print(m, flush=True))
        tables()
    except (ValueError, FileExistsError, ConfigError) as e:  # e.g. a finished run made with other options
        print(f"error: {e}", file=sys.stderr)
        return 2
    for regime in regimes:
        print((out / f"table-{regime}{'' if args.metric == 'class_auc' else '-' + args.metric}.md").read_text())
    if failed:  # the tables above hold the runs that finished; a re-launch runs the rest
        print(f"error: {len(failed)} run(s) failed; first: {failed[0]}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())

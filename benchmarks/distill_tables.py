"""Paired statistics and the markdown tables of `python -m benchmarks.distill`.

For each regime and row: the test metric pooled over the folds, per training seed, averaged
over seeds, with a bootstrap 95% interval; and its difference against WLI-only and against
full PaGKD with a *paired* bootstrap interval (`pagkd_core.metrics.paired_bootstrap_diff`):
both methods are scored on the same test images, each resample draws the same units (patients
when the data name them, else lesions) for both, and the same training seeds (seed s of two
methods shares the split, the teacher and the student's initialisation). Seeds are paired
replicates, resampled with the units, so the interval covers test-sample and seed variation.
"""

from __future__ import annotations

import math

import numpy as np

from benchmarks.distill_runs import BASELINE, METHOD, REGIMES, ROWS, Plan, pooled
from pagkd_core.evaluate import bootstrap_units
from pagkd_core.metrics import paired_bootstrap_diff


def collect(plan: Plan, regime: str, rows: list[str]) -> dict[str, dict[int, dict]]:
    """{row: {seed: pooled predictions}} for the seeds complete on every fold of the plan."""
    out: dict[str, dict[int, dict]] = {}
    for row in rows:
        got = {s: pooled(plan, regime, row, s) for s in plan.seeds}
        out[row] = {s: p for s, p in got.items() if p is not None}
    return out


def _same_images(a: dict, b: dict) -> bool:
    return a["paths"] == b["paths"] and np.array_equal(a["labels"], b["labels"])


def compare(a: dict[int, dict], b: dict[int, dict] | None, metric: str, n_boot: int, seed: int) -> dict | None:
    """Paired difference A - B over their common seeds (b None: A's own value and interval)."""
    seeds = sorted(set(a) & set(b)) if b is not None else sorted(a)
    if not seeds:
        return None
    ref = a[seeds[0]]
    for s in seeds:
        if not _same_images(a[s], ref) or (b is not None and not _same_images(b[s], ref)):
            raise ValueError("the compared runs were tested on different images; same --data and splits?")
    unit, groups = bootstrap_units(ref)
    names = ref["class_names"]
    probs_b = None if b is None else [b[s]["probs"] for s in seeds]
    r = paired_bootstrap_diff(ref["labels"], [a[s]["probs"] for s in seeds], probs_b, groups, metric, names,
                              n_boot, seed)
    r["unit"] = unit
    r["seeds"] = seeds
    return r


def pct(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.1f}"


def signed(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:+.1f}"


def cell(r: dict | None, fmt=signed) -> str:
    if r is None:
        return "-"
    lo, hi = r["ci95"]
    mark = " **excl. 0**" if fmt is signed and math.isfinite(lo) and (lo > 0 or hi < 0) else ""
    return f"{fmt(r['diff'])} [{fmt(lo)}, {fmt(hi)}]{mark}"


def regime_table(plan: Plan, regime: str, rows: list[str], metric: str, n_boot: int, meta: dict) -> tuple[str, dict]:
    """(markdown, JSON-able results) of one regime."""
    runs = collect(plan, regime, sorted(set(rows) | {BASELINE, METHOD}))
    teacher = {s: p for s in plan.seeds if (p := pooled(plan, regime, None, s)) is not None}
    results: dict = {}
    lines = [
        f"### Regime `{regime}`: {REGIMES[regime].replace('N WLI', str(plan.few_lesions) + ' WLI')}",
        "",
        (f"| Method | seeds | {metric} (%) [95% CI] | Δ vs WLI-only [paired 95% CI] | Δ vs PaGKD [paired 95% CI] | "
        "P(Δ vs WLI-only > 0) | per seed |"),
        "|---|---|---|---|---|---|---|",
    ]
    if teacher:
        t = compare(teacher, None, metric, n_boot, plan.base.run.seed)
        results["nbi_teacher"] = {"value": t}
        lines.append(f"| NBI teacher (tested on NBI) | {len(t['seeds'])} | {cell(t, pct)} | | | | "
                     f"{', '.join(pct(v) for v in t['per_seed'])} |")
    for row in rows:
        if not runs.get(row):
            lines.append(f"| {ROWS[row][0]} | 0 | - | - | - | - | not run yet |")
            continue
        value = compare(runs[row], None, metric, n_boot, plan.base.run.seed)
        vs_base = compare(runs[row], runs[BASELINE], metric, n_boot, plan.base.run.seed) if row != BASELINE else None
        vs_method = compare(runs[row], runs[METHOD], metric, n_boot, plan.base.run.seed) if row != METHOD else None
        results[row] = {"label": ROWS[row][0], "value": value, "vs_wli_only": vs_base, "vs_pagkd": vs_method}
        p = pct(vs_base["p_greater"]) if vs_base else "-"
        lines.append(
            f"| {ROWS[row][0]} | {len(value['seeds'])} | {cell(value, pct)} | {cell(vs_base)} | {cell(vs_method)} | "
            f"{p} | {', '.join(pct(v) for v in value['per_seed'])} |"
        )
    unit = next((r["value"]["unit"] for r in results.values() if r.get("value")), "?")
    n_units = next((r["value"]["n_units"] for r in results.values() if r.get("value")), 0)
    lines += [
        "",
        (
            f"SYNTHETIC data ({meta['data']}); {meta['classes']}; student {meta['student']}; "
            f"folds {','.join(map(str, plan.folds))} of a {plan.base.data.folds}-fold {unit}-level split "
            f"(validation carved from the training folds, no test-fold selection); training seeds "
            f"{','.join(map(str, plan.seeds))}. {metric} of the test predictions pooled over the folds, per "
            f"seed, then averaged over seeds. Intervals: {n_boot} bootstrap resamples of {n_units} {unit}s and "
            f"of the seeds, paired across methods (same units, same seeds); **excl. 0** = the 95% interval "
            f"excludes 0."
        ),
        "",
        (
            f"Command: `{meta['command']}`; {meta['machine']}; this command's wall time {meta['minutes']:.1f} min; "
            f"training time recorded by the runs in these tables {meta.get('train_minutes', 0):.0f} min."
        ),
        "",
    ]
    return "\n".join(lines), results

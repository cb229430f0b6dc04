"""The outputs of `python -m benchmarks.input_size`: the cost of every size in one timing run,
and the report (input_size.md / .json / .png). All data and models are SYNTHETIC."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from stream.video_metrics_report import md_table  # the evaluation report's own table format

FIGURES = (("close_first_call_correct", "first call right (close view)"),
           ("close_first_call_correct_upper_evidence", "... upper-half WLI evidence"),
           ("auc_class_close", "class AUC (close)"), ("auc_presence", "presence AUC"),
           ("false_alarms_no_lesion_per_min", "false alarms/min (no lesion)"),
           ("time_close_to_correct_median_s", "close view -> right call (median s)"))

def say(text: str) -> None:
    print(f"input_size: {text}", flush=True)


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


# -- cost: every size in one timing run ------------------------------------------------------
def measure_cost(students: dict[int, Path], batch: int, seconds: float, out: Path) -> dict:
    """int8 and fp32 images/s per size at ``batch``, by the runtime's interleaved timer; reused
    from ``out/cost.json`` while the sizes, graphs and weights are the same."""
    import numpy as np

    from stream import host
    from stream.engines import build_engine
    from stream.engines.auto_choice import interleaved_rates, time_calls
    from stream.engines.model_source import ModelSource
    sources = {s: ModelSource.from_path(p) for s, p in students.items()}
    key = {"batch": batch, "cpu": host.cpu_model(), "sizes": {str(s): [
        src.weights_hash(), hashlib.sha256(students[s].with_suffix(".int8.onnx").read_bytes()).hexdigest()[:16],
    ] for s, src in sources.items()}}
    cache = out / "cost.json"
    if cache.is_file() and (old := json.loads(cache.read_text()))["key"] == key:
        say("cost: every graph as measured before, reused (delete cost.json to measure again)")
        return old
    say(f"cost: timing {len(sources)} sizes x int8/fp32 at batch {batch}, interleaved rounds")
    engines, inputs = {}, {}
    rng = np.random.default_rng(0)
    try:
        for s, src in sources.items():
            x = rng.standard_normal((batch, 3, s, s), dtype=np.float32)  # speed does not depend on content
            for p in ("int8", "fp32"):
                eng = build_engine("onnxruntime", src, device="cpu", precision=p, max_batch=batch)
                engines[f"{p}@{s}"], inputs[id(eng)] = eng, x
                eng.infer(x)  # warm-up
        # The timer hands every engine the same frames: each times a batch at its own size instead.
        rates = interleaved_rates(engines, next(iter(inputs.values())), [batch],
                                  lambda eng, x, calls: time_calls(eng, inputs[id(eng)][:len(x)], calls),
                                  min_rounds=3, budget_s=seconds * len(engines))
    finally:
        for eng in engines.values():
            eng.close()
    res = {"key": key, "machine": host.machine_line(), "measured": now(),
           "images_per_s": {name: round(r[batch], 1) for name, r in rates.items()}}
    cache.write_text(json.dumps(res, indent=1) + "\n")
    return res


# -- outputs ----------------------------------------------------------------------------------
def write_report(args, rows: list[dict], cost: dict, command: str) -> None:
    ref = rows[[r["size"] for r in rows].index(args.reference)]
    for r in rows:
        for p in ("int8", "fp32"):
            r[f"{p}_ratio"] = round(r[f"{p}_images_per_s"] / ref[f"{p}_images_per_s"], 3)
    if args.test_time_only:
        trained = json.loads(Path(rows[0]["student"]).read_text())["resized_from"]["input_size"][0]
        how = f"`{args.model}` (trained at {trained} px) run at each size, no training"
    else:
        how = f"one trained per size ({args.epochs} epochs, `{args.config}`, backbone `{args.teacher_backbone}`)"
    record = {"command": command, "machine": cost["machine"], "date": now(), "synthetic": True, "students": how,
              "mode": "test-time-only" if args.test_time_only else "trained per size",
              "videos": [str(v) for v in args.video_files], "grid": args.grid, "batch": args.batch,
              "reference_size": args.reference, "cost_measured": cost["measured"], "rows": rows}
    head = ["size (px)", f"int8 images/s (b{args.batch})", f"int8 vs {args.reference} px", "fp32 images/s",
            f"fp32 vs {args.reference} px", *[label for _, label in FIGURES], "setting (chosen on validation)"]
    table = md_table(head, [[str(r["size"]), f"{r['int8_images_per_s']:.1f}", f"{r['int8_ratio']:.2f}x",
                              f"{r['fp32_images_per_s']:.1f}", f"{r['fp32_ratio']:.2f}x", *[r[k] for k, _ in FIGURES],
                              f"`{r['setting']}`"] for r in rows])
    lesions = "/".join(sorted({str(r["close_view_lesions"]) for r in rows}))
    (args.out / "input_size.md").write_text(f"""# Input size: accuracy on validation videos vs CPU int8 cost

All videos, data and models here are SYNTHETIC. Videos: VALIDATION videos only, never the held-out seeds 1000+.

Command: `{command}`

Machine: {cost['machine']}; cost measured {cost['measured']}, all sizes in one run of interleaved rounds (median);
report {record['date']}.

Students: {how}. Per size: its int8 graph (`benchmarks.int8 --for-isa avx2`) and its own smoothing + alert
setting chosen by `python -m stream tune` (grid `{args.grid}`); the figures are evaluate's for that setting, pooled
over {len(args.video_files)} videos ({lesions} close-view lesions).

{table}

![accuracy vs cost](input_size.png)
""")
    (args.out / "input_size.json").write_text(json.dumps(record, indent=1) + "\n")
    plot(rows, args.out / "input_size.png", args.batch)


def plot(rows: list[dict], path: Path, batch: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 3, figsize=(12, 7), constrained_layout=True)
    for ax, (key, label) in zip(axes.flat, FIGURES):
        pts = [(1000 / r["int8_images_per_s"], r[key], r["size"]) for r in rows if r[key] is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-")
        for x, y, s in pts:
            ax.annotate(f"{s} px", (x, y), textcoords="offset points", xytext=(4, 4))
        if not pts:  # e.g. no close-view lesion in the videos
            ax.text(0.5, 0.5, "no value", transform=ax.transAxes, ha="center")
        ax.set(title=label, xlabel=f"int8 ms per image (batch {batch})")
        ax.grid(alpha=0.3)
    fig.suptitle("Input size: video figures (validation videos) vs CPU int8 cost - SYNTHETIC")
    fig.savefig(path, dpi=100)
    plt.close(fig)

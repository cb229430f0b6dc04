"""The int8 settings table: each candidate setting calibrated and judged the same way.

    python -m benchmarks.int8_sweep --model stream/assets/student.json --calib data/frames_v1 \
        --splits runs/video_student/splits.json --fold 0 --out out/int8_candidate/sweep

Every row is one ``QuantOptions`` (and calibration frame count), calibrated with each of
``--seeds`` (different draws of the fold's training frames) and measured for top-1 agreement with
fp32 on the fold's test images and on the frames ``--engine auto``'s probe judges int8 on (96
demo-video frames: one disagreement moves it by 0.0104), the AUC drop on the test images, and the
speed of the first seed's graph against fp32 at batch 1 and 8, every graph timed in the same
interleaved rounds (benchmarks.int8_measure.rates). Agreements are given as the range over the
seeds, since with 2-3 frames in 96 on a near tie one draw more or less decides the bound.
Writes ``sweep.json`` (every figure) and ``sweep.md`` (the table in docs/engines.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np

from benchmarks.int8 import HeldOut, QuantOptions, quantize
from benchmarks.int8_measure import accuracy_cost, agreement, rates

# The settings before this table (issue 17): MinMax, every layer int8, full-range weights. Rows
# change from it what they name; the last rows combine what helped.
BEFORE = {"method": "minmax", "reduce_range": False, "float_layers": "none"}
ROWS: dict[str, dict] = {
    "before": {},
    "reduce_range": {"reduce_range": True},
    "u8u8": {"weights": "u8"},
    "qoperator": {"fmt": "qoperator"},
    "per_tensor": {"per_channel": False},
    "percentile": {"method": "percentile"},
    "entropy": {"method": "entropy"},
    "calib1024": {"count": 1024},
    "float_first": {"float_layers": "first"},
    "float_last": {"float_layers": "last"},
    "float_ends": {"float_layers": "ends"},
    "ends_rr": {"float_layers": "ends", "reduce_range": True},
    "ends_pct": {"float_layers": "ends", "method": "percentile"},
    "ends_pct_rr": {"float_layers": "ends", "method": "percentile", "reduce_range": True},
    "ends_pct_rr_qop": {"float_layers": "ends", "method": "percentile", "reduce_range": True, "fmt": "qoperator"},
    "ends_pct_u8u8": {"float_layers": "ends", "method": "percentile", "weights": "u8"},
}


def row_options(name: str, count: int) -> tuple[QuantOptions, int]:
    change = dict(ROWS[name])
    count = change.pop("count", count)
    return QuantOptions(**{**BEFORE, **change}), count


def settings_text(o: QuantOptions, count: int) -> str:
    # which host class's default the row is (the choice depends on VNNI: int8.reduce_range_for)
    classes = [label for label, isa in (("VNNI", ("avx512_vnni",)), ("x86 without VNNI", ("avx2",)))
               if dataclasses.replace(o, for_isa=isa) == QuantOptions(for_isa=isa) and count == 256]
    return (f"{o.fmt.upper() if o.fmt == 'qdq' else 'QOperator'}, {o.activations} x {o.weights}, "
            f"{'per-channel' if o.per_channel else 'per-tensor'}, {o.method}, "
            f"reduce_range {'on' if o.reduce_range else 'off'}, float: {o.float_layers}, {count} frames"
            + "".join(f" **(default, {c})**" for c in classes))


def span(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.3f}" if round(lo, 3) == round(hi, 3) else f"{lo:.3f}-{hi:.3f}"


def table(rows: list[dict]) -> str:
    head = ("| row | settings | agreement, held-out | agreement, demo frames | AUC drop (worst) | "
            "speed-up b1 | speed-up b8 |\n|---|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {r['row']} | {r['settings']} | {span(r['agreement_heldout'])} | {span(r['agreement_demo'])} | "
        f"{max(r['auc_drop']):+.4f} | {r['speedup_b1']:.2f}x | {r['speedup_b8']:.2f}x |\n" for r in rows)


def sweep(source, data: HeldOut, names: list[str], seeds: list[int], out: Path, seconds: float) -> dict:
    from stream import host
    from stream.engines import auto_choice, build_engine
    meta = source.meta
    images, labels, lesions = data.evaluation(meta)
    demo, where = auto_choice.probe_frames(meta)
    fp32 = build_engine("onnxruntime", source, device="cpu", precision="fp32", max_batch=8)
    ref, ref_demo = fp32.infer(images), fp32.infer(demo)
    p = np.sort(np.exp(ref_demo - ref_demo.max(1, keepdims=True)), 1)
    margin = (p[:, -1] - p[:, -2]) / p.sum(1)  # fp32's top-2 probability gap: near 0, a tie
    load = [os.getloadavg()[0]]
    frames: dict[tuple[int, int], np.ndarray] = {}
    rows, timed = [], {"fp32": fp32}
    for name in names:
        options, count = row_options(name, data.count)
        row = {"row": name, "settings": settings_text(options, count), "options": options.describe(), "count": count,
               "agreement_heldout": [], "agreement_demo": [], "auc_drop": [], "rel_logit_diff": [],
               "demo_flip_margins": []}
        for seed in seeds:
            if (count, seed) not in frames:
                frames[count, seed] = dataclasses.replace(data, count=count).calibration(meta, seed)
            graph = quantize(source, frames[count, seed], out / f"{name}-s{seed}.int8.onnx", options)
            eng = build_engine("onnxruntime", source, device="cpu", precision="int8", max_batch=8, onnx_path=graph)
            cost = accuracy_cost(ref, eng.infer(images), labels)
            row["agreement_heldout"].append(cost["top1_agreement"])
            int8_demo = eng.infer(demo)
            row["agreement_demo"].append(agreement(ref_demo, int8_demo))
            flips = int8_demo.argmax(1) != ref_demo.argmax(1)
            row["demo_flip_margins"].append([round(float(m), 3) for m in margin[flips]])
            row["auc_drop"].append(cost["auc_drop"])
            row["rel_logit_diff"].append(cost["rel_logit_diff"])
            if seed == seeds[0]:
                timed[name] = eng  # the first draw's graph is timed; the others only judged
            else:
                eng.close()
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    load.append(os.getloadavg()[0])
    speed = rates(timed, images, (1, 8), seconds)
    for eng in timed.values():
        eng.close()
    for row in rows:
        for b in (1, 8):
            row[f"images_per_s_b{b}"] = round(speed[row["row"]][b], 1)
            row[f"speedup_b{b}"] = speed[row["row"]][b] / speed["fp32"][b]
    load.append(os.getloadavg()[0])
    return {"host": host.machine_line(), "isa": host.isa_flags(), "onnxruntime": __import__("onnxruntime").__version__,
            "fp32_images_per_s": {str(b): round(v, 1) for b, v in speed["fp32"].items()},
            "load_average_1min": [round(v, 2) for v in load], "seeds": seeds, "heldout_images": len(images),
            "heldout_lesions": lesions, "demo_frames": where, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.int8_sweep", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="exported student (.json/.safetensors/stem)")
    ap.add_argument("--calib", required=True, help="labelled image set root (as for benchmarks.int8)")
    ap.add_argument("--splits", help="a training run's splits.json (as for benchmarks.int8)")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--modality", default="WLI")
    ap.add_argument("--count", type=int, default=256, help="calibration frames of the rows that do not set it")
    ap.add_argument("--seeds", default="0,1,2", help="calibration draws per row")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"rows to run, of: {', '.join(ROWS)}")
    ap.add_argument("--seconds", type=float, default=2.0, help="timing per graph and batch size, interleaved")
    ap.add_argument("--out", required=True, help="folder for the graphs, sweep.json and sweep.md")
    args = ap.parse_args(argv)
    from stream.engines import ModelSource
    names = [n for n in args.rows.split(",") if n]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        print(f"error: unknown rows {unknown}; known: {list(ROWS)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    source = ModelSource.from_path(args.model)
    data = HeldOut(args.calib, splits=args.splits, fold=args.fold, modality=args.modality, count=args.count)
    res = {"model": args.model, "weights_hash": source.weights_hash(), "calib": args.calib, "splits": args.splits,
           "fold": args.fold, **sweep(source, data, names, [int(s) for s in args.seeds.split(",")], out, args.seconds)}
    (out / "sweep.json").write_text(json.dumps(res, indent=1) + "\n")
    md = (f"{res['host']}; ONNX Runtime {res['onnxruntime']}; load average {res['load_average_1min']}; "
          f"fp32 {res['fp32_images_per_s']} images/s\n\n" + table(res["rows"]))
    (out / "sweep.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

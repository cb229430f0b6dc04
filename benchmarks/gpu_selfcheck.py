"""Check every GPU engine available here against CPU torch eager on the same inputs.

    python -m benchmarks.gpu_selfcheck --json gpu_selfcheck.json [--model student.json]

For each self-checked engine variant of benchmarks.engine_variants (torch fp32/fp16/bf16, fp16
+ CUDA graphs, torch.compile, ONNX Runtime CUDA, TensorRT fp16) it prints the max |logit
difference| to CPU fp32 eager, top-1 agreement and the median time per ``infer`` call (host
numpy in, numpy out, so copies included) at each batch size. Engines whose library is missing
are reported as skipped with the reason. Without CUDA it reports "no CUDA, skipped" and exits
0; it exits 1 if an engine that ran is off tolerance. Without ``--model`` a randomly
initialised student of ``--backbone`` is used (the check is about numerics and speed, not
accuracy).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from functools import partial
from pathlib import Path

import numpy as np
import torch

from benchmarks.engine_variants import VARIANTS, self_checked, skip_reason
from benchmarks.env import environment
from benchmarks.timing import repeat, summary_ms
from stream.engines import EngineError, ModelSource, build_engine

CHECKED = [v.id for v in VARIANTS if v.tolerance is not None]  # what --only takes, on any device


def time_infer(engine, x: np.ndarray, iters: int) -> dict:
    """Median and p90 of ``iters`` calls after two warm-up calls (cuDNN autotune, graph capture,
    lazy init). ``infer`` returns host numpy, so each call includes H2D/D2H and synchronisation."""
    s = summary_ms(repeat(partial(engine.infer, x), seconds=0, warmup=2, min_iters=iters, max_iters=iters))
    per_s = round(len(x) * 1e3 / s["p50_ms"], 1)
    return {"median_ms": s["p50_ms"], "p90_ms": s["p90_ms"], "images_per_s": per_s}


def make_source(args) -> ModelSource:
    if args.model:
        return ModelSource.from_path(args.model)
    from pagkd_core.models import build_model
    from pagkd_core.student import IMAGENET_MEAN, IMAGENET_STD
    torch.manual_seed(args.seed)
    model = build_model(args.backbone, 2)
    meta = {"class_names": ["hyperplastic", "adenoma"], "input_size": [args.size, args.size],
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    return ModelSource.from_module(model, meta, name=f"{args.backbone}-random")


def run_checks(source: ModelSource, variants: list, batches: list[int], iters: int, seed: int = 0,
               device: str = "cuda", on_row=None) -> list[dict]:
    """One row per check; ``on_row(results so far)`` after each, so a killed run keeps its rows."""
    h, w = source.meta["input_size"]
    x = np.random.default_rng(seed).standard_normal((max(batches), 3, h, w)).astype(np.float32)
    ref_engine = build_engine("torch", source, device="cpu", precision="fp32", channels_last=False,
                              max_batch=max(batches))
    ref = ref_engine.infer(x)
    ref_engine.close()
    scale = max(float(np.abs(ref).max()), 1e-6)
    results = []
    for variant in variants:
        name, kind, opts, tol = variant.id, variant.kind, variant.opts, variant.tolerance
        row: dict = {"engine": name, "kind": kind, **opts, "tolerance_rel": tol}
        reason = skip_reason(kind, device)
        if reason:
            results.append({**row, "status": "skipped", "reason": reason})
            print(f"{name:26s} skipped: {reason}", flush=True)
            if on_row:
                on_row(results)
            continue
        try:
            t0 = time.perf_counter()
            eng = build_engine(kind, source, device=device, max_batch=max(batches), **opts)
            row["build_s"] = round(time.perf_counter() - t0, 2)
            out = eng.infer(x)
            diff = float(np.abs(out - ref).max())
            row.update(max_abs_diff=diff, rel_diff=diff / scale,
                       top1_agreement=float((out.argmax(1) == ref.argmax(1)).mean()),
                       status="ok" if diff / scale <= tol else "off-tolerance", precision=eng.precision,
                       timing={f"b{b}": time_infer(eng, x[:b], iters) for b in batches})
            eng.close()
        except (EngineError, RuntimeError, ImportError, OSError, ValueError) as e:
            row.update(status="error", error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                       traceback=traceback.format_exc(limit=4))
        results.append(row)
        if row["status"] in ("ok", "off-tolerance"):
            t = "  ".join(f"{k}: {v['median_ms']} ms ({v['images_per_s']} img/s)" for k, v in row["timing"].items())
            print(f"{name:26s} {row['status']:13s} max|diff| {row['max_abs_diff']:.2e} "
                  f"(rel {row['rel_diff']:.1e}, top-1 {row['top1_agreement']:.3f})  {t}", flush=True)
        else:
            print(f"{name:26s} {row['status']}: {row['error']}", flush=True)
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        if on_row:
            on_row(results)
    return results


def write(report: dict, path: str | None) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(path).with_name(Path(path).name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
        tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_selfcheck", description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="exported student (.json); default: random --backbone")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--size", type=int, default=224, help="input size for the random model")
    ap.add_argument("--batches", default="1,8", help="comma-separated batch sizes to time")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--only", help="comma-separated subset of: " + ",".join(CHECKED))
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (tens of seconds)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda", help="cuda[:N]; 'cpu' runs the CPU-capable checks "
                                                     "(a dry run of this command on a machine without a GPU)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    report: dict = {"environment": environment(args.device), "cuda": torch.cuda.is_available()}
    cpu = args.device == "cpu"
    if not cpu and not torch.cuda.is_available():
        report["status"] = "no CUDA, skipped"
        print("gpu_selfcheck: no CUDA, skipped")
    else:
        only = args.only.split(",") if args.only else list(CHECKED)
        bad = [n for n in only if n not in CHECKED]
        if bad:
            print(f"error: unknown check(s) {bad}; choose from {list(CHECKED)}", file=sys.stderr)
            return 2
        # the variants of this device among those asked for (a CPU dry run drops the CUDA-only ones)
        variants = [v for v in self_checked(args.device) if v.id in only and not (args.no_compile and v.slow_build)]
        try:
            source = make_source(args)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        batches = [int(b) for b in args.batches.split(",")]
        where = "CPU (dry run)" if cpu else f"GPU {report['environment']['gpu']}"
        print(f"{where}; model {source.name} input {source.meta['input_size']}; reference: CPU torch eager fp32",
              flush=True)
        report.update(device=args.device, model=source.name, input_size=source.meta["input_size"], batches=batches,
                      status="incomplete (killed before the last check)", results=[])

        def save(rows):
            report["results"] = rows
            write(report, args.json)

        run_checks(source, variants, batches, args.iters, args.seed, args.device, on_row=save)
        ran = [r for r in report["results"] if r["status"] != "skipped"]
        report["status"] = "ok" if ran and all(r["status"] == "ok" for r in ran) else "failed"
    write(report, args.json)
    return 0 if report["status"] in ("ok", "no CUDA, skipped") else 1


if __name__ == "__main__":
    sys.exit(main())

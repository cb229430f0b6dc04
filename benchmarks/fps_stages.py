"""Stages alone: preprocessing, inference per engine and batch size, smoothing and alerts.

Each stage is the runtime's own code (stream.preprocess, stream.engines, stream.smoothing,
stream.alerts) called in a tight loop after warm-up; figures are per call percentiles and
the rate they imply. The naive numpy preprocessing is measured beside the real one.
"""
from __future__ import annotations

import time
from functools import partial

import numpy as np

from benchmarks.engine_variants import EngineVariant, skip_reason
from benchmarks.timing import cycle, repeat, summary_ms


def _input(batch: int, size: tuple[int, int], device: str):
    x = np.random.default_rng(batch).standard_normal((batch, 3, *size), dtype=np.float32)
    if device.startswith("cuda"):
        import torch

        # The pipeline hands GPU engines a tensor already on the device (GPU preprocessing).
        return torch.from_numpy(x).to(device)
    return x


def _is_oom(e: BaseException) -> bool:
    return "out of memory" in str(e).lower() or type(e).__name__ == "OutOfMemoryError"


def bench_engine(variant: EngineVariant, source_fn, device: str, batches, seconds: float,
                 progress=None) -> list[dict]:
    """One row per batch size; an engine that cannot be built here yields one 'skipped' row."""
    from stream.engines import EngineError, build_engine

    sizes = [b for b in batches if variant.batches is None or b in variant.batches]
    if not sizes:
        return [{"engine": variant.id, "skipped": f"not timed at batch {list(batches)} (it builds for tens of "
                                                  f"seconds per size: only {list(variant.batches)})"}]
    rows = []
    for b in sizes:
        row = {"engine": variant.id, "batch": b}
        t0 = time.perf_counter()
        engine = None
        try:
            src = source_fn()
            engine = build_engine(variant.kind, src, device=device, max_batch=b, **variant.opts)
            x = _input(b, engine.input_size, device)
            engine.infer(x)  # first call: compilation, graph capture, allocator growth
            row["setup_s"] = round(time.perf_counter() - t0, 2)
            times = repeat(partial(engine.infer, x), seconds=seconds, warmup=2, min_iters=3, device=device)
            s = summary_ms(times)
            row.update(s, img_s=round(b * 1e3 / s["p50_ms"], 1), ms_per_img=round(s["p50_ms"] / b, 3),
                       actual=engine.describe().get("precision"))
        except (EngineError, ImportError, FileNotFoundError) as e:
            rows.append({"engine": variant.id, "skipped": " ".join(str(e).split())[:240]})
            if progress:
                progress(len(batches))
            return rows
        except Exception as e:  # noqa: BLE001 - recorded in the table; the next batch size still runs
            row["error"] = " ".join(str(e).split())[:240]
            rows.append(row)
            if _is_oom(e):  # larger batches will not fit either
                row["error"] = "out of memory"
                break
            continue
        finally:
            if engine is not None:
                engine.close()
        rows.append(row)
        if progress:
            progress(1)
    return rows


def bench_inference(variants, source_fn, device: str, batches, seconds: float, progress=None) -> list[dict]:
    rows = []
    for variant in variants:
        reason = skip_reason(variant.kind, device)
        if reason:
            rows.append({"engine": variant.id, "skipped": reason})
            continue
        rows += bench_engine(variant, source_fn, device, batches, seconds, progress)
    return rows


def bench_pair(base: EngineVariant, other: EngineVariant, source_fn, device: str, batch: int, seconds: float,
               rounds: int = 4) -> dict:
    """Two engines timed in alternating rounds at one batch size. On a machine shared with other
    jobs the load changes between two sequential measurements; alternating rounds expose both
    engines to the same load, so their ratio is the fair one (the sweep's rows are sequential)."""
    from stream.engines import EngineError, build_engine

    engines = {}
    try:
        for variant in (base, other):
            engines[variant.id] = build_engine(variant.kind, source_fn(), device=device, max_batch=batch,
                                               **variant.opts)
    except (EngineError, ImportError, FileNotFoundError) as e:
        for eng in engines.values():
            eng.close()
        return {"batch": batch, "base": base.id, "other": other.id, "skipped": " ".join(str(e).split())[:240]}
    x = _input(batch, engines[base.id].input_size, device)
    times: dict[str, list[float]] = {sid: [] for sid in engines}
    try:
        for _ in range(rounds):
            for sid, eng in engines.items():
                # one untimed call per round: the other engine's threads may still be winding down
                times[sid] += repeat(partial(eng.infer, x), seconds=seconds / rounds, warmup=1, min_iters=2,
                                     device=device)
    finally:
        for eng in engines.values():
            eng.close()
    out: dict = {"batch": batch, "base": base.id, "other": other.id, "rounds": rounds}
    for sid, t in times.items():
        s = summary_ms(t)
        out[sid] = {"p50_ms": s["p50_ms"], "n": s["n"], "img_s": round(batch * 1e3 / s["p50_ms"], 1)}
    out["ratio"] = round(out[other.id]["img_s"] / out[base.id]["img_s"], 2)
    return out


def bench_preprocess(frames_by_clip: dict, meta: dict, input_size, device: str, seconds: float,
                     batches=(1, 8)) -> list[dict]:
    """stream.preprocess.Preprocessor on decoded frames, beside the naive numpy version."""
    from benchmarks.naive import NaiveClassifier
    from stream.frame import Frame
    from stream.preprocess import Preprocessor

    rows = []
    for clip, rgbs in frames_by_clip.items():
        frames = [Frame(i, i / 30, time.monotonic(), rgb) for i, rgb in enumerate(rgbs)]
        pre = Preprocessor(input_size, meta["mean"], meta["std"], device=device)
        for b in batches:
            batch = (frames * (b // len(frames) + 1))[:b]
            # the preprocessor takes one frame (only the batcher batches): a row of b frames times b calls
            times = repeat(partial(_each, pre, batch), seconds=seconds, warmup=2, min_iters=3, device=device)
            s = summary_ms(times)
            rows.append({"clip": clip, "impl": f"stream.preprocess ({pre.backend})", "batch": b, **s,
                         "frames_s": round(b * 1e3 / s["p50_ms"], 1)})
        naive = NaiveClassifier(None, input_size, meta["mean"], meta["std"])
        next_bgr = cycle([np.ascontiguousarray(r[..., ::-1]) for r in rgbs])
        times = repeat(lambda: naive.preprocess(next_bgr()), seconds=seconds, warmup=2, min_iters=3)  # noqa: B023
        s = summary_ms(times)
        rows.append({"clip": clip, "impl": "naive numpy", "batch": 1, **s, "frames_s": round(1e3 / s["p50_ms"], 1)})
    return rows


def _each(fn, items) -> None:
    for item in items:
        fn(item)


def bench_smoothing(num_classes: int, seconds: float) -> list[dict]:
    from stream.alerts import AlertMachine
    from stream.smoothing import build_smoother, list_smoothers

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(num_classes), size=1024).astype(np.float32)
    rows = []
    for mode in list_smoothers():
        next_p = cycle(probs)
        times = repeat(partial(_call_with, build_smoother(mode).update, next_p), seconds=seconds, warmup=10,
                       min_iters=100)
        rows.append({"stage": f"smoother {mode}", **_us(times)})
    names = tuple(f"c{i}" for i in range(num_classes))
    from stream.alerts import AlertConfig

    alerts = AlertMachine(AlertConfig(class_names=names))
    next_p = cycle(probs)
    times = repeat(lambda: alerts.update(next_p(), time.monotonic()), seconds=seconds, warmup=10, min_iters=100)
    rows.append({"stage": "alert machine", **_us(times)})
    return rows


def _call_with(fn, next_arg):
    return fn(next_arg())


def _us(times) -> dict:
    a = np.asarray(times) * 1e6
    return {"n": int(a.size), "p50_us": round(float(np.median(a)), 2), "p99_us": round(float(np.percentile(a, 99)), 2),
            "per_s": round(1e6 / float(np.median(a)), 0)}

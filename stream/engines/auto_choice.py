"""``--engine auto`` on a CPU decides on the host it runs on (issue 17).

Whether a student's int8 graph pays off depends on the instruction set: the same graph ran faster
than fp32 on an AVX-512 VNNI host, slower on an AVX2-only one, and lost more AUC there. So the
speed-up stored beside the graph (``<stem>.int8.json``, measured where it was calibrated) is never
read as this host's. On a model's first use on a host a probe of a few seconds builds each CPU
candidate, checks int8's top-1 agreement with fp32 on fixed frames, times the candidates at
batch 1 and 8 (live and replay; fixed, so one decision serves every command) and keeps the fastest that meets the bound. The decision is cached as JSON
under a key of everything that could change it; a hit reuses it without measuring. The int8
graph probed is the one ``ModelSource.int8_graph`` picked for this host (a student may ship one
per instruction set); the key and the printed line name it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from pagkd_core.digest import file_sha256
from stream import host

from . import usable_cores
from .model_source import Int8Graph, cache_dir

PROBE_VERSION = 1  # bump when the method changes: decisions made the old way are then re-probed
AGREEMENT_BOUND = 0.97  # int8's top-1 agreement with fp32, issue 17's accuracy bound
PROBE_BATCHES = (1, 8)  # timed at: live (one frame at a time) and replay (full batches)
FRAMES = 96  # agreement frames: one disagreement moves the figure by about 0.01
# Timing rounds, interleaved over the candidates so that a change in load hits all of them alike;
# after MIN_ROUNDS the probe stops once BUDGET_S of measured time is spent (a large student).
ROUNDS, MIN_ROUNDS, BUDGET_S = 7, 3, 3.0
INT8, FP32 = "onnxruntime-int8", "onnxruntime-fp32"
# Timed candidates. torch eager fp32 is not: importing torch and timm and building the model took
# 3.3 s on the 2-core dev machine, more than the rest of the probe, and ONNX Runtime fp32 ran at
# least as fast there and on issue 17's AVX2 host. It stays the fallback after these.
PROBED = (INT8, FP32)
DEMO_VIDEO = Path(__file__).resolve().parents[1] / "assets" / "demo.mp4"

Measure = Callable[[object, np.ndarray, int], float]


def candidate_name(kind: str, extra: dict) -> str:
    return f"{kind}-{extra.get('precision', 'auto')}"


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"


def time_calls(engine, x: np.ndarray, calls: int) -> float:
    """Seconds for ``calls`` inferences of ``x`` (the measure the probe uses; tests inject theirs)."""
    t = time.perf_counter()
    for _ in range(calls):
        engine.infer(x)
    return time.perf_counter() - t


def choice_dir() -> Path:
    """Decisions live in the runtime's cache (``$PAGKD_CACHE``, else ``$XDG_CACHE_HOME/pagkd``)."""
    return cache_dir() / "engine_choice"


def _version(package: str) -> str | None:  # read without importing: torch alone takes seconds
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cache_key(source, int8: Int8Graph, batches: list[int], opts: dict) -> dict:
    """Everything the decision depends on; a change in any of it re-probes. The int8 graph by its
    content, and by name and ``for_isa`` for the line (another host may pick another variant)."""
    return {"probe": PROBE_VERSION, "weights": source.weights_hash(),
            "int8_graph": {"file": int8.path.name, "for_isa": list(int8.for_isa),
                           "sha256": file_sha256(int8.path, 16)},
            "cpu": host.cpu_model(), "isa": host.isa_flags(), "cores": usable_cores(),
            "onnxruntime": _version("onnxruntime"), "torch": _version("torch"), "batches": list(batches),
            "opts": json.loads(json.dumps(opts, sort_keys=True, default=str))}


def record_path(source, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return choice_dir() / f"{source.name}-{digest}.json"


def probe_frames(meta: dict, count: int = FRAMES) -> tuple[np.ndarray, dict]:
    """(count,3,H,W) model inputs and where they came from: evenly spaced frames of the bundled demo
    video through the model's own preprocessor (what the runtime feeds it), else seeded synthetic
    pictures (a weaker check: no lesion in them), and the record says which."""
    from stream.frame import Frame
    from stream.preprocess import Preprocessor

    try:
        import av

        pre = Preprocessor.for_model(meta, device="cpu")
        with av.open(str(DEMO_VIDEO)) as c:
            vs, out = c.streams.video[0], []
            keep = set(np.linspace(0, vs.frames - 1, count).round().astype(int).tolist())
            vs.thread_type = "AUTO"
            for i, vf in enumerate(c.decode(video=0)):
                f = Frame(i, None, 0.0, picture=vf)
                pre.area(f)  # the content tracker sees every frame, as in the pipeline
                if i in keep:
                    out.append(pre(f))
        if len(out) == count:
            return np.stack(out).astype(np.float32), {"count": count, "from": "demo-video", "path": str(DEMO_VIDEO)}
        why = f"{DEMO_VIDEO.name} gave {len(out)} of {count} frames"
    except Exception as e:  # noqa: BLE001 - a trimmed install or a broken decoder: fall back, say so
        why = _one_line(e)
    h, w = meta["input_size"]
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (count, 8, 8, 3)).astype(np.uint8)  # smooth colour fields
    pics = coarse.repeat(-(-h // 8), 1).repeat(-(-w // 8), 2)[:, :h, :w]
    pre = Preprocessor.for_model(meta, device="cpu", detect=False)
    x = np.stack([pre(Frame(i, None, 0.0, np.ascontiguousarray(p))) for i, p in enumerate(pics)])
    return x.astype(np.float32), {"count": count, "from": "synthesised", "why": why}


def probe(candidates: list[tuple[str, dict]], build: Callable, frames: np.ndarray, batches: list[int],
          measure: Measure = time_calls) -> dict:
    """Build, check and time ``candidates``; returns the decision record's figures and ``order``:
    the accepted candidates, fastest first (empty when none ran)."""
    engines, entries, logits = {}, {}, {}
    for kind, extra in candidates:
        name, eng = candidate_name(kind, extra), None
        try:
            eng = build(kind, extra)
            logits[name] = eng.infer(frames)  # also warms it up at its largest batch
            for b in batches:
                eng.infer(_batch(frames, b))
            engines[name] = eng
        except Exception as e:  # noqa: BLE001 - one failure only takes that candidate out
            entries[name] = {"skipped": _one_line(e)}
            if eng is not None:
                eng.close()
    try:
        rates = interleaved_rates(engines, frames, batches, measure, min_rounds=MIN_ROUNDS,
                                  budget_s=BUDGET_S, max_rounds=ROUNDS)
    finally:
        for eng in engines.values():
            eng.close()
    ref, scores = logits.get(FP32), {}
    for name in engines:
        speed = {str(b): round(v, 1) for b, v in rates[name].items()}
        # geometric mean over the batch sizes: live runs at 1, replays at the largest
        scores[name] = math.exp(np.mean([math.log(v) for v in speed.values()]))
        e = entries[name] = {"images_per_s": speed}
        if name != FP32:
            e["agreement"] = None if ref is None else round(float(
                (logits[name].argmax(1) == ref.argmax(1)).mean()), 4)
            if e["agreement"] is not None and e["agreement"] < AGREEMENT_BOUND:
                e["rejected"] = f"top-1 agreement with fp32 {e['agreement']} < {AGREEMENT_BOUND}"
                scores.pop(name)
    order = sorted(scores, key=scores.get, reverse=True)
    return {"candidates": entries, "order": order, "bound": AGREEMENT_BOUND, "batches": batches}


def interleaved_rates(engines: dict, frames: np.ndarray, batches, measure: Measure = time_calls, *,
                      min_rounds: int, budget_s: float, max_rounds: int | None = None) -> dict[str, dict[int, float]]:
    """Images per second of each of ``engines`` (already warm) at each batch size, timed in
    interleaved rounds (every engine and size once per round, about the same images per sample)
    and summarised by the median: a change in the load of a shared machine then hits every
    engine alike, so their ratios stay fair. At least ``min_rounds``; then until ``budget_s``
    seconds of timed calls are spent, or ``max_rounds``. The probe and benchmarks.int8 both use it."""
    per_image: dict[str, dict[int, list[float]]] = {n: {b: [] for b in batches} for n in engines}
    spent, rounds = 0.0, 0
    while rounds < min_rounds or (spent <= budget_s and (max_rounds is None or rounds < max_rounds)):
        for name, eng in engines.items():
            for b in batches:
                calls = max(1, max(batches) // b)  # about the same images per sample at every size
                s = measure(eng, _batch(frames, b), calls)
                per_image[name][b].append(s / (calls * b))
                spent += s
        rounds += 1
    return {n: {b: 1.0 / max(float(np.median(t)), 1e-9) for b, t in per_b.items()} for n, per_b in per_image.items()}


def _batch(frames: np.ndarray, b: int) -> np.ndarray:
    return frames[np.arange(b) % len(frames)]  # repeats the frames when the batch is larger


def summary_line(record: dict, where: str) -> str:
    """The one line printed for a decision: the choice, the figures it rests on, ``where`` it is kept."""
    c, order, key = record["candidates"], record["order"], record["key"]
    choice = order[0] if order else "none"
    # Which int8 graph was probed (a student may ship one per instruction set), named once: after
    # the choice where it ran, else where int8's figures or its failure are.
    g = key["int8_graph"]
    graph = f"[{Int8Graph(Path(g['file']), tuple(g['for_isa'])).label()}]"
    head, int8 = (f"{choice} {graph}", "int8") if choice == INT8 else (choice, f"int8 {graph}")
    parts = []
    i8, f32 = c.get(INT8, {}), c.get(FP32, {})
    if "images_per_s" in i8 and "images_per_s" in f32:
        ratios = [f"{i8['images_per_s'][str(b)] / f32['images_per_s'][str(b)]:.2f}x" + (" fp32" if i == 0 else "")
                  + f" at batch {b}" for i, b in enumerate(sorted(record["batches"], reverse=True))]
        parts.append(f"{int8} " + ", ".join(ratios))
    if i8.get("agreement") is not None:
        fr = record["frames"]
        parts.append(f"agreement {i8['agreement']:.3f} on {fr['count']} {fr['from']} frames"
                     + (f" (< {record['bound']}: int8 rejected)" if "rejected" in i8 else ""))
    parts += [f"{int8 if n == INT8 else n} not built ({e['skipped']})"
              for n, e in c.items() if "skipped" in e]
    flags = " ".join(key["isa"]) or "no AVX2 or newer"
    return f"engine auto: {head} ({'; '.join(parts)}; probed on {key['cpu']} {flags}, {where})"


def _load(path: Path, key: dict) -> tuple[dict, str] | None:
    """The cached record for ``key`` and its line, or None (a miss, or a corrupt file: warned)."""
    try:
        if not path.is_file():
            return None
        rec = json.loads(path.read_text())
        if rec["key"] != key:  # another key with the same digest: treat as a miss
            return None
        if not (isinstance(rec["order"], list) and rec["order"] and all(n in PROBED for n in rec["order"])):
            raise ValueError("no valid choice in it")
        return rec, summary_line(rec, f"reused {path}, probed {rec['measured']}")  # checks the figures
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, ZeroDivisionError) as e:
        print(f"warning: engine choice cache {path} unreadable ({_one_line(e)}); probing again and "
              f"rewriting it", file=sys.stderr, flush=True)
        return None


def _save(path: Path, record: dict) -> str:
    """Where the record went, for the line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one
        return f"cached at {path}"
    except OSError as e:  # a read-only home: the run goes on, the next one probes again
        return f"not cached: {_one_line(e)}"


def choose(source, int8: Int8Graph, candidates: list[tuple[str, dict]], build: Callable,
           opts: dict, report: Callable[[str], None], measure: Measure | None = None,
           frames: tuple[np.ndarray, dict] | None = None) -> list[tuple[str, dict]]:
    """``candidates`` (auto's list) in this host's order: the accepted probed ones fastest first,
    then the unprobed rest (torch) as fallbacks. A probed one that failed to build or the accuracy
    bound is dropped. ``build(kind, extra) -> Engine``; ``report`` gets the one line."""
    # A live stream's batch, and a replay's full one - fixed rather than this run's --batch, so
    # that one decision per model and host serves every command (the UI's live view and its
    # replays included) instead of a probe per batch setting. ONNX Runtime takes any batch.
    batches = list(PROBE_BATCHES)
    key = cache_key(source, int8, batches, opts)
    path = record_path(source, key)
    hit = _load(path, key)
    if hit is not None:
        record, line = hit
    else:
        probed = [c for c in candidates if candidate_name(*c) in PROBED]
        x, where = frames if frames is not None else probe_frames(source.meta)
        record = probe(probed, build, x, batches, measure or time_calls)
        record.update(key=key, frames=where, host=host.machine_line(),
                      measured=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
        if not record["order"]:  # nothing ran: nothing worth keeping; the fallbacks say why
            return candidates
        line = summary_line(record, _save(path, record))
    report(line)
    named = {candidate_name(*c): c for c in candidates}
    return [named[n] for n in record["order"] if n in named] + \
        [c for c in candidates if candidate_name(*c) not in PROBED]

"""SRCA implementations, forward+backward, against the materialised-mask reference.

    python -m benchmarks.kernels [--quick] [--device cpu|cuda] [--json PATH] [--update-dispatch]

Per case: correctness (max error of output and gradients vs the reference), time (min over
interleaved repeats: all implementations take turns, so load from other processes hits them
alike) and peak memory, as ratios to the reference measured in the same run. Then the
dispatch order it implies (fastest first); --update-dispatch writes it to kernels/dispatch.json.

Peak memory. CUDA: torch.cuda.max_memory_allocated above the inputs. CPU: every (impl, case)
runs once more in a fresh process that resets Linux's peak-RSS counter (/proc/self/clear_refs)
after building its inputs and warming up, and reports VmHWM - VmRSS, i.e. everything the
forward+backward allocated (torch, numba, BLAS). glibc's mmap threshold is pinned at 128 KiB
there so freed buffers leave the RSS instead of being recycled unseen.

Labels are CAM-like (synthetic): per 14x14 image a random Gaussian blob is min-max normalised
and cut at 0.3 / 0.7 into background / ambiguous / lesion, as GKD-Den does; the "dense" cases
use a single label (no sparsity to exploit: the worst case for the label-sorting kernels)."""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

import kernels
from kernels.op import DISPATCH_PATH, can_run

HW = 14 * 14


@dataclass(frozen=True)
class Case:
    G: int
    H: int
    L: int
    D: int = 128
    labels: str = "cam"        # "cam" | "dense"
    dtype: str = "float32"

    @property
    def name(self) -> str:
        return f"G{self.G} H{self.H} L{self.L} {self.labels} {self.dtype}"


CPU_CASES = [Case(1, 1, 1600), Case(1, 4, 1600), Case(1, 1, 1600, labels="dense"), Case(1, 1, 4704),
             Case(1, 4, 4704), Case(1, 1, 9408)]
CPU_QUICK = [Case(1, 1, 392), Case(1, 1, 1600), Case(1, 1, 1600, labels="dense")]
# Ordered so torch.compile (flex) recompiles as little as possible; capped at L = 9,408 because
# the float32 truth for half inputs at 18,816 (G2 H4) needs more than an H100's memory.
CUDA_CASES = [Case(2, 1, 1600, dtype="bfloat16"), Case(2, 4, 4704, dtype="bfloat16"),
              Case(2, 4, 4704, labels="dense", dtype="bfloat16"), Case(2, 4, 9408, dtype="bfloat16"),
              Case(2, 4, 4704), Case(2, 1, 1600, dtype="float16")]
CUDA_QUICK = [Case(2, 1, 1600, dtype="bfloat16"), Case(2, 4, 4704)]


def cam_labels(G: int, L: int, gen: torch.Generator) -> torch.Tensor:
    n = math.ceil(L / HW)
    yy, xx = torch.meshgrid(torch.arange(14.0), torch.arange(14.0), indexing="ij")
    centre = torch.rand(G, n, 2, generator=gen) * 14
    radius = 1.5 + 3.5 * torch.rand(G, n, 1, 1, generator=gen)
    d2 = (yy - centre[..., 0, None, None]) ** 2 + (xx - centre[..., 1, None, None]) ** 2
    cam = torch.exp(-d2 / (2 * radius ** 2)) + 0.1 * torch.rand(G, n, 14, 14, generator=gen)
    lo, hi = cam.amin((-1, -2), keepdim=True), cam.amax((-1, -2), keepdim=True)
    cam = ((cam - lo) / (hi - lo)).flatten(1)[:, :L]
    labels = torch.full(cam.shape, -1, dtype=torch.long)
    labels[cam < 0.3], labels[cam >= 0.7] = 0, 1
    return labels


def make_inputs(case: Case, device: str, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    dtype = getattr(torch, case.dtype)
    q, k, v = (torch.randn(case.G, case.H, case.L, case.D, generator=gen).to(device, dtype).requires_grad_()
               for _ in range(3))
    if case.labels == "dense":
        ql, kl = torch.zeros(case.G, case.L, dtype=torch.long), torch.zeros(case.G, case.L, dtype=torch.long)
    else:
        ql, kl = cam_labels(case.G, case.L, gen), cam_labels(case.G, case.L, gen)
    dout = torch.randn(q.shape, generator=gen).to(device, dtype)
    return q, k, v, ql.to(device), kl.to(device), dout


def step(impl: str, q, k, v, ql, kl, dout):
    for t in (q, k, v):
        t.grad = None
    out = kernels.srca(q, k, v, ql, kl, impl=impl)
    out.backward(dout)
    return out


def sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def check(impl, inputs, ref) -> float:
    """Largest error of out/dq/dk/dv relative to the reference's largest magnitude; inf if a
    row without allowed keys is not exactly zero (output and dq) or anything is NaN."""
    out = step(impl, *inputs).detach()
    got = [out] + [t.grad for t in inputs[:3]]
    q_labels, k_labels = inputs[3], inputs[4]
    empty = ~kernels.relation_mask(q_labels, k_labels).any(-1)           # (G, Lq)
    for t in got[:2]:
        if not torch.isfinite(t).all() or (t.transpose(1, 2)[empty] != 0).any():
            return math.inf
    return max(((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1e-30)).item()
               for a, b in zip(got, ref))


def tolerance(dtype: str) -> float:
    return 1e-3 if dtype == "float32" else 5e-2


def time_case(case, impls, device, repeats, clock=time.perf_counter) -> dict:
    inputs = make_inputs(case, device)
    inputs[3][:, :8] = 7          # a label no key has: rows that must come out exactly zero
    ref_out = step("reference", *inputs).detach()
    ref = [ref_out] + [t.grad.clone() for t in inputs[:3]]
    if case.dtype != "float32":   # the truth for half inputs is the float32 reference
        up = [t.detach().float().requires_grad_() for t in inputs[:3]] + list(inputs[3:5]) + [inputs[5].float()]
        ref = [step("reference", *up).detach()] + [t.grad for t in up[:3]]
    errors, failed = {}, {}
    for name in impls:            # the first call also compiles (Triton, flex): not timed
        try:
            errors[name] = check(name, inputs, ref)
        except Exception as exc:  # noqa: BLE001  one broken implementation must not end the run
            failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    timed = [n for n in impls if n not in failed]
    best = {name: math.inf for name in timed}
    for _ in range(repeats):
        for name in timed:        # interleaved: background load hits every impl alike
            sync(device)
            t0 = clock()
            step(name, *inputs)
            sync(device)
            best[name] = min(best[name], clock() - t0)
    allowed = (kernels.relation_mask(inputs[3], inputs[4]).sum() / (case.G * case.L * case.L)).item()
    return {"seconds": best, "max_rel_error": errors, "failed": failed, "allowed_fraction": allowed}


def cuda_peak(case, impl) -> int | None:
    try:
        return _cuda_peak(case, impl)
    except Exception:  # noqa: BLE001  already reported by time_case
        return None


def _cuda_peak(case, impl) -> int:
    inputs = make_inputs(case, "cuda")
    step(impl, *inputs)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step(impl, *inputs)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+)", f.read()).group(1))


def cpu_peak_probe(case: Case, impl: str) -> int:
    """Run inside the fresh child process (see module doc)."""
    step(impl, *make_inputs(Case(1, 1, 256, case.D, case.labels, case.dtype), "cpu"))   # load/compile
    inputs = make_inputs(case, "cpu")
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    step(impl, *inputs)
    return (_status_kib("VmHWM") - before) * 1024


def cpu_peak(case: Case, impl: str) -> int | None:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    cmd = [sys.executable, "-m", "benchmarks.kernels", "--probe", json.dumps([asdict(case), impl])]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    found = re.search(r"PEAK (\d+)", proc.stdout)
    return int(found.group(1)) if found else None


def dispatch_order(results, impls) -> list[str]:
    """Fastest first by total time over the cases that decide training speed (L >= 1,600),
    among implementations that were correct on every case."""
    big = [r for r in results if r["case"]["L"] >= 1600]
    ok = [i for i in impls if all(i in r["seconds"] and r["max_rel_error"][i] < tolerance(r["case"]["dtype"])
                                  for r in results)]
    return sorted(ok, key=lambda i: sum(r["seconds"][i] for r in big))


def dispatch_by_dtype(results, impls) -> dict[str, list[str]]:
    """One order per measured dtype: on a GPU the half-precision tensor-core kernels and the
    float32 ones rank differently (see docs/kernels.md)."""
    dtypes = sorted({r["case"]["dtype"] for r in results})
    return {d: dispatch_order([r for r in results if r["case"]["dtype"] == d], impls) for d in dtypes}


def table(results, impls, device_name) -> str:
    head = "| case | allowed pairs | " + " | ".join(f"{i} time (x ref) | {i} peak mem (x ref)" for i in impls) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(impls))]
    for r in results:
        cells = []
        for i in impls:
            if i not in r["seconds"]:
                cells += ["failed: " + r["failed"][i][:60], "n/a"]
                continue
            t, rt = r["seconds"][i], r["seconds"][i] / r["seconds"]["reference"]
            m, rm = r["peak_bytes"].get(i), r["peak_bytes"].get("reference")
            mem = "n/a" if m is None or not rm else f"{m / 2**20:.0f} MiB ({m / rm:.2f})"
            cells += [f"{t * 1e3:.0f} ms ({rt:.2f})", mem]
        lines.append(f"| {r['case_name']} | {r['allowed_fraction']:.2f} | " + " | ".join(cells) + " |")
    return f"device: {device_name}\n" + "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--quick", action="store_true", help="small cases only (seconds on CPU)")
    p.add_argument("--json", help="write the full results here")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--threads", type=int, help="CPU threads for torch and numba (default: all)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="cpu = process CPU time: with --threads 1 it ignores other processes' load")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--budget-s", type=float, default=None,
                   help="start no new case after this many seconds (default: cuda 60, cpu 1800)")
    p.add_argument("--update-dispatch", action="store_true", help="write the order to kernels/dispatch.json")
    p.add_argument("--apply-dispatch", metavar="JSON",
                   help="copy the order from a results file of another machine (a GPU run) into kernels/dispatch.json")
    p.add_argument("--probe", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.probe:
        case, impl = json.loads(args.probe)
        print(f"PEAK {cpu_peak_probe(Case(**case), impl)}")
        return 0
    if args.apply_dispatch:
        with open(args.apply_dispatch) as f:
            run = json.load(f)
        # Orders recomputed from the results, so a file from before per-dtype orders works too.
        impls = sorted({i for r in run["results"] for i in r["seconds"]})
        order, by_dtype = dispatch_order(run["results"], impls), dispatch_by_dtype(run["results"], impls)
        write_dispatch(run["device_type"], order, run["source"], by_dtype)
        print(f"kernels/dispatch.json: {run['device_type']} -> {order}, by dtype {by_dtype} ({run['source']})")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks.kernels: --device cuda but torch sees no GPU; run on a GPU host", file=sys.stderr)
        return 2
    if args.clock == "cpu" and (args.device != "cpu" or args.threads != 1):
        p.error("--clock cpu needs --device cpu --threads 1 (CPU time of several threads includes spinning)")
    if args.threads:
        import numba
        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)
    cases = {("cpu", False): CPU_CASES, ("cpu", True): CPU_QUICK,
             ("cuda", False): CUDA_CASES, ("cuda", True): CUDA_QUICK}[(args.device, args.quick)]
    repeats = args.repeats or (2 if args.quick else 3) * (3 if args.device == "cuda" else 1)
    impls = [i for i in kernels.IMPLS if can_run(i, args.device, torch.float32, True, auto=True)]
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {os.cpu_count()} cores"
    budget = args.budget_s or (60 if args.device == "cuda" else 1800)
    start, results, skipped = time.perf_counter(), [], []
    source = (f"python -m benchmarks.kernels --device {args.device}{flags(args)} on "
              f"{device_name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")

    def save(order):  # after every case too, so a run killed at its time limit keeps what it measured
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"device": device_name, "device_type": args.device, "torch": torch.__version__,
                           "results": results, "order": order, "skipped": skipped, "source": source}, f, indent=1)

    for case in tqdm(cases, desc="srca cases"):
        if time.perf_counter() - start > budget:
            skipped.append(case.name)
            continue
        r = time_case(case, impls, args.device, repeats, time.process_time if args.clock == "cpu" else time.perf_counter)
        peak = {}
        if not args.no_memory:
            for i in r["seconds"]:
                peak[i] = cuda_peak(case, i) if args.device == "cuda" else cpu_peak(case, i)
        results.append({"case": asdict(case), "case_name": case.name, "peak_bytes": peak, **r})
        tqdm.write(f"{case.name}: " + ", ".join(f"{i} {r['seconds'][i] * 1e3:.1f} ms err {r['max_rel_error'][i]:.1e}"
                                                for i in r["seconds"]) + "".join(f"; {i} FAILED {m}" for i, m in r["failed"].items()))
        save(dispatch_order(results, impls))
    order = dispatch_order(results, impls)
    print(table(results, impls, device_name))
    by_dtype = dispatch_by_dtype(results, impls)
    print(f"dispatch ({args.device}, fastest correct first): {order}; by dtype {by_dtype}"
          + (f"; skipped (budget): {skipped}" if skipped else ""))
    save(order)
    if args.update_dispatch:
        write_dispatch(args.device, order, source, by_dtype)
    return 0


def flags(args) -> str:
    return "".join(f" {f}" for f, on in (("--quick", args.quick), (f"--threads {args.threads}", args.threads),
                                           (f"--clock {args.clock}", args.clock != "wall")) if on)


def write_dispatch(device_type: str, order: list[str], source: str, by_dtype: dict | None = None) -> None:
    if not order:
        raise SystemExit("benchmarks.kernels: no implementation passed the checks; dispatch left unchanged")
    current = json.loads(DISPATCH_PATH.read_text()) if DISPATCH_PATH.exists() else {}
    current[device_type] = {"order": order, "by_dtype": {d: o for d, o in (by_dtype or {}).items() if o},
                            "source": source}
    DISPATCH_PATH.write_text(json.dumps(current, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())

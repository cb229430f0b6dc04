"""The public SRCA op: one entry point, implementations picked by device and measured speed.

The order in which `impl="auto"` tries implementations per device (and, where measured, per
dtype) lives in kernels/dispatch.json, written by `python -m benchmarks.kernels --update-dispatch` from its
own timings (fastest forward+backward first); the first one that can run the call wins."""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import torch

from kernels.flex import flex_available, srca_flex
from kernels.labels import check_inputs
from kernels.numba_cpu import srca_numba
from kernels.reference import srca_reference
from kernels.triton_gpu import srca_triton, triton_available

DISPATCH_PATH = Path(__file__).with_name("dispatch.json")
IMPLS = {"reference": srca_reference, "numba": srca_numba, "flex": srca_flex, "triton": srca_triton}
_FALLBACK_ORDER = ("reference",)


def can_run(impl: str, device, dtype: torch.dtype, needs_grad: bool, auto: bool = False) -> bool:
    """Whether `impl` handles this call here. auto=True also rules out slow emulations
    (Triton's CPU interpreter, flex's unfused eager path) that only tests should use."""
    device = torch.device(device)
    if impl == "reference":
        return True
    if impl == "numba":
        return device.type == "cpu"
    if impl == "flex":
        return flex_available(device, needs_grad)
    if impl == "triton":
        ok_dtype = dtype in (torch.float32, torch.float16, torch.bfloat16)
        return ok_dtype and triton_available(device) and (device.type == "cuda" or not auto)
    raise ValueError(f"srca: unknown impl {impl!r}; choose one of {['auto', *IMPLS]}")


def available_impls(device="cpu", dtype=torch.float32, needs_grad: bool = True) -> list[str]:
    return [name for name in IMPLS if can_run(name, device, dtype, needs_grad)]


@functools.lru_cache(maxsize=1)
def dispatch_table() -> dict:
    if not DISPATCH_PATH.exists():
        return {}
    return json.loads(DISPATCH_PATH.read_text())


def choose_impl(device, dtype: torch.dtype, needs_grad: bool) -> str:
    entry = dispatch_table().get(torch.device(device).type, {})
    # A dtype measured on its own has its own order; any other dtype takes the device's overall one.
    order = entry.get("by_dtype", {}).get(str(dtype).removeprefix("torch."), entry.get("order", ()))
    for name in list(order) + list(_FALLBACK_ORDER):
        if name in IMPLS and can_run(name, device, dtype, needs_grad, auto=True):
            return name
    return "reference"


def srca(q, k, v, q_labels, k_labels, scale: float | None = None, impl: str = "auto") -> torch.Tensor:
    """Semantic-relation cross-attention: softmax(q k^T * scale + R) v, where R allows a query
    token to see a key token iff both labels are equal and >= 0 (-1 = ambiguous).
    q (G, H, Lq, D), k/v (G, H, Lk, D), q_labels (G, Lq), k_labels (G, Lk) integer.
    Rows with no allowed key give zeros and pass no gradient. impl: 'auto' or one of IMPLS."""
    check_inputs(q, k, v, q_labels, k_labels)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if impl == "auto":
        impl = choose_impl(q.device, q.dtype, needs_grad)
    elif not can_run(impl, q.device, q.dtype, needs_grad):
        raise ValueError(f"srca: impl={impl!r} cannot run on {q.device} / {q.dtype} "
                         f"(grad={needs_grad}); available here: "
                         f"{available_impls(q.device, q.dtype, needs_grad)}")
    return IMPLS[impl](q, k, v, q_labels, k_labels, scale)

"""Triton GPU SRCA: FlashAttention-2 forward and backward with the relation mask computed
from the label vectors inside the tile loop.

Why Triton and not numba.cuda: tl.dot compiles to tensor-core MMA (bf16/fp16, tf32) while
numba.cuda exposes no MMA/WMMA intrinsics, so a numba.cuda kernel is bound to CUDA-core FMAs,
an order of magnitude below the H100's tensor throughput; Triton also ships with every torch
CUDA build and its interpreter (TRITON_INTERPRET=1) runs these kernels on CPU for CI.

Inputs arrive label-sorted (kernels.labels.sorted_call): each query tile loops only over the
key tiles holding its labels (ranges found by torch.searchsorted), and each key tile over
the matching query tiles. dQ and dK/dV come from two kernels, so no atomics are needed."""
from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from kernels.labels import sorted_call

try:
    import triton
    import triton.language as tl
except ImportError:  # no triton: triton_available() says so and the dispatcher skips it
    triton = None

BLOCK = 64          # query and key tile rows
if triton is not None:

    @triton.jit
    def _fwd_kernel(Q, K, V, QL, KL, KSTART, KEND, OUT, LSE, scale, H, Lq, Lk, D, NQB,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                    PRECISION: tl.constexpr):
        mb = tl.program_id(0)
        gh = tl.program_id(1)
        g = gh // H
        rows = mb * BLOCK_M + tl.arange(0, BLOCK_M)
        dims = tl.arange(0, BLOCK_D)
        row_ok = rows < Lq
        qoff = gh.to(tl.int64) * Lq * D
        koff = gh.to(tl.int64) * Lk * D
        q = tl.load(Q + qoff + rows[:, None] * D + dims[None, :],
                    mask=row_ok[:, None] & (dims[None, :] < D), other=0.0)
        ql = tl.load(QL + g * Lq + rows, mask=row_ok, other=-1)
        k0 = tl.load(KSTART + g * NQB + mb)
        k1 = tl.load(KEND + g * NQB + mb)
        m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        l_i = tl.zeros((BLOCK_M,), tl.float32)
        acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
        for start in range(k0, k1, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            col_ok = cols < k1
            kv_mask = col_ok[:, None] & (dims[None, :] < D)
            k = tl.load(K + koff + cols[:, None] * D + dims[None, :], mask=kv_mask, other=0.0)
            kl = tl.load(KL + g * Lk + cols, mask=col_ok, other=-2)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
            allowed = (ql[:, None] == kl[None, :]) & (ql[:, None] >= 0)
            s = tl.where(allowed, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)   # empty so far: keep p = 0
            p = tl.exp(s - m_safe[:, None])
            alpha = tl.exp(m_i - m_safe)
            v = tl.load(V + koff + cols[:, None] * D + dims[None, :], mask=kv_mask, other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
            l_i = l_i * alpha + tl.sum(p, 1)
            m_i = m_new
        has = l_i > 0
        out = tl.where(has[:, None], acc / tl.where(has, l_i, 1.0)[:, None], 0.0)
        tl.store(OUT + qoff + rows[:, None] * D + dims[None, :], out.to(OUT.dtype.element_ty),
                 mask=row_ok[:, None] & (dims[None, :] < D))
        lse = tl.where(has, m_i + tl.log(tl.where(has, l_i, 1.0)), float("inf"))
        tl.store(LSE + gh.to(tl.int64) * Lq + rows, lse, mask=row_ok)

    @triton.jit
    def _scores_grad(q, k, v_or_dummy, do, ql, kl, lse, delta, scale, PRECISION: tl.constexpr):
        """Recompute p and dS = p * (dO V^T - delta) for one (query tile, key tile) pair."""
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
        allowed = (ql[:, None] == kl[None, :]) & (ql[:, None] >= 0)
        p = tl.where(allowed, tl.exp(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v_or_dummy), input_precision=PRECISION)
        return p, p * (dp - delta[:, None])

    @triton.jit
    def _bwd_dkdv_kernel(Q, K, V, DO, QL, KL, LSE, DELTA, QSTART, QEND, DK, DV, scale, H, Lq, Lk, D, NKB,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                         PRECISION: tl.constexpr):
        nb = tl.program_id(0)
        gh = tl.program_id(1)
        g = gh // H
        cols = nb * BLOCK_N + tl.arange(0, BLOCK_N)
        dims = tl.arange(0, BLOCK_D)
        col_ok = cols < Lk
        kv_mask = col_ok[:, None] & (dims[None, :] < D)
        qoff = gh.to(tl.int64) * Lq * D
        koff = gh.to(tl.int64) * Lk * D
        k = tl.load(K + koff + cols[:, None] * D + dims[None, :], mask=kv_mask, other=0.0)
        v = tl.load(V + koff + cols[:, None] * D + dims[None, :], mask=kv_mask, other=0.0)
        kl = tl.load(KL + g * Lk + cols, mask=col_ok, other=-2)
        q0 = tl.load(QSTART + g * NKB + nb)
        q1 = tl.load(QEND + g * NKB + nb)
        dk = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
        dv = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
        for start in range(q0, q1, BLOCK_M):
            rows = start + tl.arange(0, BLOCK_M)
            row_ok = rows < q1
            q_mask = row_ok[:, None] & (dims[None, :] < D)
            q = tl.load(Q + qoff + rows[:, None] * D + dims[None, :], mask=q_mask, other=0.0)
            do = tl.load(DO + qoff + rows[:, None] * D + dims[None, :], mask=q_mask, other=0.0)
            ql = tl.load(QL + g * Lq + rows, mask=row_ok, other=-1)
            lse = tl.load(LSE + gh.to(tl.int64) * Lq + rows, mask=row_ok, other=float("inf"))
            delta = tl.load(DELTA + gh.to(tl.int64) * Lq + rows, mask=row_ok, other=0.0)
            p, ds = _scores_grad(q, k, v, do, ql, kl, lse, delta, scale, PRECISION)
            dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PRECISION)
            dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION)
        tl.store(DK + koff + cols[:, None] * D + dims[None, :], (dk * scale).to(DK.dtype.element_ty), mask=kv_mask)
        tl.store(DV + koff + cols[:, None] * D + dims[None, :], dv.to(DV.dtype.element_ty), mask=kv_mask)

    @triton.jit
    def _bwd_dq_kernel(Q, K, V, DO, QL, KL, LSE, DELTA, KSTART, KEND, DQ, scale, H, Lq, Lk, D, NQB,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                       PRECISION: tl.constexpr):
        mb = tl.program_id(0)
        gh = tl.program_id(1)
        g = gh // H
        rows = mb * BLOCK_M + tl.arange(0, BLOCK_M)
        dims = tl.arange(0, BLOCK_D)
        row_ok = rows < Lq
        q_mask = row_ok[:, None] & (dims[None, :] < D)
        qoff = gh.to(tl.int64) * Lq * D
        koff = gh.to(tl.int64) * Lk * D
        q = tl.load(Q + qoff + rows[:, None] * D + dims[None, :], mask=q_mask, other=0.0)
        do = tl.load(DO + qoff + rows[:, None] * D + dims[None, :], mask=q_mask, other=0.0)
        ql = tl.load(QL + g * Lq + rows, mask=row_ok, other=-1)
        lse = tl.load(LSE + gh.to(tl.int64) * Lq + rows, mask=row_ok, other=float("inf"))
        delta = tl.load(DELTA + gh.to(tl.int64) * Lq + rows, mask=row_ok, other=0.0)
        k0 = tl.load(KSTART + g * NQB + mb)
        k1 = tl.load(KEND + g * NQB + mb)
        dq = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
        for start in range(k0, k1, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            col_ok = cols < k1
            kv_mask = col_ok[:, None] & (dims[None, :] < D)
            k = tl.load(K + koff + cols[:, None] * D + dims[None, :], mask=kv_mask, other=0.0)
            v = tl.load(V + koff + cols[:, None] * D + dims[None, :], mask=kv_mask, other=0.0)
            kl = tl.load(KL + g * Lk + cols, mask=col_ok, other=-2)
            _, ds = _scores_grad(q, k, v, do, ql, kl, lse, delta, scale, PRECISION)
            dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
        tl.store(DQ + qoff + rows[:, None] * D + dims[None, :], (dq * scale).to(DQ.dtype.element_ty), mask=q_mask)


def triton_available(device: torch.device | str) -> bool:
    """Real GPU, or CPU tensors under Triton's interpreter (TRITON_INTERPRET=1, for CI)."""
    import os
    if triton is None:
        return False
    if torch.device(device).type == "cuda":
        return torch.cuda.is_available()
    return os.environ.get("TRITON_INTERPRET") == "1"


def _tile_ranges(row_labels, col_labels, block):
    """For each tile of `block` sorted rows: [start, end) of the sorted columns sharing a label."""
    L = row_labels.shape[1]
    first = torch.arange(0, L, block, device=row_labels.device)
    last = (first + block - 1).clamp(max=L - 1)
    lo, hi = row_labels[:, first].clamp(min=0), row_labels[:, last]
    start = torch.searchsorted(col_labels, lo.contiguous(), right=False)
    end = torch.searchsorted(col_labels, hi.contiguous(), right=True)
    end = torch.where(hi < 0, start, end)
    return start.to(torch.int32).contiguous(), end.to(torch.int32).contiguous()


def _precision(dtype) -> str:
    # fp32 follows torch's own matmul setting so it matches the reference bit-for-bit-ish
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


def _launch_meta(q):
    return {"BLOCK_M": BLOCK, "BLOCK_N": BLOCK, "BLOCK_D": max(16, triton.next_power_of_2(q.shape[-1])),
            "PRECISION": _precision(q.dtype), "num_warps": 4, "num_stages": 2}


class _TritonSRCA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, q_labels, k_labels, scale):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        ql, kl = q_labels.to(torch.int32).contiguous(), k_labels.to(torch.int32).contiguous()
        G, H, Lq, D = q.shape
        Lk = k.shape[2]
        kstart, kend = _tile_ranges(q_labels, k_labels, BLOCK)
        out = torch.empty_like(q)
        lse = torch.empty((G, H, Lq), device=q.device, dtype=torch.float32)
        nqb = triton.cdiv(Lq, BLOCK)
        _fwd_kernel[(nqb, G * H)](q, k, v, ql, kl, kstart, kend, out, lse, scale, H, Lq, Lk, D, nqb,
                                   **_launch_meta(q))
        ctx.save_for_backward(q, k, v, out, lse, ql, kl, kstart, kend, q_labels, k_labels)
        ctx.scale = scale
        return out

    @staticmethod
    @once_differentiable        # no double backward: say so instead of returning zeros
    def backward(ctx, dout):
        q, k, v, out, lse, ql, kl, kstart, kend, q_labels, k_labels = ctx.saved_tensors
        dout = dout.contiguous()
        G, H, Lq, D = q.shape
        Lk = k.shape[2]
        delta = (dout.float() * out.float()).sum(-1).contiguous()
        qstart, qend = _tile_ranges(k_labels, q_labels, BLOCK)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        nqb, nkb = triton.cdiv(Lq, BLOCK), triton.cdiv(Lk, BLOCK)
        meta = _launch_meta(q)
        _bwd_dkdv_kernel[(nkb, G * H)](q, k, v, dout, ql, kl, lse, delta, qstart, qend, dk, dv, ctx.scale,
                                        H, Lq, Lk, D, nkb, **meta)
        _bwd_dq_kernel[(nqb, G * H)](q, k, v, dout, ql, kl, lse, delta, kstart, kend, dq, ctx.scale,
                                      H, Lq, Lk, D, nqb, **meta)
        return dq, dk, dv, None, None, None


def srca_triton(q, k, v, q_labels, k_labels, scale: float | None = None) -> torch.Tensor:
    """CUDA tensors in float32/float16/bfloat16 (CPU tensors only under TRITON_INTERPRET=1)."""
    if not triton_available(q.device):
        raise RuntimeError(f"Triton SRCA needs a CUDA device (or TRITON_INTERPRET=1), got {q.device}; "
                           "use impl='auto'")
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"Triton SRCA takes float32/float16/bfloat16, got {q.dtype}; use impl='reference'")
    if q.shape[2] == 0 or k.shape[2] == 0:
        return q.new_zeros(q.shape)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return sorted_call(_TritonSRCA.apply, q, k, v, q_labels, k_labels, scale)

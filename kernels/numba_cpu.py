"""numba CPU SRCA: blockwise online-softmax attention (FlashAttention-2 schedule).

Inputs arrive label-sorted (kernels.labels.sorted_call), so each query tile only scans the
contiguous key range holding its labels, and each key tile only the matching query range.
Forward keeps one log-sum-exp per row; backward recomputes the scores tile by tile, so
memory is linear in L. Tile products go through np.dot (BLAS); masking, exp and the
running max are fused in plain loops between them.

fastmath: reassociation/contraction only. 'nnan'/'ninf' would let LLVM assume exp(-inf)
never happens, which is exactly how masked entries are encoded."""
from __future__ import annotations

import contextlib
import functools
import math

import numba
import numpy as np
import torch
from numba import njit, prange
from torch.autograd.function import once_differentiable

from kernels.fastexp import fexp
from kernels.labels import sorted_call

_FASTMATH = {"contract", "reassoc", "nsz", "arcp"}
# float32 constants: a float64 literal in a select would promote the whole loop to float64
# (and fexp to libm's scalar exp); in float64 kernels they widen exactly.
_NEG_INF, _ZERO = np.float32(-np.inf), np.float32(0.0)
BLOCK_Q = 128
BLOCK_K = 256


@njit(cache=True, inline="always")
def _span(sorted_labels, lo, hi):
    """[start, end) of the entries whose label lies in [max(lo, 0), hi] (labels ascend)."""
    if hi < 0:
        return 0, 0
    lo = max(lo, 0)
    return np.searchsorted(sorted_labels, lo, "left"), np.searchsorted(sorted_labels, hi, "right")


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def _forward(q, k, v, ql, kl, scale, out, lse, bq, bk):
    G, H, Lq, D = q.shape
    nqb = (Lq + bq - 1) // bq
    for task in prange(G * H * nqb):
        g = task // (H * nqb)
        h = (task // nqb) % H
        q0 = (task % nqb) * bq
        q1 = min(q0 + bq, Lq)
        n = q1 - q0
        k0, k1 = _span(kl[g], ql[g, q0], ql[g, q1 - 1])
        m = np.full(n, -np.inf, dtype=q.dtype)
        l = np.zeros(n, dtype=q.dtype)
        acc = np.zeros((n, D), dtype=q.dtype)
        qt = np.ascontiguousarray(q[g, h, q0:q1])
        for s in range(k0, k1, bk):
            e = min(s + bk, k1)
            kt = np.ascontiguousarray(k[g, h, s:e])
            klt = np.ascontiguousarray(kl[g, s:e])
            p = np.dot(qt, kt.T)
            for i in range(n):
                li = ql[g, q0 + i]
                mx = m[i]
                for j in range(e - s):       # branch-free, so LLVM vectorises it
                    x = p[i, j] * scale if klt[j] == li else _NEG_INF
                    p[i, j] = x
                    mx = max(mx, x)
                if li < 0 or mx == -np.inf:   # nothing allowed in this tile (yet): row adds 0
                    p[i, :] = 0.0
                    continue
                alpha = fexp(m[i] - mx)
                l[i] *= alpha
                acc[i, :] *= alpha
                row = l[i] * 0
                for j in range(e - s):
                    x = fexp(p[i, j] - mx) if klt[j] == li else _ZERO
                    p[i, j] = x
                    row += x
                l[i] += row
                m[i] = mx
            acc += np.dot(p, np.ascontiguousarray(v[g, h, s:e]))
        for i in range(n):
            if l[i] > 0:
                out[g, h, q0 + i, :] = acc[i, :] / l[i]
                lse[g, h, q0 + i] = m[i] + np.log(l[i])
            else:                          # fully masked row: zero output, never read back
                out[g, h, q0 + i, :] = 0.0
                lse[g, h, q0 + i] = np.inf


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def _backward(q, k, v, dout, ql, kl, lse, delta, scale, dq_part, dk, dv, bq, bk):
    """Parallel over (g, h, key chunk): each task owns its dK/dV rows outright and adds its
    dQ contributions to a private slice dq_part[chunk], so no two threads write one cell."""
    G, H, _, D = q.shape
    Lk = k.shape[2]
    chunks = dq_part.shape[0]
    for task in prange(G * H * chunks):
        g = task // (H * chunks)
        h = (task // chunks) % H
        c = task % chunks
        first = np.searchsorted(kl[g], 0, "left")   # ambiguous keys (sorted first) get no grad
        width = (Lk - first + chunks - 1) // chunks
        c0 = first + c * width
        c1 = min(c0 + width, Lk)
        for s in range(c0, c1, bk):
            e = min(s + bk, c1)
            m = e - s
            kt = np.ascontiguousarray(k[g, h, s:e])
            vt = np.ascontiguousarray(v[g, h, s:e])
            klt = np.ascontiguousarray(kl[g, s:e])
            dkt = np.zeros((m, D), dtype=q.dtype)
            dvt = np.zeros((m, D), dtype=q.dtype)
            qa, qb = _span(ql[g], kl[g, s], kl[g, e - 1])
            for r in range(qa, qb, bq):
                r1 = min(r + bq, qb)
                n = r1 - r
                qt = q[g, h, r:r1]
                dot_ = dout[g, h, r:r1]
                p = np.dot(qt, kt.T)
                dp = np.dot(dot_, vt.T)
                for i in range(n):
                    li = ql[g, r + i]
                    lse_i = lse[g, h, r + i]
                    delta_i = delta[g, h, r + i]
                    for j in range(m):       # branch-free, so LLVM vectorises it
                        x = fexp(p[i, j] * scale - lse_i) if klt[j] == li else _ZERO
                        p[i, j] = x
                        dp[i, j] = x * (dp[i, j] - delta_i)
                dvt += np.dot(p.T, dot_)
                dkt += np.dot(dp.T, qt)
                dq_part[c, g, h, r:r1] += np.dot(dp, kt)
            dk[g, h, s:e] = dkt * scale
            dv[g, h, s:e] = dvt


@functools.lru_cache(maxsize=1)
def _blas_controller():
    try:
        import scipy.linalg.cython_blas  # noqa: F401  (numba's np.dot BLAS: load it before the scan)
        from threadpoolctl import ThreadpoolController
        return ThreadpoolController()
    except ImportError:          # optional: only silences oversubscription, results are the same
        return None


def _one_blas_thread():
    """np.dot inside a numba prange calls OpenBLAS from every worker; a threaded OpenBLAS there
    oversubscribes the cores (and warns about OpenMP loops). The parallelism is numba's."""
    ctl = _blas_controller()
    return ctl.limit(limits=1, user_api="blas") if ctl is not None else contextlib.nullcontext()


def _typed(x: float, dtype: torch.dtype):
    """Scalars in the tensors' precision: a float64 scale would promote float32 tiles."""
    return np.float32(x) if dtype == torch.float32 else float(x)


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


class _NumbaSRCA(torch.autograd.Function):
    """Label-sorted inputs in, attention out; saves only q, k, v, out and the row lse."""

    @staticmethod
    def forward(ctx, q, k, v, q_labels, k_labels, scale):
        scale = _typed(scale, q.dtype)
        ql, kl = _as_numpy(q_labels.long()), _as_numpy(k_labels.long())
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
        lse = q.new_empty(q.shape[:3])
        with _one_blas_thread():
            _forward(_as_numpy(q), _as_numpy(k), _as_numpy(v), ql, kl, scale, out.numpy(), lse.numpy(),
                     BLOCK_Q, BLOCK_K)
        ctx.save_for_backward(q, k, v, out, lse, q_labels, k_labels)
        ctx.scale = scale
        return out

    @staticmethod
    @once_differentiable        # no double backward: say so instead of returning zeros
    def backward(ctx, dout):
        q, k, v, out, lse, q_labels, k_labels = ctx.saved_tensors
        dout = dout.contiguous()
        delta = (dout * out).sum(-1)
        chunks = max(1, min(numba.get_num_threads(), k.shape[2] // BLOCK_K))
        dq_part = q.new_zeros((chunks,) + tuple(q.shape))
        dk, dv = torch.zeros_like(k), torch.zeros_like(v)
        with _one_blas_thread():
            _backward(_as_numpy(q), _as_numpy(k), _as_numpy(v), _as_numpy(dout),
                      _as_numpy(q_labels.long()), _as_numpy(k_labels.long()), _as_numpy(lse),
                      _as_numpy(delta), ctx.scale, dq_part.numpy(), dk.numpy(), dv.numpy(), BLOCK_Q, BLOCK_K)
        return dq_part.sum(0) * float(ctx.scale), dk, dv, None, None, None


def _sorted_numba(q, k, v, q_labels, k_labels, scale):
    return _NumbaSRCA.apply(q, k, v, q_labels, k_labels, scale)


def srca_numba(q, k, v, q_labels, k_labels, scale: float | None = None) -> torch.Tensor:
    """CPU only. float32/float64 run natively; half types are computed in float32."""
    if q.device.type != "cpu":
        raise ValueError(f"srca_numba runs on CPU tensors, got {q.device}; use impl='auto'")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if q.dtype not in (torch.float32, torch.float64):
        out = srca_numba(q.float(), k.float(), v.float(), q_labels, k_labels, scale)
        return out.to(q.dtype)
    return sorted_call(_sorted_numba, q, k, v, q_labels, k_labels, scale)

"""SRCA through torch FlexAttention: the relation mask becomes a mask_mod over the label
vectors, and label-sorted tokens make the BlockMask block-sparse, so whole tiles of
unrelated tokens are skipped.

Limits of the installed torch, checked rather than assumed:
- torch < 2.5 has no flex_attention: `flex_available()` is False and the dispatcher skips it;
- on CPU (torch 2.14) FlexAttention has no backward, so this path serves CPU inference only;
- without torch.compile flex runs an unfused reference that materialises the scores.

A row with no allowed key is made to attend to key 0 (a finite softmax) and zeroed after:
its upstream gradient is then exactly zero, so nothing in flex's backward can turn the
-inf log-sum-exp of an empty row into NaN."""
from __future__ import annotations

import functools
import math

import torch

from kernels.labels import sorted_call


@functools.lru_cache(maxsize=1)
def _flex():
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError:
        return None
    return flex_attention, create_block_mask


def flex_available(device: torch.device | str, needs_grad: bool) -> bool:
    if _flex() is None:
        return False
    return not (needs_grad and torch.device(device).type == "cpu")


@functools.cache
def _compiled(device_type: str):
    flex_attention, _ = _flex()
    return torch.compile(flex_attention)   # default dynamism: one recompile covers new lengths


def _sorted_flex(q, k, v, q_labels, k_labels, scale, compiled: bool):
    flex_attention, create_block_mask = _flex()
    G, _, Lq, _ = q.shape
    Lk = k.shape[2]
    # per query: does any key share its (non-negative) label? keys are sorted, so search
    lo = torch.searchsorted(k_labels.contiguous(), q_labels.contiguous(), right=False)
    hi = torch.searchsorted(k_labels.contiguous(), q_labels.contiguous(), right=True)
    has_key = (hi > lo) & (q_labels >= 0)
    ql, kl = q_labels, k_labels

    def mask_mod(b, h, qi, ki):
        label = ql[b, qi]
        return ((label == kl[b, ki]) & (label >= 0)) | (~has_key[b, qi] & (ki == 0))

    block_mask = create_block_mask(mask_mod, G, None, Lq, Lk, device=q.device)
    fn = _compiled(q.device.type) if compiled else flex_attention
    out = fn(q, k, v, block_mask=block_mask, scale=scale)
    return torch.where(has_key[:, None, :, None], out, torch.zeros((), dtype=out.dtype, device=out.device))


def srca_flex(q, k, v, q_labels, k_labels, scale: float | None = None, compiled: bool = True):
    """compiled=False runs flex's eager (unfused) path: for tests, not for speed."""
    if _flex() is None:
        raise RuntimeError(f"torch {torch.__version__} has no FlexAttention (needs >= 2.5); use impl='auto'")
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if not flex_available(q.device, needs_grad):
        raise RuntimeError("FlexAttention has no backward on CPU in this torch; use impl='numba' or 'auto'")
    if q.shape[2] == 0 or k.shape[2] == 0:
        return q.new_zeros(q.shape[:3] + (v.shape[-1],))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return sorted_call(functools.partial(_sorted_flex, compiled=compiled), q, k, v, q_labels, k_labels, scale)

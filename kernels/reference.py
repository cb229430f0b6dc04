"""Plain torch SRCA: materialised L x L relation mask. The ground truth every other
implementation is tested against; never the fast path."""
from __future__ import annotations

import math

import torch


def relation_mask(q_labels: torch.Tensor, k_labels: torch.Tensor) -> torch.Tensor:
    """Boolean (G, Lq, Lk): True where a query token may attend to a key token, i.e. both
    carry the same non-ambiguous label (ambiguous tokens are labelled -1)."""
    same = q_labels[:, :, None] == k_labels[:, None, :]
    return same & (q_labels[:, :, None] >= 0)


def srca_reference(q, k, v, q_labels, k_labels, scale: float | None = None) -> torch.Tensor:
    """q: (G, H, Lq, D), k/v: (G, H, Lk, D), labels: (G, Lq)/(G, Lk) ints, -1 = ambiguous.
    Rows with no allowed key return zeros (and so pass no gradient)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    allowed = relation_mask(q_labels, k_labels)[:, None]          # (G, 1, Lq, Lk)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~allowed, float("-inf"))
    any_allowed = allowed.any(dim=-1, keepdim=True)
    # A fully masked row would be softmax(-inf...) = NaN; give it finite scores, then zero it.
    scores = torch.where(any_allowed, scores, torch.zeros_like(scores))
    attn = torch.softmax(scores, dim=-1) * any_allowed
    return torch.matmul(attn, v)

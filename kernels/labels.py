"""Input checks and the sorting trick shared by the fused implementations.

Only equal, non-negative labels attend. Sorting the tokens of each group by label
(stable, so -1 comes first) turns the relation mask into a block diagonal: every label's
keys form one contiguous range, which a kernel finds with a binary search and scans
instead of all Lk keys. Gathering costs O(L * D), the attention it skips O(L^2 * D)."""
from __future__ import annotations

import torch


def check_inputs(q, k, v, q_labels, k_labels) -> None:
    """One-line errors that say what to pass instead."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not torch.is_tensor(t) or t.dim() != 4:
            raise ValueError(f"srca: {name} must be a 4-D tensor (G, H, L, D), got "
                             f"{getattr(t, 'shape', type(t))}")
        if not t.is_floating_point():
            raise TypeError(f"srca: {name} must be floating point, got {t.dtype}")
    G, H, Lq, D = q.shape
    if k.shape[:2] != (G, H) or k.shape[3] != D or v.shape != k.shape:
        raise ValueError(f"srca: k and v must be (G, H, Lk, D) = ({G}, {H}, Lk, {D}) like q, "
                         f"got k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.dtype != k.dtype or q.dtype != v.dtype or q.device != k.device or q.device != v.device:
        raise TypeError("srca: q, k and v must share dtype and device; cast them first")
    for name, lab, L in (("q_labels", q_labels, Lq), ("k_labels", k_labels, k.shape[2])):
        if not torch.is_tensor(lab) or lab.shape != (G, L):
            raise ValueError(f"srca: {name} must be a ({G}, {L}) tensor, got "
                             f"{getattr(lab, 'shape', type(lab))}")
        if lab.is_floating_point() or lab.is_complex() or lab.dtype == torch.bool:
            raise TypeError(f"srca: {name} must be an integer tensor (-1 = ambiguous), got {lab.dtype}")
        if lab.device != q.device:
            raise TypeError(f"srca: {name} is on {lab.device} but q is on {q.device}; move it")


def sort_by_label(labels: torch.Tensor):
    """(sorted labels (G, L) int64, permutation (G, L), inverse permutation (G, L))."""
    sorted_labels, perm = torch.sort(labels.long(), dim=-1, stable=True)
    inverse = torch.empty_like(perm)
    inverse.scatter_(-1, perm, torch.arange(perm.shape[-1], device=perm.device).expand_as(perm))
    return sorted_labels, perm, inverse


def take_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (G, H, L, D), index (G, L) -> x[g, :, index[g], :]; differentiable."""
    G, H, _, D = x.shape
    return torch.gather(x, 2, index[:, None, :, None].expand(G, H, index.shape[-1], D))


def sorted_call(kernel, q, k, v, q_labels, k_labels, scale: float):
    """Run kernel(q, k, v, q_labels, k_labels, scale) on label-sorted tokens, undo the sort.
    The kernel may then assume both label vectors ascend along each group."""
    qs_lab, qperm, qinv = sort_by_label(q_labels)
    ks_lab, kperm, _ = sort_by_label(k_labels)
    out = kernel(take_tokens(q, qperm), take_tokens(k, kperm), take_tokens(v, kperm),
                 qs_lab, ks_lab, scale)
    return take_tokens(out, qinv)

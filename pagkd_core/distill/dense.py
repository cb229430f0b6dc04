"""GKD-Den: dense distillation through semantic relation-guided cross-attention (SRCA).

Per group, WLI tokens query NBI tokens (and the reverse) under the relation mask built from
token labels: a query may attend to a key iff both carry the same non-ambiguous CAM label
[P] (via ``kernels.srca``; the [C] 0.5 scaling of ambiguous pairs and its swapped group
indices are not reproduced). Each reconstruction is pulled to the original features of its
query side: L2 [P, default] or 1 - cosine of the flattened maps [C]. Query tokens with no
allowed key (ambiguous, or no key of their label) have a zero reconstruction by the op's
contract; they are left out of the loss, so they neither give NaN nor drag features to zero.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import kernels
from pagkd_core.distill.groups import Groups, pack_labels, pack_tokens

LOSSES = ("l2", "cosine")


def discretise(cam: torch.Tensor, low: float = 0.3, high: float = 0.7) -> torch.Tensor:
    """CAM in [0, 1] -> long labels: >= high lesion (1), < low background (0), else -1."""
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"CAM thresholds must satisfy 0 <= low <= high <= 1 (got {low}, {high})")
    labels = torch.full(cam.shape, -1, dtype=torch.long, device=cam.device)
    labels[cam < low] = 0
    labels[cam >= high] = 1
    return labels


def has_key(q_labels: torch.Tensor, k_labels: torch.Tensor) -> torch.Tensor:
    """(G, Lq) bool: the query has at least one allowed key (same label, label >= 0)."""
    present = torch.stack([(k_labels == c).any(dim=1) for c in (0, 1)], dim=1)   # (G, 2)
    return (q_labels >= 0) & present.gather(1, q_labels.clamp(min=0))


def consistency(recon: torch.Tensor, orig: torch.Tensor, rows: torch.Tensor, kind: str) -> torch.Tensor:
    """recon/orig (G, L, d), rows (G, L) bool -> scalar over the rows that were reconstructed."""
    if not rows.any():
        return recon.sum() * 0.0
    if kind == "l2":
        return (recon - orig).pow(2).mean(dim=-1)[rows].mean()
    # [C]: 1 - cosine between the flattened maps, one value per group, here over its valid rows.
    keep = rows[..., None].to(recon.dtype)
    cos = F.cosine_similarity((recon * keep).flatten(1), (orig * keep).flatten(1), dim=1, eps=1e-8)
    return (1.0 - cos)[rows.any(dim=1)].mean()


class GKDDen(nn.Module):
    def __init__(self, dim: int = 128, heads: int = 1, loss: str = "l2", srca_impl: str = "auto"):
        super().__init__()
        if dim % heads:
            raise ValueError(f"GKD-Den: embedding dim {dim} is not divisible by den_heads={heads}")
        if loss not in LOSSES:
            raise ValueError(f"unknown GKD-Den loss {loss!r}; use one of {LOSSES}")
        self.heads, self.loss, self.srca_impl = heads, loss, srca_impl
        self.coverage = torch.zeros(())   # share of real query tokens that had an allowed key
        # One set of projections serves both directions, as in A = softmax(R + (F W_q)(F' W_k)^T).
        self.w_q = nn.Linear(dim, dim, bias=False)
        self.w_k = nn.Linear(dim, dim, bias=False)
        self.w_v = nn.Linear(dim, dim, bias=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        g, n, d = x.shape
        return x.reshape(g, n, self.heads, d // self.heads).transpose(1, 2)

    def reconstruct(self, queries, q_labels, keys, k_labels) -> torch.Tensor:
        """Queries (G, Lq, d) rebuilt from keys (G, Lk, d) under the relation mask -> (G, Lq, d)."""
        out = kernels.srca(self._split(self.w_q(queries)), self._split(self.w_k(keys)),
                           self._split(self.w_v(keys)), q_labels, k_labels, impl=self.srca_impl)
        return out.transpose(1, 2).reshape(queries.shape)

    def forward(self, s_emb: torch.Tensor, t_emb: torch.Tensor, s_labels: torch.Tensor,
                t_labels: torch.Tensor, groups: Groups) -> torch.Tensor:
        """Embeddings (B, d, h, w) of each side, token labels (B, h*w), groups -> scalar loss."""
        both = groups.both()
        if not both:
            self.coverage = torch.zeros((), device=s_emb.device)
            return (s_emb.sum() + t_emb.sum()) * 0.0
        s_sets = [groups.student[g] for g in both]
        t_sets = [groups.teacher[g] for g in both]
        f_w, _, real_w = pack_tokens(s_emb, s_sets)
        f_n, _, real_n = pack_tokens(t_emb, t_sets)
        l_w, l_n = pack_labels(s_labels, s_sets), pack_labels(t_labels, t_sets)
        rows_w, rows_n = has_key(l_w, l_n), has_key(l_n, l_w)
        self.coverage = (rows_w.sum() + rows_n.sum()).float().detach() / (real_w.sum() + real_n.sum())
        nbi_to_wli = self.reconstruct(f_w, l_w, f_n, l_n)
        wli_to_nbi = self.reconstruct(f_n, l_n, f_w, l_w)
        return 0.5 * (consistency(nbi_to_wli, f_w, rows_w, self.loss)
                      + consistency(wli_to_nbi, f_n, rows_n, self.loss))

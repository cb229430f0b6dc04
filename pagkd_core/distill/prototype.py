"""GKD-Pro: contrastive distillation between WLI and NBI prototype sets.

[P] S(P, P') = mean_i cos(p_i, p'_i), each query vector normalised on its own. Symmetric
InfoNCE with temperature: every prototype set whose counterpart (same group, other modality)
exists is an anchor; its positive is the counterpart, its negatives are the prototype sets of
all *other classes* of both modalities (same-class sets of other couples at level "image" are
neither). [C] option: a set classifier (mean of the prototypes -> linear -> CE on the class).
Avoided from [C]: normalising along the query axis, the /20 rescaling, WLI-only anchors,
reseeding the RNG, a hard-coded class count.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pagkd_core.distill.groups import Groups, pack_tokens
from pagkd_core.distill.qformer import LRQFormer


def set_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (M, N_q, d), b (M', N_q, d) -> (M, M'): mean over i of cos(a_i, b_i)."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    return torch.einsum("mid,nid->mn", a, b) / a.shape[1]


def pair_masks(group: torch.Tensor, modality: torch.Tensor, classes: torch.Tensor):
    """(positive, negative) (M, M) masks: the same group's other modality; any other class."""
    positive = (group[:, None] == group[None, :]) & (modality[:, None] != modality[None, :])
    return positive, classes[:, None] != classes[None, :]


def centred(protos: torch.Tensor) -> torch.Tensor:
    """Subtract the batch's mean prototype set (per query). Without it the sets share one large
    common direction (ReLU features, shared queries), cosines start near 1, and making every set
    identical is a stationary point the loss falls into (measured: docs/distillation.md)."""
    return protos - protos.mean(dim=0, keepdim=True)


def prototype_infonce(protos: torch.Tensor, group: torch.Tensor, modality: torch.Tensor,
                      classes: torch.Tensor, temperature: float) -> torch.Tensor:
    """protos (M, N_q, d) for M (group, modality) sets; group/modality/classes (M,).
    Mean over anchors of -log softmax(positive | positive + other-class sets)."""
    return infonce(set_similarity(protos, protos), *pair_masks(group, modality, classes), temperature)


def infonce(sim: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, temperature: float) -> torch.Tensor:
    """``prototype_infonce`` from the (M, M) set similarities and the pair masks."""
    anchors = positive.any(dim=1)
    if not anchors.any():
        return sim.sum() * 0.0   # keeps the graph (and DDP) connected
    logits = (sim / temperature).masked_fill(~(positive | negative), float("-inf"))[anchors]
    return -(logits.log_softmax(dim=1)[positive[anchors]]).mean()


@torch.no_grad()
def separation(sim: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean set similarity of positive and of negative pairs. Both near 1 = collapsed prototypes
    (every set alike; the loss then sits at log(1 + negatives) and carries no signal)."""
    nan = sim.new_tensor(float("nan"))
    return {"pro_sim_pos": sim[positive].mean() if positive.any() else nan,
            "pro_sim_neg": sim[negative].mean() if negative.any() else nan}


class GKDPro(nn.Module):
    def __init__(self, dim: int, num_classes: int, n_queries: int = 12, blocks: int = 1, heads: int = 4,
                 temperature: float = 0.1, set_classifier: bool = False, self_attention: bool = True,
                 max_images: int = 64, centre: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"GKD-Pro temperature must be > 0 (got {temperature})")
        self.temperature, self.centre = temperature, centre
        self.qformer = LRQFormer(dim, n_queries, blocks, heads, self_attention, max_images)
        self.set_head = nn.Linear(dim, num_classes) if set_classifier else None
        self.diagnostics: dict[str, torch.Tensor] = {}

    def prototypes(self, s_emb: torch.Tensor, t_emb: torch.Tensor, groups: Groups):
        """Prototype sets of every non-empty (group, modality), in one QFormer batch."""
        sets, group, modality = [], [], []
        for m, (emb, index) in enumerate(((s_emb, groups.student), (t_emb, groups.teacher))):
            keep = [g for g, ix in enumerate(index) if len(ix)]
            if not keep:
                continue
            tokens, slot, valid = pack_tokens(emb, [index[g] for g in keep])
            sets.append((tokens, slot, valid))
            group += keep
            modality += [m] * len(keep)
        # Student and teacher groups differ in length: pad both to the longer one.
        longest = max(t.shape[1] for t, _, _ in sets)
        tokens = torch.cat([F.pad(t, (0, 0, 0, longest - t.shape[1])) for t, _, _ in sets])
        slot = torch.cat([F.pad(s, (0, longest - s.shape[1]), value=-1) for _, s, _ in sets])
        protos = self.qformer(tokens, slot, slot >= 0)
        dev = protos.device
        group_t = torch.tensor(group, device=dev)
        return protos, group_t, torch.tensor(modality, device=dev), groups.classes.to(dev)[group_t]

    def forward(self, s_emb: torch.Tensor, t_emb: torch.Tensor, groups: Groups) -> torch.Tensor:
        protos, group, modality, classes = self.prototypes(s_emb, t_emb, groups)
        compared = centred(protos) if self.centre else protos
        sim = set_similarity(compared, compared)
        positive, negative = pair_masks(group, modality, classes)
        self.diagnostics = separation(sim, positive, negative)
        loss = infonce(sim, positive, negative, self.temperature)
        if self.set_head is not None:
            loss = loss + F.cross_entropy(self.set_head(protos.mean(dim=1)), classes)
        return loss

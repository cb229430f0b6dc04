"""LR-QFormer: shared learnable lesion queries read a group's tokens into a prototype set.

[P]: N_q queries shared by all classes and both modalities; T blocks of self-attention over
the queries then cross-attention from the queries to the group tokens, which carry a
per-image identity embedding. [C]: one cross-attention block with 16 heads and no
self-attention (``self_attention=False, blocks=1, heads=16``).
"""
from __future__ import annotations

import torch
from torch import nn


class QFormerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, self_attention: bool = True, mlp_ratio: int = 4):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True) if self_attention else None
        self.norm_self = nn.LayerNorm(dim) if self_attention else None
        self.norm_cross = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, q: torch.Tensor, kv: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        if self.self_attn is not None:
            x = self.norm_self(q)
            q = q + self.self_attn(x, x, x, need_weights=False)[0]
        q = q + self.cross_attn(self.norm_cross(q), kv, kv, key_padding_mask=pad, need_weights=False)[0]
        return q + self.mlp(self.norm_mlp(q))


class LRQFormer(nn.Module):
    def __init__(self, dim: int = 128, n_queries: int = 12, blocks: int = 1, heads: int = 4,
                 self_attention: bool = True, max_images: int = 64):
        super().__init__()
        if dim % heads:
            raise ValueError(f"LR-QFormer: embedding dim {dim} is not divisible by heads={heads}; pick a divisor")
        if n_queries < 1 or blocks < 1:
            raise ValueError(f"LR-QFormer needs n_queries >= 1 and blocks >= 1 (got {n_queries}, {blocks})")
        self.queries = nn.Parameter(torch.randn(n_queries, dim) * 0.02)
        self.image_embed = nn.Embedding(max_images, dim)
        nn.init.normal_(self.image_embed.weight, std=0.02)
        self.norm_kv = nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(QFormerBlock(dim, heads, self_attention) for _ in range(blocks))
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, slot: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """tokens (G, L, d), slot (G, L) image index within the group (-1 = padding),
        valid (G, L) -> prototype sets (G, N_q, d)."""
        if int(slot.max()) >= self.image_embed.num_embeddings:
            raise ValueError(f"a group holds {int(slot.max()) + 1} images but the LR-QFormer has "
                             f"{self.image_embed.num_embeddings} identity embeddings; raise max_group_images")
        # The identity embedding tells the queries which tokens come from the same image.
        kv = self.norm_kv(tokens + self.image_embed(slot.clamp(min=0)))
        q = self.queries.expand(tokens.shape[0], -1, -1)
        for block in self.blocks:
            q = block(q, kv, ~valid)
        return self.norm_out(q)

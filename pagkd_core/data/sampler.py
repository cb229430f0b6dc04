"""Class-balanced batch sampler that couples same-class images of two modalities.

Each batch holds `batch_size` couples (i, j): i indexes the primary modality (the one trained
with cross-entropy: WLI for the student, NBI for the teacher), j the partner modality (-1 when
there is none). Every class is in every batch: each class gets batch_size // K couples and the
remainder goes to randomly chosen classes. Per class, images come from a stream of
concatenated random permutations (sampling with replacement across passes, so small classes
are oversampled); couples are therefore re-drawn every epoch. With `groups` (each primary
image's lesion), the permutations are of the class's lesions and each draw then takes one image
of its lesion at random: every lesion weighs the same, however many images it has. With
`pairing="true"` the partner is a real pair: the same-view twin when known, else an image of the
same lesion.
"""

from __future__ import annotations

import math

import numpy as np


class _Stream:
    """Endless concatenation of random permutations of `items`."""

    def __init__(self, items: np.ndarray, rng: np.random.Generator):
        self.items, self.rng, self.buf = items, rng, np.empty(0, dtype=items.dtype)

    def take(self, n: int) -> np.ndarray:
        while len(self.buf) < n:
            self.buf = np.concatenate([self.buf, self.items[self.rng.permutation(len(self.items))]])
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


class _GroupStream:
    """Endless draws of one item per group, the groups from a `_Stream`: each group equally likely."""

    def __init__(self, items: np.ndarray, groups: np.ndarray, rng: np.random.Generator):
        keys, inverse = np.unique(groups, return_inverse=True)
        self.members = [items[inverse == g] for g in range(len(keys))]
        self.groups, self.rng = _Stream(np.arange(len(keys)), rng), rng

    def take(self, n: int) -> np.ndarray:
        members = [self.members[g] for g in self.groups.take(n)]
        return np.array([m[self.rng.integers(len(m))] for m in members], dtype=np.int64)


class CoupleBatchSampler:
    def __init__(
        self,
        labels,
        num_classes: int,
        batch_size: int,
        *,
        partner_labels=None,
        partners: list[list[int]] | None = None,
        groups=None,
        steps: int = 0,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ):
        """`partners[i]`: candidate true partners of primary image i (pairing "true"); None = random.
        `groups[i]`: primary image i's lesion, to draw lesions rather than images (module docstring)."""
        self.labels = np.asarray(labels, dtype=np.int64)
        self.partner_labels = None if partner_labels is None else np.asarray(partner_labels, dtype=np.int64)
        self.partners = partners
        self.groups = None if groups is None else np.asarray(groups, dtype=object)
        if self.groups is not None and len(self.groups) != len(self.labels):
            raise ValueError(f"{len(self.groups)} groups for {len(self.labels)} images")
        self.num_classes, self.batch_size, self.seed = num_classes, batch_size, seed
        self.rank, self.world, self.epoch = rank, world, 0
        if batch_size < num_classes:
            raise ValueError(f"batch size {batch_size} cannot hold all {num_classes} classes; raise it")
        usable = [i for i in range(len(self.labels)) if partners is None or partners[i]]
        self.pool = [
            np.array([i for i in usable if self.labels[i] == c], dtype=np.int64) for c in range(num_classes)
        ]
        for c, p in enumerate(self.pool):
            if not len(p):
                what = "paired images" if partners is not None else "training images"
                raise ValueError(f"class {c} has no {what}; every batch needs every class")
            if self.partner_labels is not None and partners is None and not (self.partner_labels == c).any():
                raise ValueError(f"class {c} has no partner-modality training images")
        total = steps or math.ceil(len(self.labels) / batch_size)
        self.steps = math.ceil(total / world)  # per rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        # One generator per (seed, epoch): the draw does not depend on what ran before (resume-safe),
        # and all ranks draw the same global sequence, each keeping its own batches.
        rng = np.random.default_rng([self.seed, self.epoch])
        prim = [_Stream(p, rng) if self.groups is None else _GroupStream(p, self.groups[p], rng) for p in self.pool]
        part = None
        if self.partner_labels is not None and self.partners is None:
            part = [_Stream(np.flatnonzero(self.partner_labels == c), rng) for c in range(self.num_classes)]
        base, extra = divmod(self.batch_size, self.num_classes)
        for step in range(self.steps * self.world):
            counts = np.full(self.num_classes, base)
            counts[rng.permutation(self.num_classes)[:extra]] += 1
            batch = []
            for c in range(self.num_classes):
                i = prim[c].take(counts[c])
                if self.partners is not None:
                    j = [self.partners[k][rng.integers(len(self.partners[k]))] for k in i]
                elif part is not None:
                    j = part[c].take(counts[c])
                else:
                    j = [-1] * len(i)
                batch += [(int(a), int(b)) for a, b in zip(i, j)]
            if step % self.world == self.rank:
                yield batch

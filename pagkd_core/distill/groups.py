"""Which images are distilled together, and packing them into padded token batches.

A *group* pairs a set of WLI (student) images with a set of NBI (teacher) images:
level "group" = all images of one class per modality (the PaGKD setting), level "image" =
one (WLI, NBI) couple (the i-th student image with the i-th teacher image).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Groups:
    student: list[torch.Tensor]   # per group: indices into the student (WLI) batch, maybe empty
    teacher: list[torch.Tensor]   # per group: indices into the teacher (NBI) batch, maybe empty
    classes: torch.Tensor         # (G,) class label of each group

    def __len__(self) -> int:
        return len(self.classes)

    def both(self) -> list[int]:
        """Groups with images in both modalities (the only ones a cross-modal loss can use)."""
        return [g for g in range(len(self)) if len(self.student[g]) and len(self.teacher[g])]


def make_groups(level: str, student_labels: torch.Tensor, teacher_labels: torch.Tensor,
                class_shift: int = 0, num_classes: int = 0) -> Groups:
    """`class_shift` (level "group", control experiment): the group of WLI class c holds the NBI
    images of class (c + shift) mod `num_classes`, a class-swapped teacher. A group's class is its
    WLI class (the negatives of GKD-Pro are then the other WLI classes' groups)."""
    if level == "group":
        if class_shift % max(num_classes, 1):
            teacher_labels = (teacher_labels - class_shift) % num_classes   # NBI c+s joins WLI c
        classes = torch.unique(torch.cat([student_labels, teacher_labels]))   # sorted
        return Groups(
            student=[torch.nonzero(student_labels == c).flatten() for c in classes],
            teacher=[torch.nonzero(teacher_labels == c).flatten() for c in classes],
            classes=classes,
        )
    if class_shift:
        raise ValueError("a class-shifted teacher needs level 'group'")
    if level == "image":
        if student_labels.shape != teacher_labels.shape:
            raise ValueError(f"level 'image' distils (WLI, NBI) couples, but the batches hold "
                             f"{len(student_labels)} WLI and {len(teacher_labels)} NBI images; "
                             f"use the coupling group sampler")
        if not torch.equal(student_labels, teacher_labels):
            raise ValueError("level 'image' needs same-class couples (student.labels[i] == "
                             "teacher.labels[i]); use the coupling group sampler")
        idx = torch.arange(len(student_labels), device=student_labels.device)
        return Groups(student=list(idx[:, None]), teacher=list(idx[:, None]),
                      classes=student_labels.clone())
    raise ValueError(f"unknown distillation level {level!r}; use 'group' or 'image'")


def pack_tokens(emb: torch.Tensor, index_sets: list[torch.Tensor]):
    """emb (B, d, h, w) -> tokens (G, L, d) padded with zeros, image slot (G, L) = position
    of the token's image inside its group (-1 on padding), valid (G, L) bool.
    L = max over groups of N_g * h * w."""
    b, d, h, w = emb.shape
    flat = emb.permute(0, 2, 3, 1).reshape(b, h * w, d)
    longest = max(len(ix) for ix in index_sets) * h * w
    tokens = emb.new_zeros(len(index_sets), longest, d)
    slot = torch.full((len(index_sets), longest), -1, dtype=torch.long, device=emb.device)
    for g, ix in enumerate(index_sets):
        n = len(ix) * h * w
        tokens[g, :n] = flat[ix].reshape(n, d)
        slot[g, :n] = torch.arange(len(ix), device=emb.device).repeat_interleave(h * w)
    return tokens, slot, slot >= 0


def pack_labels(token_labels: torch.Tensor, index_sets: list[torch.Tensor]) -> torch.Tensor:
    """token_labels (B, h*w) ints -> (G, L) with -1 (never attends, never attended) on padding."""
    hw = token_labels.shape[1]
    longest = max(len(ix) for ix in index_sets) * hw
    out = token_labels.new_full((len(index_sets), longest), -1)
    for g, ix in enumerate(index_sets):
        out[g, : len(ix) * hw] = token_labels[ix].flatten()
    return out

"""What a WLI training image's class trains: its label, or for a far lesion only the class split
towards even odds (docs/training.md, "Far lesions"). The split -- P(class | a lesion), the
background left out -- is also what the self-distillation anchor keeps (pagkd_core.anchor)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pagkd_core.data import FAR_SEEN
from pagkd_core.outputs import background_index, lesion_indices


def split_log_probs(logits: torch.Tensor, lesion_cols: torch.Tensor) -> torch.Tensor:
    """log P(class | a lesion): the lesion columns' log-softmax, the background left out."""
    return F.log_softmax(logits[:, lesion_cols], dim=1)


def class_loss(logits: torch.Tensor, y: torch.Tensor, far: torch.Tensor | None, lesion_cols: torch.Tensor | None):
    """Cross-entropy against the label, except for far images (`far`: NEAR, FAR or FAR_SEEN per
    image, pagkd_core.data): their split among the lesion classes (`lesion_cols`, renormalised)
    against even odds, so the student learns to be unsure of a class its input does not show;
    a FAR_SEEN image also trains "a lesion is in view" (-log P(lesion)), the two together being
    cross-entropy against even odds over the lesion classes and 0 on no_lesion. A FAR image
    leaves presence to the others: a lesion a few pixels wide cannot be told from none."""
    if far is None or lesion_cols is None or not bool(far.any()):
        return F.cross_entropy(logits, y)
    per_image = F.cross_entropy(logits, y, reduction="none")
    far_loss = -split_log_probs(logits, lesion_cols).mean(dim=1)
    log_p_lesion = torch.logsumexp(logits[:, lesion_cols], dim=1) - torch.logsumexp(logits, dim=1)
    far_loss = far_loss - torch.where(far == FAR_SEEN, log_p_lesion, torch.zeros_like(log_p_lesion))
    return torch.where(far > 0, far_loss, per_image).mean()


def far_lesion_columns(class_names: list[str], far_coverage: float) -> torch.Tensor | None:
    """The lesion classes' columns, whose split a far lesion's image trains towards even odds,
    or None when `data.far_coverage` is off."""
    if far_coverage <= 0:
        return None
    if background_index(class_names) is None:
        raise ValueError("data.far_coverage needs a no_lesion class (frames without a lesion) to say what is unknown")
    return torch.tensor(lesion_indices(class_names))

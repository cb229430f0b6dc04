"""Self-distillation to the starting student (`distill.anchor_weight`): while a fine-tune trains
presence, the student's split among the lesion classes is pulled towards the frozen split of the
student it started from, on every training image.

Why: fine-tunes that taught presence on far lesions lost some of the starting student's reading
of the class on the frames before the view is close (docs/training.md, "All the chain's
procedures"). The anchor keeps that reading and leaves P(lesion) free; measured, it brings the
class on all lesion frames back while presence gains as much ("Self-distillation anchor"). The
starting student is the exported student that `student.pretrained` names (its head too).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from pagkd_core.class_loss import split_log_probs
from pagkd_core.outputs import lesion_indices


class SplitAnchor(nn.Module):
    """A frozen copy of the student as it starts; `forward` gives the mean KL(anchor || student) of
    the class split. Always in eval mode: its BatchNorm statistics are the exported student's."""

    def __init__(self, student: nn.Module, class_names: list[str]):
        super().__init__()
        self.model = copy.deepcopy(student).requires_grad_(False).eval()
        self.register_buffer("lesion_cols", torch.tensor(lesion_indices(class_names)), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = split_log_probs(self.model(x), self.lesion_cols)
        own = split_log_probs(logits, self.lesion_cols)
        return F.kl_div(own, target, log_target=True, reduction="batchmean")

"""Logit distillation (Hinton et al. 2015): the baseline for truly paired data."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LogitKD(nn.Module):
    def __init__(self, temperature: float = 4.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"kd_temperature must be > 0 (got {temperature})")
        self.temperature = temperature

    def forward(self, s_logits: torch.Tensor, t_logits: torch.Tensor) -> torch.Tensor:
        """KL(teacher || student) of temperature-softened distributions, times T^2 so gradient
        magnitudes do not shrink with T; the i-th student image learns from the i-th teacher."""
        if s_logits.shape != t_logits.shape:
            raise ValueError(f"logit KD pairs the i-th WLI with the i-th NBI image, but got logits "
                             f"{tuple(s_logits.shape)} vs {tuple(t_logits.shape)}; use the coupling sampler")
        t = self.temperature
        target = F.log_softmax(t_logits.detach() / t, dim=1)
        return F.kl_div(F.log_softmax(s_logits / t, dim=1), target, log_target=True,
                        reduction="batchmean") * t * t

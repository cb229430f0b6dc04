"""Grad-CAM on the last feature map for the ground-truth class [P][C]."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def grad_cam(features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
             create_graph: bool = False, eps: float = 1e-6) -> torch.Tensor:
    """features (B, C, h, w) in the graph of logits (B, K); labels (B,) -> CAM (B, h, w) in [0, 1].

    Channel weights = spatial mean of d logit[label] / d features; CAM = ReLU(weighted sum),
    min-max normalised per image (eps keeps a flat map finite: it becomes all zeros).
    create_graph=True makes the map differentiable in the weights too ([C]); the forward
    graph is always kept, because the trainer back-propagates through the logits afterwards.
    """
    if not torch.is_grad_enabled():
        raise RuntimeError("Grad-CAM differentiates the logits: call the distiller outside torch.no_grad()")
    if not features.requires_grad:
        raise ValueError("Grad-CAM needs features that require grad; for the frozen teacher pass "
                         "features.detach().requires_grad_() and logits = classify(features)")
    score = logits.gather(1, labels[:, None].long()).sum()
    (grads,) = torch.autograd.grad(score, features, create_graph=create_graph, retain_graph=True)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * features).sum(dim=1))
    flat = cam.flatten(1)
    low = flat.min(dim=1).values[:, None, None]
    high = flat.max(dim=1).values[:, None, None]
    return (cam - low) / (high - low + eps)

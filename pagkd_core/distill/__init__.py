"""Knowledge distillation from the frozen NBI teacher into the WLI student.

``build_distiller(cfg, num_classes, student_channels, teacher_channels)`` builds, by method
name, a module whose ``forward(student, teacher, student_model)`` returns unweighted named
losses; the trainer weights them and handles the warm-up (see docs/distillation.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pagkd_core.distill.dense import GKDDen, discretise
from pagkd_core.distill.gradcam import grad_cam
from pagkd_core.distill.groups import Groups, make_groups
from pagkd_core.distill.kd import LogitKD
from pagkd_core.distill.par import PAR
from pagkd_core.distill.prototype import GKDPro


@dataclass
class Views:
    """One modality's batch as the distiller sees it (see docs/architecture.md)."""
    images: torch.Tensor    # (B, 3, H, W) normalised input
    features: torch.Tensor  # (B, C, h, w) backbone map, in the graph (teacher: detached leaf needing grad)
    logits: torch.Tensor    # (B, K) = classify(features)
    labels: torch.Tensor    # (B,) class indices


class Distiller(nn.Module):
    """Computes the configured losses; owns every trainable part they need."""

    def __init__(self, cfg, losses: tuple[str, ...], level: str, num_classes: int,
                 student_channels: int, teacher_channels: int):
        super().__init__()
        self.losses, self.level, self.num_classes = losses, level, num_classes
        self.class_shift = cfg.teacher_class_shift
        self.diagnostics: dict[str, torch.Tensor] = {}
        self.embed_dim = dim = cfg.embed_dim
        if {"pro", "den"} & set(losses):
            # [C]: the teacher side gets its own trainable 1x1 projection, on detached features.
            self.teacher_proj = nn.Conv2d(teacher_channels, dim, kernel_size=1)
        if "pro" in losses:
            self.pro = GKDPro(dim, num_classes, cfg.n_queries, cfg.blocks, cfg.heads, cfg.temperature,
                              cfg.set_classifier, cfg.qformer_self_attention,
                              cfg.max_group_images, cfg.pro_centre)
        if "den" in losses:
            self.den = GKDDen(dim, cfg.den_heads, cfg.den_loss)
            self.par = PAR(cfg.par_dilations, cfg.par_iters, placement=cfg.par_placement) if cfg.use_par else None
            self.cam_low, self.cam_high = cfg.cam_low, cfg.cam_high
            self.cam_create_graph = cfg.cam_create_graph
            # Stop-gradient on the teacher side of GKD-Den: with both sides trainable ([C]) the
            # consistency loss is minimised by collapsing every token to one vector (measured,
            # docs/distillation.md). Without GKD-Pro the projection then stays a fixed random one.
            self.den_detach_teacher = cfg.den_detach_teacher
            if self.den_detach_teacher and "pro" not in losses:
                self.teacher_proj.requires_grad_(False)
            discretise(torch.zeros(1), self.cam_low, self.cam_high)   # reject bad thresholds now
        if "kd" in losses:
            self.kd = LogitKD(cfg.kd_temperature)

    def token_labels(self, views: Views) -> torch.Tensor:
        """Grad-CAM for the true class -> (optional PAR) -> {-1, 0, 1} per token, (B, h*w).
        Discretising has zero gradient, so by default the map is built without [C]'s
        create_graph=True: same losses and gradients, less memory and time."""
        cam = grad_cam(views.features, views.logits, views.labels, self.cam_create_graph).detach()
        if self.par is not None:
            cam = self.par(views.images, torch.stack([1.0 - cam, cam], dim=1))[:, 1]
        return discretise(cam, self.cam_low, self.cam_high).flatten(1)

    def check(self, student: Views, teacher: Views) -> None:
        for name, v in (("student", student), ("teacher", teacher)):
            if v.features.ndim != 4 or v.logits.ndim != 2 or v.labels.ndim != 1:
                raise ValueError(f"{name} Views: expected features (B,C,h,w), logits (B,K), labels (B,); got "
                                 f"{tuple(v.features.shape)}, {tuple(v.logits.shape)}, {tuple(v.labels.shape)}")
            if len({len(v.images), len(v.features), len(v.logits), len(v.labels)}) != 1:
                raise ValueError(f"{name} Views: images, features, logits and labels disagree on batch size")
            if v.labels.numel() and (v.labels.min() < 0 or v.labels.max() >= self.num_classes):
                raise ValueError(f"{name} labels must lie in [0, {self.num_classes}); got "
                                 f"{v.labels.min().item()}..{v.labels.max().item()}")

    def forward(self, student: Views, teacher: Views, student_model: nn.Module) -> dict[str, torch.Tensor]:
        self.check(student, teacher)
        out: dict[str, torch.Tensor] = {}
        if "kd" in self.losses:
            out["kd"] = self.kd(student.logits, teacher.logits)
        if not {"pro", "den"} & set(self.losses):
            return out
        groups = make_groups(self.level, student.labels, teacher.labels, self.class_shift, self.num_classes)
        s_emb = student_model.embed(student.features)
        if s_emb.shape[1] != self.embed_dim:
            raise ValueError(f"student embed() gives {s_emb.shape[1]} channels but the distiller was "
                             f"built for embed_dim={self.embed_dim}; make them equal")
        t_emb = self.teacher_proj(teacher.features.detach())
        self.diagnostics = {}
        if "pro" in self.losses:
            out["pro"] = self.pro(s_emb, t_emb, groups)
            self.diagnostics.update(self.pro.diagnostics)
        if "den" in self.losses:
            t_den = t_emb.detach() if self.den_detach_teacher else t_emb
            s_tok, t_tok = self.token_labels(student), self.token_labels(teacher)
            out["den"] = self.den(s_emb, t_den, s_tok, t_tok, groups)
            # For logging (detached, no device sync here): CAM label mix and SRCA coverage.
            self.diagnostics |= {"lesion_wli": (s_tok == 1).float().mean(), "lesion_nbi": (t_tok == 1).float().mean(),
                                "ambiguous": (s_tok.eq(-1).sum() + t_tok.eq(-1).sum()).float() / (s_tok.numel() + t_tok.numel()),
                                "den_coverage": self.den.coverage}
        return out

    def describe(self) -> dict:
        """What this distiller does, for the run's history and log."""
        par = getattr(self, "par", None)
        return {"losses": list(self.losses), "level": self.level, "teacher_class_shift": self.class_shift,
                "par_placement": par.placement if par is not None else None}


# method -> (losses, level override or None). "add" is ADD-style image-level dense distillation;
# run it with the sampler's pairing "true".
METHODS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "none": ((), None),
    "pro": (("pro",), None),
    "den": (("den",), None),
    "pro+den": (("pro", "den"), None),
    "kd": (("kd",), None),
    "add": (("den",), "image"),
}


def build_distiller(cfg, num_classes: int, student_channels: int, teacher_channels: int) -> Distiller:
    if cfg.method not in METHODS:
        raise ValueError(f"unknown distillation method {cfg.method!r}; use one of {sorted(METHODS)}")
    losses, level = METHODS[cfg.method]
    if cfg.method == "add" and cfg.pairing != "true":
        raise ValueError("method 'add' distils true (WLI, NBI) pairs; set pairing: true")
    return Distiller(cfg, losses, level or cfg.level, num_classes, student_channels, teacher_channels)


__all__ = ["METHODS", "Distiller", "Groups", "Views", "build_distiller", "grad_cam", "make_groups"]

"""Two-stage training. Stage 1: the teacher learns NBI with cross-entropy, then is frozen.
Stage 2: the student learns WLI with cross-entropy plus the configured distillation losses
(after the warm-up epochs). Every baseline of the comparison runs through this one loop.

Layout: <run.out_dir>/splits.json, <run.out_dir>/fold<k>/teacher/, <run.out_dir>/fold<k>/<name>/,
each stage folder holding last.{safetensors,json} (resume), best.{safetensors,json} (selected on
the validation split) and config.json.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pagkd_core import ddp
from pagkd_core.anchor import SplitAnchor
from pagkd_core.checkpoint import load_checkpoint, load_weights, rng_state, save_checkpoint, save_weights
from pagkd_core.class_loss import class_loss, far_lesion_columns
from pagkd_core.config import Config, stage_dir
from pagkd_core.data import FoldData, couple_loader, prepare
from pagkd_core.evaluate import predict
from pagkd_core.metrics import classification_metrics
from pagkd_core.models import LesionNet, model_from_config
from pagkd_core.student import load_student_head

log = logging.getLogger("pagkd_core.train")


class TeacherObjective(nn.Module):
    def __init__(self, model: LesionNet):
        super().__init__()
        self.model = model

    def forward(self, x, _partner, y, _distill_on: bool, far=None) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(self.model(x), y)}


class StudentObjective(nn.Module):
    """CE on WLI + distiller losses against the frozen teacher's view of the coupled NBI images
    (+ the class split's KL to the starting student when an `anchor`, pagkd_core.anchor, is given)."""

    def __init__(self, student: LesionNet, teacher: LesionNet | None, distiller: nn.Module | None,
                 lesion_cols: torch.Tensor | None = None, anchor: nn.Module | None = None):  # fmt: skip
        super().__init__()
        self.student, self.teacher, self.distiller, self.anchor = student, teacher, distiller, anchor
        self.register_buffer("lesion_cols", lesion_cols, persistent=False)  # class_loss's far images
        if teacher is not None:
            teacher.requires_grad_(False).eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # frozen: its BatchNorm statistics must not move either
        return self

    def forward(self, wli, nbi, y, distill_on: bool, far=None) -> dict[str, torch.Tensor]:
        from pagkd_core.distill import Views

        feats = self.student.forward_features(wli)
        logits = self.student.classify(feats)
        out = {"ce": class_loss(logits, y, far, self.lesion_cols)}
        if self.anchor is not None:
            out["anchor"] = self.anchor(wli, logits)
        if self.distiller is None or not distill_on:
            return out
        with torch.no_grad():
            t_feats = self.teacher.forward_features(nbi)
        t_feats = t_feats.detach().requires_grad_()  # Grad-CAM differentiates the teacher's head
        t_logits = self.teacher.classify(t_feats)
        out.update(
            self.distiller(Views(wli, feats, logits, y), Views(nbi, t_feats, t_logits, y), self.student)
        )
        return out


def loss_weights(cfg: Config) -> dict[str, float]:
    return {
        "ce": 1.0,
        "pro": cfg.distill.pro_weight,
        "den": cfg.distill.den_weight,
        "kd": cfg.distill.kd_weight,
        "anchor": cfg.distill.anchor_weight,
    }


# Settings added after runs were recorded, with the value that means "as before": left out of
# the key at that value, so checkpoints and cached predictions made before they existed still match.
_ADDED_LATER = (("distill", "init_from_teacher", False), ("data", "far_coverage", 0.0), ("data", "presence_coverage", 1.0),
                ("data", "jpeg_quality", 0), ("student", "pool", "mean"), ("teacher", "pool", "mean"),
                ("data", "presence_contrast", 0.0), ("student", "pretrained_head", False),
                ("teacher", "pretrained_head", False), ("data", "sample_by", "image"), ("distill", "anchor_weight", 0.0))
_SHAPE_WITHOUT_DISTILLER = ("method", "embed_dim", "init_from_teacher", "anchor_weight")


def resume_key(config: dict, stage: str) -> str:
    """What must not change when a run is resumed: the settings that shape this stage's weights.
    Epochs may grow (extending a run); paths, threads and progress bars may change; the teacher
    ignores the student's settings (one teacher serves every student row of a benchmark)."""
    config = json.loads(json.dumps(config))  # a copy, with tuples as lists
    keep = ("data", "teacher", "teacher_optim") if stage == "teacher" else tuple(config)
    key = {k: v for k, v in config.items() if k in keep and k != "run"}
    key["seed"] = config["run"]["seed"]
    for section in key.values():
        if isinstance(section, dict):
            for volatile in ("epochs", "root", "workers", "cache", "csv", "fold", "grad_norm_every"):
                section.pop(volatile, None)
    if stage == "teacher":
        key["data"].pop("wli_train_lesions", None)  # the teacher never sees WLI images
    elif key.get("distill", {}).get("method") == "none":
        # Without a distiller only these shape the student: a WLI-only run is the same run
        # whatever loss weights the benchmark's other rows were given (so it can be shared).
        key["distill"] = {k: v for k, v in key["distill"].items() if k in _SHAPE_WITHOUT_DISTILLER}
    for section, name, neutral in _ADDED_LATER:  # older runs (and their cached keys) stay valid
        if key.get(section, {}).get(name, neutral) == neutral:
            key.get(section, {}).pop(name, None)
    return json.dumps(key, sort_keys=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def validate(model: LesionNet, data: FoldData, modality: str, cfg: Config, device) -> dict:
    # far lesions (data.far_coverage) are a student's idea: the teacher's NBI images are never far
    val = data.images("val", modality, far_coverage=cfg.data.far_coverage if modality == "WLI" else 0.0)
    if not len(val):
        raise ValueError(
            f"the validation split of fold {data.fold} has no {modality} images; raise "
            f"data.val_fraction or add data (model selection never uses the test fold)"
        )
    # Validation runs on rank 0 only and must not move the training's random stream (a
    # DataLoader draws a seed from it): resume and every rank then see the same draws.
    with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
        probs, labels = predict(model, val, device, batch_size=max(cfg.optim.batch_size, 32))
    m = classification_metrics(labels, probs, data.class_names)
    m["loss"] = float(F.nll_loss(torch.log(torch.as_tensor(probs).clamp_min(1e-12)), torch.as_tensor(labels)))
    m = score_near(m, labels, probs, np.array(val.far, dtype=bool), data.class_names)
    # Selection score (pagkd_core.metrics): the lesion-class AUC, averaged with the lesion-presence
    # AUC when a no_lesion class exists; accuracy when undefined; less loss breaks ties.
    if not math.isfinite(m["score"]):
        m["score"] = m["accuracy"]
    return m


def score_near(m: dict, labels: np.ndarray, probs: np.ndarray, far: np.ndarray, class_names: list[str]) -> dict:
    """``m`` with the class AUC and the selection score of the images that are not ``far``: a far
    lesion's class is not a target (data.far_coverage), so it is not scored either; presence
    stays on all images."""
    if not far.any() or far.all():
        return m
    near = classification_metrics(np.asarray(labels)[~far], np.asarray(probs)[~far], class_names)
    parts = (m.get("presence_auc", math.nan), near["class_auc"])
    score = float(np.mean(parts)) if all(map(math.isfinite, parts)) else near["class_auc"]
    return {**m, "class_auc": near["class_auc"], "score": score}


def grad_norms(losses: dict[str, torch.Tensor], weights: dict[str, float], params: list) -> dict[str, float]:
    """L2 norm of each *weighted* loss's gradient on `params` (the backbone), without touching
    .grad: what each loss contributes to the backbone's update. Extra backward passes, so the
    trainer calls it every run.grad_norm_every steps only."""
    out = {}
    for name, loss in losses.items():
        if not loss.requires_grad:
            continue
        grads = torch.autograd.grad(weights[name] * loss, params, retain_graph=True, allow_unused=True)
        out[name] = float(torch.sqrt(sum(g.float().pow(2).sum() for g in grads if g is not None)))
    return out


def load_teacher(cfg: Config, class_names: list[str]) -> LesionNet:
    """The fold's trained NBI teacher (stage 1), for distillation or to initialise the student."""
    teacher = model_from_config(cfg.teacher, class_names, cfg.distill.embed_dim, pretrained=False)
    ckpt = stage_dir(cfg, "teacher") / "best.safetensors"
    if not ckpt.is_file():
        raise FileNotFoundError(
            f"teacher checkpoint not found: {ckpt}; run `python -m pagkd_core train-teacher` with the same config first"
        )
    load_weights(ckpt, {"model": teacher})
    return teacher


def check_init_from_teacher(cfg: Config) -> None:
    """`distill.init_from_teacher` needs the teacher's architecture and no other initial weights
    (checked before anything is built or loaded)."""
    if cfg.student.pretrained:
        raise ValueError("distill.init_from_teacher and student.pretrained both set the student's "
                         "initial weights; keep one")
    same = (cfg.student.backbone, cfg.student.output_stride) == (cfg.teacher.backbone, cfg.teacher.output_stride)
    if not same:
        raise ValueError(
            f"distill.init_from_teacher needs the teacher's backbone: student {cfg.student.backbone} "
            f"(stride {cfg.student.output_stride}) vs teacher {cfg.teacher.backbone} (stride {cfg.teacher.output_stride})"
        )


def init_from_teacher(student: LesionNet, teacher: LesionNet) -> None:
    """Start the student's backbone from the NBI teacher's (`distill.init_from_teacher`): the
    teacher learnt the lesion patterns where they are clear, WLI shows the same patterns fainter,
    and no image pairs are needed. Only the backbone: the head and embedding start fresh."""
    student.backbone.load_state_dict(teacher.backbone.state_dict())


def build_stage(cfg: Config, stage: str, data: FoldData, d: ddp.Dist):
    """Returns (model to select/export, objective, trainable modules by name, optimiser settings, loader)."""
    k = len(data.class_names)
    if stage == "teacher":
        model = model_from_config(cfg.teacher, data.class_names, cfg.distill.embed_dim)
        objective, modules, optim = TeacherObjective(model), {"model": model}, cfg.teacher_optim
        primary, partner, pairing = data.images("train", "NBI", train=True), None, "random"
    else:
        from pagkd_core.distill import build_distiller

        if cfg.distill.init_from_teacher:
            check_init_from_teacher(cfg)
        model = model_from_config(cfg.student, data.class_names, cfg.distill.embed_dim)
        if cfg.student.pretrained_head:  # continue an exported student: its classifier and embedding too
            load_student_head(model, cfg.student.pretrained, data.class_names)
        teacher = distiller = None
        modules, optim = {"model": model}, cfg.optim
        if cfg.distill.method != "none" or cfg.distill.init_from_teacher:
            teacher = load_teacher(cfg, data.class_names)
        if cfg.distill.init_from_teacher:
            init_from_teacher(model, teacher)
        if cfg.distill.method != "none":
            distiller = build_distiller(cfg.distill, k, model.channels, teacher.channels)
            modules["distiller"] = distiller
        else:
            teacher = None  # only its weights were wanted
        anchor = SplitAnchor(model, data.class_names) if cfg.distill.anchor_weight > 0 else None  # the student as loaded
        objective = StudentObjective(model, teacher, distiller, far_lesion_columns(data.class_names, cfg.data.far_coverage),
                                     anchor)
        primary = data.images("train", "WLI", train=True, far_coverage=cfg.data.far_coverage,
                              presence_coverage=cfg.data.presence_coverage, jpeg_quality=cfg.data.jpeg_quality,
                              presence_contrast=cfg.data.presence_contrast)
        partner = data.images("train", "NBI", train=True) if distiller is not None else None
        pairing = cfg.distill.pairing
    loader = couple_loader(
        primary,
        partner,
        k,
        optim.batch_size,
        pairing=pairing,
        steps=optim.steps_per_epoch,
        seed=cfg.run.seed,
        by_lesion=cfg.data.sample_by == "lesion",
        workers=cfg.data.workers,
        rank=d.rank,
        world=d.world,
    )
    return model, objective.to(d.device), modules, optim, loader


def end_epoch(state, epoch, model, modules, optimizer, data, modality, cfg, out, sums, steps, t0, rngs,
              gnorms: dict[str, list[float]]) -> None:
    """Validate, keep the best model (validation split only), write the resumable checkpoint."""
    val = validate(model, data, modality, cfg, next(model.parameters()).device)
    train = {k: v / max(steps, 1) for k, v in sums.items()}
    record = {"epoch": epoch + 1, "seconds": round(time.time() - t0, 2), "val": val, "train": train}
    if gnorms:
        record["grad_norm"] = {k: float(np.mean(v)) for k, v in gnorms.items()}
        record["grad_norm_steps"] = max(len(v) for v in gnorms.values())
    state["history"].append(record)
    best = state["best"]
    if best is None or (val["score"], -val["loss"]) > (best["val"]["score"], -best["val"]["loss"]):
        state["best"] = record
        save_weights(out / "best.safetensors", {"model": model})
        best_json = dict(record, class_names=data.class_names, config_hash=cfg.hash())
        (out / "best.json").write_text(json.dumps(best_json, indent=1) + "\n")
    state["epoch"] = epoch + 1
    save_checkpoint(out / "last", modules, optimizer, state, rngs)
    log.info(
        "%s epoch %d: train %s val AUC %.3f acc %.3f",
        out.name,
        epoch + 1,
        {k: round(v, 4) for k, v in train.items()},
        val["auc"],
        val["accuracy"],
    )


def param_groups(modules: dict[str, nn.Module], lr: float, distill_lr: float) -> list[dict]:
    """The network at `lr`; the distiller's own parts (LR-QFormer, projections) at `distill_lr`
    when set (> 0): attention layers want a smaller step than a CNN trained from scratch."""
    groups = []
    for name, module in modules.items():
        params = [p for p in module.parameters() if p.requires_grad]
        if params:
            groups.append({"params": params, "lr": distill_lr if name == "distiller" and distill_lr > 0 else lr})
    return groups


def train_stage(
    cfg: Config, stage: str, resume: bool = False, name: str = "student", data: FoldData | None = None
) -> dict:
    """Train the teacher (stage='teacher') or a student; returns the best validation metrics.
    `data`: an already prepared dataset (its images stay cached), e.g. when running many stages."""
    d = ddp.init(cfg.run.device)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    seed_everything(cfg.run.seed + d.rank)
    out = stage_dir(cfg, "teacher" if stage == "teacher" else name)
    if data is None:
        data = prepare(cfg, cfg.run.out_dir, progress=cfg.run.progress and d.main)
    data = data.for_config(cfg)
    model, objective, modules, optim, loader = build_stage(cfg, stage, data, d)
    optimizer = torch.optim.Adam(param_groups(modules, optim.lr, cfg.distill.lr), lr=optim.lr,
                                 weight_decay=optim.weight_decay)
    modality = "NBI" if stage == "teacher" else "WLI"
    state = {
        "epoch": 0,
        "best": None,
        "history": [],
        "config": cfg.to_dict(),
        "config_hash": cfg.hash(),
        "class_names": data.class_names,
        "stage": stage,
        "world_size": d.world,
        "distill": None,
    }
    if (out / "last.json").is_file():
        if not resume:
            raise FileExistsError(
                f"{out} already holds a run; pass --resume to continue it or change run.out_dir"
            )
        state = load_checkpoint(out / "last", modules, optimizer, rank=d.rank)
        if resume_key(state["config"], stage) != resume_key(cfg.to_dict(), stage):
            raise ValueError(f"{out}: the config differs from the run being resumed; use the original config")
        log.info("resuming %s at epoch %d", out, state["epoch"])
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
    step_fn, weights = ddp.wrap(objective, d), loss_weights(cfg)
    distiller = getattr(objective, "distiller", None)  # the teacher's objective has none
    if distiller is not None:
        state["distill"] = distiller.describe()
        log.info("%s: distiller %s", out, state["distill"])
    # Per-loss gradient norms: single process only (extra backward passes outside DDP's reducer).
    every = cfg.run.grad_norm_every if d.world == 1 else 0
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    for epoch in range(state["epoch"], optim.epochs):
        loader.batch_sampler.set_epoch(epoch)
        distill_on = epoch >= cfg.distill.warmup_epochs
        objective.train()
        sums, gnorms, t0 = {}, {}, time.time()
        bar = tqdm(
            loader,
            desc=f"{out.name} epoch {epoch + 1}/{optim.epochs}",
            leave=False,
            disable=not (cfg.run.progress and d.main),
        )
        for i, (x, partner, y, far) in enumerate(bar):
            losses = step_fn(x.to(d.device), partner.to(d.device), y.to(d.device), distill_on, far.to(d.device))
            loss = sum(weights[k] * v for k, v in losses.items())
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite loss at epoch {epoch + 1}: { {k: float(v) for k, v in losses.items()} }"
                )
            if every and i % every == 0:  # from each epoch's first step, so every epoch has a figure
                for k, v in grad_norms(losses, weights, backbone).items():
                    gnorms.setdefault(k, []).append(v)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            # Diagnostics (e.g. GKD-Pro's set similarities) are averaged with the losses, unweighted.
            diagnostics = distiller.diagnostics if distiller is not None and distill_on else {}
            for k, v in {**losses, **diagnostics}.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        rngs = ddp.gather(rng_state(), d)
        if d.main:
            end_epoch(
                state, epoch, model, modules, optimizer, data, modality, cfg, out, sums, len(loader), t0, rngs,
                gnorms,
            )
        ddp.barrier(d)
    ddp.check_in_sync(model, d)
    ddp.cleanup(d)
    return state["best"] or {}

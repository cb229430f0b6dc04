"""Difficulty check: a small CNN trained from scratch per modality, AUC on held-out lesions.

Not the project's trainer (that is `pagkd_core.train`): a deliberately small, standalone
loop that answers one question -- at this difficulty, how well can each modality alone
be classified? Target at the defaults: NBI AUC >= 0.90, WLI-only AUC in [0.65, 0.85].
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from pagkd_core.config import ConfigError, add_config_arguments

from .config import ImageConfig, load
from .dataset import validate


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/synth_calibration", help="folder for calibration.json")
    p.add_argument("--lesions-per-class", type=int, default=160)
    p.add_argument("--views", type=int, default=3, help="views per modality per lesion")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=600, help="optimisation steps per modality")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu", help="cpu or cuda (the documented figures: cpu)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--model", default="tinycnn", help="tinycnn or any timm model name (from scratch)")
    p.add_argument("--test-fraction", type=float, default=0.3, help="held-out lesions (lesion-level split)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=1, help="processes for rendering")
    p.add_argument("--modalities", default="NBI,WLI")
    add_config_arguments(p, "YAML with image-config values (e.g. a difficulty section)",
                         "difficulty.wli_pattern=0.25")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", type=lambda s: [c for c in s.split(",") if c])
    p.add_argument("--no-progress", action="store_true")


def build_net(name: str, num_classes: int):
    """`tinycnn` (5 conv blocks, ~0.1 M parameters) or a timm model, randomly initialised."""
    from torch import nn

    if name != "tinycnn":
        import timm

        return timm.create_model(name, pretrained=False, num_classes=num_classes)

    def block(i, o, s):
        return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

    return nn.Sequential(
        block(3, 24, 2),
        block(24, 32, 1),
        block(32, 48, 2),
        block(48, 64, 2),
        block(64, 96, 2),
        block(96, 128, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, num_classes),
    )


def render_set(cfg: ImageConfig, progress: bool, workers: int):
    """All views of all lesions in memory: images (N,H,W,3) uint8, labels, lesion index, modality."""
    from multiprocessing import get_context

    from tqdm import tqdm

    from .dataset import _init_worker, plan

    jobs = plan(cfg)
    out = []
    args = [(cfg, j) for j in jobs]
    pool = get_context("spawn").Pool(workers, _init_worker) if workers > 1 else None
    it = pool.imap(_views, args, chunksize=4) if pool else map(_views, args)
    for job, views in tqdm(
        zip(jobs, it), total=len(jobs), disable=not progress, desc="render", unit="lesion"
    ):
        out += [(img, cfg.classes.index(job.cls), job.index, m) for _, m, _, img in views]
    if pool:
        pool.close()
    imgs, labels, lesions, mods = zip(*out)
    return np.stack(imgs), np.array(labels), np.array(lesions), np.array(mods)


def _views(args):
    from .dataset import lesion_views

    return list(lesion_views(*args))


def train_eval(x_tr, y_tr, x_te, y_te, a, num_classes: int, progress: bool) -> float:
    """Train from scratch (Adam, cosine LR, flips/rot90) and return the test AUC."""
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import roc_auc_score
    from tqdm import tqdm

    torch.manual_seed(a.seed)
    net = build_net(a.model, num_classes)

    def to_t(x):
        return torch.from_numpy(x).permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.25)

    dev = torch.device(a.device)
    net = net.to(dev)
    xt, yt, xe = to_t(x_tr).to(dev), torch.from_numpy(y_tr).to(dev), to_t(x_te).to(dev)
    steps = a.steps
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=steps, pct_start=0.15)
    g = torch.Generator().manual_seed(a.seed)
    net.train()
    for step in tqdm(range(steps), disable=not progress, desc="train", unit="step", leave=False):
        idx = torch.randint(len(xt), (a.batch_size,), generator=g).to(dev)
        xb = xt[idx]
        if step % 2:
            xb = xb.flip(3)
        xb = torch.rot90(xb, int(step // 2 % 4), (2, 3))
        loss = F.cross_entropy(net(xb), yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        prob = torch.cat([net(xe[i : i + 256]).softmax(1) for i in range(0, len(xe), 256)]).cpu().numpy()
    if num_classes == 2:
        return float(roc_auc_score(y_te, prob[:, 1]))
    return float(roc_auc_score(y_te, prob, multi_class="ovr"))


def calibrate(a) -> dict:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(a.threads)
    try:
        return _calibrate(a)
    finally:
        torch.set_num_threads(threads)  # callers (tests) share the process


def _calibrate(a) -> dict:
    cfg = load(
        ImageConfig,
        a.config,
        a.overrides,
        out=a.out,
        seed=a.seed,
        classes=a.classes,
        size=a.size,
        lesions_per_class=a.lesions_per_class,
        views=a.views,
        paired_fraction=1.0,
    )
    validate(cfg)
    if a.steps < 1 or a.batch_size < 1 or not 0 < a.test_fraction < 1:
        raise ConfigError("--steps and --batch-size must be positive and --test-fraction in (0, 1)")
    t0 = time.time()
    imgs, labels, lesions, mods = render_set(cfg, not a.no_progress, a.workers)
    t_render = time.time() - t0
    # lesion-level split, stratified by class: no lesion has views on both sides
    rng = np.random.default_rng(a.seed)
    test = set()
    for c in range(len(cfg.classes)):
        ids = np.unique(lesions[labels == c])
        test |= set(rng.choice(ids, round(a.test_fraction * len(ids)), replace=False).tolist())
    is_test = np.isin(lesions, list(test))
    result = {
        "synthetic": True,
        "difficulty": vars(cfg.difficulty),
        "classes": cfg.classes,
        "size": a.size,
        "lesions_per_class": a.lesions_per_class,
        "views": a.views,
        "model": a.model,
        "steps": a.steps,
        "batch_size": a.batch_size,
        "test_lesions": len(test),
        "render_s": round(t_render, 1),
        "auc": {},
        "train_s": {},
    }
    for m in a.modalities.split(","):
        sel = mods == m
        t1 = time.time()
        auc = train_eval(
            imgs[sel & ~is_test],
            labels[sel & ~is_test],
            imgs[sel & is_test],
            labels[sel & is_test],
            a,
            len(cfg.classes),
            not a.no_progress,
        )
        result["auc"][m] = round(auc, 4)
        result["train_s"][m] = round(time.time() - t1, 1)
        print(f"{m}: AUC {auc:.3f} ({int((sel & is_test).sum())} test images, {result['train_s'][m]:.0f} s)")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration.json").write_text(json.dumps(result, indent=1) + "\n")
    ok = result["auc"].get("NBI", 1) >= 0.90 and 0.65 <= result["auc"].get("WLI", 0.75) <= 0.85
    print(
        f"SYNTHETIC calibration: {result['auc']} -> {'within' if ok else 'OUTSIDE'} the target ranges "
        f"(NBI >= 0.90, WLI 0.65-0.85); wrote {out / 'calibration.json'}"
    )
    return result

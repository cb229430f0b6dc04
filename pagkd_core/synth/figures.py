"""README pictures, both titled SYNTHETIC: image samples per class and frames from a clip."""

from __future__ import annotations

from pathlib import Path

from .config import ImageConfig, VideoConfig
from .dataset import Job, lesion_views
from .video import iter_procedure_frames


def samples_figure(path: Path, seed: int = 0, per_class: int = 2, views: int = 2, size: int = 256) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = ImageConfig(
        classes=["hyperplastic", "adenoma", "adenocarcinoma"],
        views=views,
        size=size,
        seed=seed,
        text_prob=0.0,
    )
    rows = []
    for c, cls in enumerate(cfg.classes):
        for k in range(per_class):
            got = {(m, v): img for _, m, v, img in lesion_views(cfg, Job(k * 3 + c, cls, ("WLI", "NBI")))}
            rows.append((cls, [got["WLI", v] for v in range(views)] + [got["NBI", v] for v in range(views)]))
    fig, axes = plt.subplots(len(rows), 2 * views, figsize=(2.1 * 2 * views, 2.1 * len(rows) + 0.6))
    for r, (cls, imgs) in enumerate(rows):
        for c, img in enumerate(imgs):
            ax = axes[r, c]
            ax.imshow(img)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(f"{'WLI' if c < views else 'NBI'} view {c % views + 1}", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{cls}\nlesion {r % per_class + 1}", fontsize=9)
    fig.suptitle(
        "SYNTHETIC lesions (pagkd_core.synth): same lesion in WLI (left) and NBI (right)", fontsize=11
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _pick(truths: list[dict], n: int) -> list[int]:
    """Frames worth showing: per lesion its first visible frame and its closest view, plus empty frames."""
    picks = [0]
    for lid in dict.fromkeys(t["lesion_id"] for t in truths if t["lesion_visible"]):
        idx = [i for i, t in enumerate(truths) if t["lesion_id"] == lid]
        big = max(
            idx, key=lambda i: (truths[i]["x1"] - truths[i]["x0"]) * (truths[i]["y1"] - truths[i]["y0"])
        )
        picks += [idx[0], (idx[0] + big) // 2, big]
    empty = [i for i, t in enumerate(truths) if not t["lesion_visible"]]
    picks += empty[len(empty) // 2 : len(empty) // 2 + 1]
    return sorted(dict.fromkeys(picks))[:n]


def video_figure(path: Path, seed: int = 0, seconds: float = 24.0, n: int = 8) -> Path:
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = VideoConfig(seed=seed, seconds=seconds, fps=10)
    frames, truths = [], []
    for rgb, truth in iter_procedure_frames(cfg):
        frames.append(cv2.resize(rgb, (480, 270), interpolation=cv2.INTER_AREA))
        truths.append(truth)
    picked = _pick(truths, n)
    cols = 4
    rows = -(-len(picked) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.45 * rows + 0.5), squeeze=False)
    s = 480 / cfg.width
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, picked):
        img, t = frames[i].copy(), truths[i]
        if t["lesion_visible"]:
            cv2.rectangle(
                img,
                (int(t["x0"] * s), int(t["y0"] * s)),
                (int(t["x1"] * s), int(t["y1"] * s)),
                (255, 255, 0),
                2,
            )
        ax.imshow(img)
        ax.set_title(
            f"t={t['pts']:.1f}s  " + (t["class"] if t["lesion_visible"] else "no lesion"), fontsize=9
        )
    fig.suptitle(
        f"SYNTHETIC procedure video ({cfg.width}x{cfg.height} WLI, seed {seed}) with ground-truth boxes",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def make_figures(out: Path, seed: int = 0) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    return [
        samples_figure(out / "synth_samples.png", seed),
        video_figure(out / "synth_video_frames.png", seed),
    ]

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

    cfg = ImageConfig(classes=["hyperplastic", "adenoma", "adenocarcinoma"], views=views, size=size, seed=seed,
                      text_prob=0.0)
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
    fig.suptitle("SYNTHETIC lesions (pagkd_core.synth): same lesion in WLI (left) and NBI (right)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def video_figure(path: Path, seed: int = 0, times=(1.0, 4.5, 6.5, 9.0, 12.0, 16.0, 19.0, 23.0)) -> Path:
    import cv2
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = VideoConfig(seed=seed, seconds=max(times) + 0.1)
    want = {round(t * cfg.fps) for t in times}
    picked = []
    for rgb, truth in iter_procedure_frames(cfg):
        if truth["frame"] in want:
            img = rgb.copy()
            if truth["lesion_visible"]:
                cv2.rectangle(img, (truth["x0"], truth["y0"]), (truth["x1"], truth["y1"]), (255, 255, 0), 3)
            label = f"t={truth['pts']:.1f}s  " + (truth["class"] if truth["lesion_visible"] else "no lesion")
            picked.append((img, label))
    cols = 4
    fig, axes = plt.subplots(len(picked) // cols, cols, figsize=(4 * cols, 2.45 * (len(picked) // cols) + 0.5))
    for ax, (img, label) in zip(axes.flat, picked):
        ax.imshow(img)
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"SYNTHETIC procedure video ({cfg.width}x{cfg.height}, {cfg.fps} fps, seed {seed}) "
                 "with ground-truth boxes", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def make_figures(out: Path, seed: int = 0) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    return [samples_figure(out / "synth_samples.png", seed), video_figure(out / "synth_video_frames.png", seed)]

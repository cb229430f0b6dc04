"""Image datasets: `<root>/<modality>/<class>/<lesion>_<n>.png` plus `manifest.csv`.

Every lesion and every view has its own seeded generator ([seed, lesion, modality, view]),
so the bytes do not depend on the worker count or on the order the work is done in.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

from pagkd_core.config import ConfigError

from . import latent as L
from .config import MODALITIES, ImageConfig
from .render import render_view

MANIFEST_COLUMNS = ("path", "lesion_id", "class", "modality", "view", "paired")


@dataclass(frozen=True)
class Job:
    index: int
    cls: str
    modalities: tuple[str, ...]


def plan(cfg: ImageConfig) -> list[Job]:
    """Which lesions exist and in which modalities: exactly `paired_fraction` of each class paired,
    the others split evenly between WLI-only and NBI-only."""
    rng = np.random.default_rng([cfg.seed, 0xC1A55])
    jobs = []
    n = cfg.lesions_per_class
    for c, cls in enumerate(cfg.classes):
        n_paired = round(cfg.paired_fraction * n)
        order = rng.permutation(n)
        for k in range(n):
            rank = int(np.nonzero(order == k)[0][0])
            mods = MODALITIES if rank < n_paired else (MODALITIES[(rank - n_paired) % 2],)
            jobs.append(Job(k * len(cfg.classes) + c, cls, tuple(mods)))
    return sorted(jobs, key=lambda j: j.index)


def lesion_id(cfg: ImageConfig, index: int) -> str:
    return f"s{cfg.seed}-{index:05d}"


def _text(rng: np.random.Generator) -> list[str]:
    return [
        "SYNTHETIC",
        f"20{rng.integers(20, 27)}/{rng.integers(1, 13):02d}/{rng.integers(1, 29):02d}",
        f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}:{rng.integers(0, 60):02d}",
    ]


def lesion_views(cfg: ImageConfig, job: Job):
    """Yield (lesion_id, modality, view, rgb uint8) for every view of one lesion."""
    lid = lesion_id(cfg, job.index)
    lesion = L.sample_lesion(
        np.random.default_rng([cfg.seed, job.index]), job.cls, cfg.classes, cfg.difficulty, lid
    )
    for modality in job.modalities:
        for v in range(cfg.views):
            rng = np.random.default_rng([cfg.seed, job.index, MODALITIES.index(modality), v])
            border = str(rng.choice(["round", "octagon"])) if cfg.border == "random" else cfg.border
            text = _text(rng) if rng.uniform() < cfg.text_prob else None
            yield lid, modality, v, render_view(lesion, modality, rng, cfg.size, cfg.difficulty, border, text)


def render_job(cfg: ImageConfig, job: Job) -> list[tuple]:
    """Render and write all views of one lesion; returns its manifest rows."""
    rows = []
    for lid, modality, v, img in lesion_views(cfg, job):
        rel = f"{modality}/{job.cls}/{lid}_{v}.png"
        (Path(cfg.out) / rel).parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(Path(cfg.out) / rel), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {Path(cfg.out) / rel}")
        rows.append((rel, lid, job.cls, modality, v, int(len(job.modalities) == 2)))
    return rows


def _init_worker():
    import numba

    numba.set_num_threads(1)  # processes, not threads, share the cores


def _call(args):
    render, cfg, unit = args
    return render(cfg, unit)


def render_all(render, cfg, units: list, bar, count=lambda rows: 1, chunksize: int = 1) -> list:
    """``render(cfg, unit)`` for every unit, results concatenated in unit order; in ``cfg.workers``
    spawned processes when more than one (every unit seeds its own generator, so the output does
    not depend on the count). ``bar`` advances by ``count(rows)`` per unit."""
    rows: list = []
    if cfg.workers > 1:
        with get_context("spawn").Pool(cfg.workers, _init_worker) as pool:
            for r in pool.imap(_call, [(render, cfg, u) for u in units], chunksize=chunksize):
                rows += r
                bar.update(count(r))
    else:
        for u in units:
            r = render(cfg, u)
            rows += r
            bar.update(count(r))
    return rows


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"cannot write to output folder {folder}: {e.strerror or e}; choose another --out"
        ) from None


def _remove_previous(root: Path) -> None:
    """Delete the images an earlier run listed in root/manifest.csv (and nothing else), so the
    new manifest and the folder agree. Only files under root: a manifest can list another set's
    frames by a relative path (video_frames.py's --include), and those are not this run's."""
    old = root / "manifest.csv"
    if old.is_file():
        inside = root.resolve()
        with open(old, newline="") as fh:
            for row in csv.DictReader(fh):
                p = root / row.get("path", "")
                if p.suffix == ".png" and p.resolve().is_relative_to(inside) and p.is_file():
                    p.unlink()
        old.unlink()


def validate(cfg: ImageConfig) -> None:
    if cfg.lesions_per_class < 1:
        raise ConfigError(f"--lesions-per-class must be at least 1 (got {cfg.lesions_per_class})")
    if cfg.views < 1:
        raise ConfigError(f"--views must be at least 1 (got {cfg.views})")
    if not 32 <= cfg.size <= 2048:
        raise ConfigError(f"--size must be between 32 and 2048 pixels (got {cfg.size})")
    if not 0.0 <= cfg.paired_fraction <= 1.0:
        raise ConfigError(f"--paired-fraction must be in [0, 1] (got {cfg.paired_fraction})")
    if cfg.workers < 1:
        raise ConfigError(f"--workers must be at least 1 (got {cfg.workers})")


def generate_images(cfg: ImageConfig, progress: bool = True) -> Path:
    """Write the whole dataset; returns the manifest path."""
    from tqdm import tqdm

    validate(cfg)
    root = Path(cfg.out)
    check_writable(root)
    _remove_previous(root)
    jobs = plan(cfg)
    bar = tqdm(total=len(jobs), disable=not progress, unit="lesion", desc="synthetic images")
    rows = render_all(render_job, cfg, jobs, bar, chunksize=4)
    bar.close()
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(MANIFEST_COLUMNS)
        w.writerows(rows)
    (root / "synth_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")
    return manifest

"""Training frames cut from procedure videos: the deployment's own distribution of views.

`frames.py` renders each lesion alone from chosen poses. A procedure (`video.py`) shows what the
runtime really gets: lesions approaching from far away, partly in view, folds and lumen between
them. This module runs the procedure of each seed, shades every `every`-th frame (the others are
only ray-cast for their truth), cuts the content area as the runtime does, and writes the frames
in `frames.py`'s layout, so `pagkd_core.data` reads them unchanged:
`<out>/WLI/<class>/<id>_<frame>.png` and `<out>/manifest.csv` (FRAME_COLUMNS).

- WLI only: the videos are rendered without NBI stretches, so no lesion is seen in both
  modalities (unpaired, as in PaGKD). `--include ROOT` appends another frame set's rows (its NBI
  frames, its close-ups), with paths relative to `<out>`, so one data root holds both.
- Far lesions are left out (`min_coverage`, default 5% of the field): frames that show a
  lesion smaller than that are neither a lesion class nor `no_lesion`. Their class is not in
  those pixels, and a student fine-tuned with them read most frames with no lesion in view as a
  lesion (docs/training.md, "Tried and not bundled: fine-tuned on procedure frames"); frames
  with no lesion in view are all kept.
- One patient per video (`v<seed>`): lesion-level splits keep a video's frames together.
  Frames with no lesion in view get one id per 2 s of the video (`v<seed>-n<k>`).
- Seeds are the caller's: use seeds no evaluation uses (the held-out videos are 1000+, the
  validation videos 900-907; `benchmarks/video.py` owns those lists).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pagkd_core.config import ConfigError

from .config import VideoConfig
from .dataset import _remove_previous, check_writable, render_all
from .frames import FRAME_COLUMNS, NO_LESION, content_view, write_png
from .scene import content_box
from .video import iter_procedure_frames

NO_LESION_CHUNK_S = 2.0  # frames with no lesion in view: one id per this many seconds


def _saved_box(truth: dict, box: tuple[int, int, int, int], size: int) -> tuple:
    """The lesion's box (frame pixels, inclusive) in the saved image's pixels, clipped to it."""
    if not truth["lesion_visible"]:
        return ("", "", "", "")
    bx0, by0, bx1, by1 = box
    sx, sy = size / (bx1 - bx0), size / (by1 - by0)
    x0, x1 = (int(np.clip((v - bx0) * sx, 0, size - 1)) for v in (truth["x0"], truth["x1"]))
    y0, y1 = (int(np.clip((v - by0) * sy, 0, size - 1)) for v in (truth["y0"], truth["y1"]))
    return x0, y0, x1, y1


def video_rows(cfg: VideoConfig, out: Path, size: int, every: int, min_coverage: float = 0.0) -> list[dict]:
    """Render one procedure (its seed is `cfg.seed`), write its kept frames; returns their rows.
    Frames showing a lesion at under `min_coverage` of the field are left out (see module doc)."""
    box = content_box(cfg.height, cfg.width, cfg.border)
    pid, rows = f"v{cfg.seed}", []
    for rgb, truth in iter_procedure_frames(cfg, shade_every=every):
        if rgb is None or (truth["lesion_visible"] and truth["coverage"] < min_coverage):
            continue
        f = truth["frame"]
        if truth["lesion_visible"]:
            cls, lid, ev = truth["class"], truth["lesion_id"], truth["wli_evidence"]  # ids name the seed
        else:
            cls, lid, ev = NO_LESION, f"{pid}-n{int(truth['pts'] // NO_LESION_CHUNK_S):03d}", ""
        rel = f"WLI/{cls}/{lid}_{f}.png"
        write_png(out / rel, content_view(rgb, box, size))
        x0, y0, x1, y1 = _saved_box(truth, box, size)
        rows.append({
            "path": rel, "lesion_id": lid, "class": cls, "modality": "WLI", "view": f, "paired": 0,
            "patient_id": pid, "coverage": truth["coverage"], "x0": x0, "y0": y0, "x1": x1, "y1": y1,
            "wli_evidence": "" if ev is None else ev, "distance": "",
            "lesion_contrast": "" if truth["lesion_contrast"] is None else truth["lesion_contrast"],
        })  # fmt: skip
    return rows


def included_rows(root: Path, out: Path) -> list[dict]:
    """Another frame set's manifest rows, their paths made relative to `out`."""
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise ConfigError(f"--include {root}: no manifest.csv there (make it with `synth frames`)")
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    base = os.path.relpath(root.resolve(), out.resolve())
    return [{c: r.get(c, "") for c in FRAME_COLUMNS} | {"path": f"{base}/{r['path']}"} for r in rows]


@dataclass(frozen=True)
class _Job:
    """What every worker needs (dataset.render_all reads `workers`)."""

    video: VideoConfig
    out: Path
    size: int
    every: int
    min_coverage: float
    workers: int


def _render_seed(job: _Job, seed: int) -> list[dict]:
    return video_rows(
        dataclasses.replace(job.video, seed=seed), job.out, job.size, job.every, job.min_coverage
    )


def generate_video_frames(
    cfg: VideoConfig, seeds: list[int], out: str | Path, size: int = 192, every: int = 4,
    min_coverage: float = 0.05, include: list[str | Path] = (), workers: int = 1, progress: bool = True,
) -> Path:  # fmt: skip
    """Write the frames of one procedure per seed (pure WLI) plus the `include`d sets' rows;
    returns the manifest path. The manifest is written last, so a stopped run leaves none."""
    from tqdm import tqdm

    if not seeds:
        raise ConfigError("give at least one seed (--seeds A-B or A,B,C)")
    if every < 1 or not 32 <= size <= 1024:
        raise ConfigError(f"--every must be >= 1 and --size in [32, 1024] (got {every}, {size})")
    if not 0.0 <= min_coverage < 1.0:
        raise ConfigError(f"--min-coverage must be in [0, 1) (got {min_coverage})")
    out = Path(out)
    check_writable(out)
    _remove_previous(out)
    cfg = dataclasses.replace(cfg, modality="WLI", nbi_fraction=0.0)
    bar = tqdm(total=len(seeds), disable=not progress, unit="video", desc="frames from procedures")
    rows = render_all(
        _render_seed, _Job(cfg, out, size, every, min_coverage, workers), seeds, bar, count=lambda _: 1
    )
    bar.close()
    for root in include:
        rows += included_rows(Path(root), out)
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, FRAME_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    meta = {"video": dataclasses.asdict(cfg), "seeds": seeds, "size": size, "every": every, "min_coverage": min_coverage,
            "include": [str(r) for r in include], "synthetic": True}  # fmt: skip
    (out / "synth_config.json").write_text(json.dumps(meta, indent=1) + "\n")
    return manifest

"""What a second look at a small lesion would give: ``python -m benchmarks.second_look``.

    python -m benchmarks.second_look --videos DIR [DIR ...] [--model STUDENT.json] [--every 3] \\
        [--side 0.5] [--zoom 0] [--min-coverage 0.02] [--out FILE.md] [--json FILE.json]

Why: a lesion that has just come into close view covers 5% of the field, some 57 px of the
student's 256 px input, and its class cue is texture that a 4x downscale of a 1080p frame
blurs. Would the student read it better from a crop that shows it larger? This measures it
before any runtime is built for it: per WLI frame with a lesion in view (truth coverage >=
``--min-coverage``, every ``--every``-th frame), the student (torch, fp32) reads

* ``full``: the content area, as the runtime does today;
* ``at truth``: a square crop, centred on the truth's lesion box, from the decoded frame at its
  own resolution (the upper bound of locating). Its side: ``--side`` x the content area's
  height; with ``--zoom`` Z, Z x the box's side where that is more (the truth's size, for every
  crop below too: the figures then say where to look, not how far to zoom);
* ``at map``: the same crop centred on the cell of the full view's own class-activation map
  (the head on each cell of the stride-16 feature map) that is most sure a lesion is there:
  what a runtime could do with one extra inference and no other model;
* ``at centre``: the same crop at the content area's centre, where an endoscopist steers the
  lesion they look at (no locating at all).

Figures per coverage bin: class AUC (neoplastic vs not, P renormalised over the lesion
classes, as ``stream evaluate``) of each read; ``at map - full`` and ``at centre - full`` with a
paired bootstrap 95% interval over lesions (one lesion id in one video is one unit;
pagkd_core.metrics); and how often each placed crop holds the lesion's centre. Use VALIDATION
videos: this informs a design choice. Bad input: one line ``second_look: error: ...``.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from benchmarks.video_compare import as_two_columns, run
from pagkd_core.metrics import metric_value, paired_bootstrap_diff
from pagkd_core.outputs import background_index, lesion_indices
from pagkd_core.student import load_student
from stream.alerts import AlertConfig
from stream.config import bundled_model
from stream.preprocess import Preprocessor, detect_content_area
from stream.sources import open_source
from stream.video_eval import find_videos
from stream.video_metrics import read_truth, truth_path
from stream.video_metrics_report import fmt, md_table

PROG = "second_look"
BINS = ((0.02, 0.05, "2-5%"), (0.05, 0.10, "5-10%"), (0.10, 0.15, "10-15%"), (0.15, 1.01, ">=15%"))
LOOKS = ("at map", "at centre")  # crops a runtime can place
READS = ("full", "at truth", *LOOKS)


def square(cx: float, cy: float, side: float, area: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """A square of ``side`` px centred on (cx, cy), moved (not shrunk) to lie inside ``area``."""
    x0, y0, x1, y1 = area
    side = min(side, x1 - x0, y1 - y0)
    left = float(np.clip(cx - side / 2, x0, x1 - side))
    top = float(np.clip(cy - side / 2, y0, y1 - side))
    return round(left), round(top), round(left + side), round(top + side)


def crop_side(args, area: tuple[int, int, int, int], lesion_side: float) -> float:
    """``--side`` x the area's height; with ``--zoom`` Z, Z x the lesion's box side, at least that
    (the truth's size for every crop: this then measures where to look, not how far to zoom)."""
    side = args.side * (area[3] - area[1])
    return min(max(side, args.zoom * lesion_side), area[3] - area[1]) if args.zoom else side


def lesion_map(model, features: torch.Tensor, background: int) -> torch.Tensor:
    """(h, w) per-cell "a lesion is here" logit of one frame: the head on each feature cell (as the
    'mil' pooling reads regions), log-sum-exp of the lesion classes minus no_lesion."""
    cells = F.conv2d(features, model.head.weight[:, :, None, None], model.head.bias)[0]
    lesion = [k for k in range(cells.shape[0]) if k != background]
    return torch.logsumexp(cells[lesion], 0) - cells[background]


def map_centre(cells: torch.Tensor, area: tuple[int, int, int, int]) -> tuple[float, float]:
    """The most lesion-like cell's centre, in frame pixels (the input is the content area resized)."""
    h, w = cells.shape
    i, j = divmod(int(cells.flatten().argmax()), w)
    x0, y0, x1, y1 = area
    return x0 + (j + 0.5) / w * (x1 - x0), y0 + (i + 0.5) / h * (y1 - y0)


def scored(truth, args) -> np.ndarray:
    """(T,) bool: the frames this reads (WLI, lesion box known, coverage >= --min-coverage, every N-th)."""
    return (truth.visible & (truth.modality.astype(str) == "WLI") & (truth.coverage >= args.min_coverage)
            & np.isfinite(truth.box).all(1) & (np.arange(len(truth)) % args.every == 0))


def read_video(video: Path, truth, model, meta: dict, args, bar) -> list[dict]:
    """One row per scored frame: coverage, truth, each read's P(neoplastic | lesion), each placed
    crop's hit."""
    names = meta["class_names"]
    bg, lesions = background_index(names), lesion_indices(names)
    positive = sorted(AlertConfig(class_names=tuple(names)).alert_indices)  # as stream evaluate scores
    positive_names = {names[k] for k in positive}
    pre = Preprocessor.for_model(meta, detect=False)
    wanted = scored(truth, args)
    if not wanted.any():
        return []
    rows = []
    with open_source(str(video)) as src:
        for frame in src:
            i = frame.index
            if i >= len(truth) or not wanted[i]:
                continue
            found = detect_content_area(frame)
            area = found.box if found is not None else (0, 0, frame.size[1], frame.size[0])
            bx0, by0, bx1, by1 = truth.box[i]
            side = crop_side(args, area, max(bx1 - bx0, by1 - by0))
            at_truth = square((bx0 + bx1) / 2, (by0 + by1) / 2, side, area)
            with torch.no_grad():
                full = torch.from_numpy(pre(frame, area))[None]
                features = model.forward_features(full)
                cx, cy = map_centre(lesion_map(model, features, bg), area)
                at_map = square(cx, cy, side, area)
                at_centre = square((area[0] + area[2]) / 2, (area[1] + area[3]) / 2, side, area)
                crops = torch.from_numpy(np.stack([pre(frame, b) for b in (at_truth, at_map, at_centre)]))
                logits = torch.cat([model.classify(features), model(crops)])
            p = torch.softmax(logits, 1).numpy()
            score = p[:, positive].sum(1) / p[:, lesions].sum(1)
            hit = [b[0] <= (bx0 + bx1) / 2 <= b[2] and b[1] <= (by0 + by1) / 2 <= b[3] for b in (at_map, at_centre)]
            rows.append({"unit": f"{video.stem}/{truth.lesion_id[i]}", "coverage": float(truth.coverage[i]),
                         "positive": truth.cls[i] in positive_names,
                         **dict(zip(READS, map(float, score))), "hit": hit})
            bar.update(1)
    return rows


def figures(rows: list[dict], args) -> list[dict]:
    out = []
    for lo, hi, label in BINS:
        sel = [r for r in rows if lo <= r["coverage"] < hi]
        y = np.array([r["positive"] for r in sel], int)
        row = {"bin": label, "frames": len(sel), "lesions": len({r["unit"] for r in sel})}
        scores = {k: np.array([r[k] for r in sel]) for k in READS}
        for k in READS:
            row[k] = metric_value("auc", y, as_two_columns(scores[k])) if len(set(y)) == 2 else None
        units = np.array([r["unit"] for r in sel])
        for k in LOOKS:
            row[f"{k} - full"] = None
            if row["full"] is not None:
                boot = paired_bootstrap_diff(y, [as_two_columns(scores[k])], [as_two_columns(scores["full"])], units,
                                             metric="auc", n_boot=args.resamples, seed=args.seed)
                row[f"{k} - full"] = {"diff": boot["diff"], "ci95": boot["ci95"]}
        for j, k in enumerate(LOOKS):
            row[f"{k} holds the lesion"] = float(np.mean([r["hit"][j] for r in sel])) if sel else None
        out.append(row)
    return out


def second_look(argv: list[str]) -> dict:
    args = build_parser().parse_args(argv)
    if not 0 < args.side <= 1 or args.every < 1 or args.zoom < 0:
        raise ValueError("--side must be in (0, 1] (a share of the content area's height), --every >= 1, --zoom >= 0")
    videos = find_videos(args.videos)
    model_path = args.model or os.path.relpath(bundled_model())
    model, meta = load_student(model_path)
    if background_index(meta["class_names"]) is None:
        raise ValueError(f"{model_path}: the map needs a student with a no_lesion output")
    torch.set_num_threads(args.threads)
    truths = [read_truth(truth_path(v)) for v in videos]
    total = sum(int(scored(t, args).sum()) for t in truths)
    if not total:
        raise ValueError(f"no WLI frame with a lesion box and coverage >= {args.min_coverage:g} in {len(videos)} video(s)")
    rows = []
    with tqdm(total=total, desc="frames", disable=args.quiet) as bar:
        for video, truth in zip(videos, truths):
            rows += read_video(video, truth, model, meta, args, bar)
    return {"command": "python -m benchmarks.second_look " + shlex.join(argv), "model": str(model_path),
            "videos": [str(v) for v in videos], "side": args.side, "zoom": args.zoom, "every": args.every, "synthetic": bool(meta.get("synthetic")),
            "bins": figures(rows, args)}


def markdown(rep: dict) -> str:
    def diff(d: dict | None) -> str:
        return "–" if d is None else f"{d['diff']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"

    table = md_table(["lesion size in view", "frames", "lesions", *(f"class AUC {k}" for k in READS),
                      *(f"{k} - full [95% CI]" for k in LOOKS), *(f"crop {k} holds the lesion" for k in LOOKS)],
                     [[b["bin"], b["frames"], b["lesions"], *(fmt(b[k]) for k in READS),
                       *(diff(b[f"{k} - full"]) for k in LOOKS), *(fmt(b[f"{k} holds the lesion"]) for k in LOOKS)]
                      for b in rep["bins"]])
    return "\n".join([
        "# A second look at the lesion: class AUC by how it is read" + (" (SYNTHETIC videos)" if rep["synthetic"] else ""),
        "", f"Command: `{rep['command']}`  ",
        (f"Model: `{rep['model']}` (torch, fp32); {len(rep['videos'])} videos; crop side {rep['side']:g} x the "
         "content area's height" + (f", or {rep['zoom']:g} x the truth box's side if more" if rep["zoom"] else "")
         + f"; every {rep['every']} frame(s)."), "", table, ""])


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks.{PROG}", description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", nargs="+", required=True, help="VALIDATION videos or folders (each with <video>.truth.csv)")
    ap.add_argument("--model", help="student .json (default: the bundled student)")
    ap.add_argument("--every", type=int, default=3, help="score every N-th frame (default 3)")
    ap.add_argument("--side", type=float, default=0.5, help="crop side, share of the content area's height (default 0.5)")
    ap.add_argument("--zoom", type=float, default=0.0,
                    help="crop side = ZOOM x the truth box's side, at least --side (default 0: --side alone)")
    ap.add_argument("--min-coverage", type=float, default=0.02, help="smallest lesion share of the field scored (default 0.02)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the table here (markdown)")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv: list[str] | None = None) -> int:
    return run(second_look, markdown, build_parser, argv, error_prefix=PROG)


if __name__ == "__main__":
    sys.exit(main())

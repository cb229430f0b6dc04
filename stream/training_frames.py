"""Training frames as the runtime reads them: ``python -m stream frames VIDEO... --out DIR``.

    python -m stream frames data/train_videos --out data/rt_frames --every 6 --views whole,centre

The generator's frame sets (``python -m pagkd_core synth-video-frames``) are rendered pixels that
the generator crops and resizes itself and that never pass a video encoder. The runtime reads
H.264 video, finds the content area with its own tracker, scales it with its own FFmpeg graph,
and a two-view student also reads the field's central square (stream.views). A student trained
on the one and run on the other meets pixels it never saw (docs/training.md, "Codec"). This tool
replays procedure videos through the runtime's own decoder and ``Preprocessor`` and writes, for
every ``every``-th WLI frame, each view's model input (before normalisation) as a PNG labelled
from the video's truth (``<video>.truth.csv``, as ``python -m pagkd_core synth-video`` writes),
in pagkd_core's frame layout (``<out>/WLI/<class>/<lesion>_<frame>_<view>.png`` and
``<out>/manifest.csv``, FRAME_COLUMNS), so ``python -m pagkd_core train`` reads them unchanged.

Labels per view. The whole view takes the truth's. The centre view sees the lesion when at least
half of the lesion's box lies in the square (its coverage then scaled to the square's area), sees
no lesion when none of it does, and is left out in between (a lesion cut by the square's edge is
neither). Frames with no lesion in view get one id per 2 s of the video, as the generator's sets.

- One patient per video (the file's stem); lesion ids are prefixed with it, so two videos' ids
  never merge. Lesion-level splits keep a video's frames together.
- NBI frames (the truth's ``modality``) are left out: the student is WLI-only, and PaGKD's NBI
  data must not show the same lesions (unpaired). ``--include ROOT`` appends another frame set's
  rows (its close-ups, its NBI images) with paths relative to ``<out>``.
- Videos must be the caller's training videos: never an evaluation's seeds (benchmarks/video.py
  owns those lists).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pagkd_core.config import ConfigError
from pagkd_core.synth.frames import FRAME_COLUMNS, NO_LESION, write_png
from pagkd_core.synth.video_frames import included_rows
from stream.preprocess import ContentArea, Preprocessor
from stream.sources.base import SourceError
from stream.sources.file import open_file
from stream.video_eval import find_videos
from stream.video_metrics import Truth, read_truth, truth_path
from stream.views import WHOLE, Box, parse_views, view_box

NO_LESION_CHUNK_S = 2.0  # frames with no lesion in view: one id per this many seconds
CENTRE_INSIDE = 0.5  # share of the lesion's box a cropped view must hold to be labelled with it


@dataclass(frozen=True)
class Label:
    cls: str
    lesion_id: str
    coverage: float
    box: tuple  # x0, y0, x1, y1 in the saved image's pixels (inclusive), or four ""


def _overlap(a: Box, b: np.ndarray) -> float:
    """Share of box ``b`` (x0, y0, x1, y1, inclusive frame pixels) inside ``a`` (exclusive)."""
    x0, y0, x1, y1 = b
    w, h = x1 - x0 + 1, y1 - y0 + 1
    iw = max(0.0, min(a[2], x1 + 1) - max(a[0], x0))
    ih = max(0.0, min(a[3], y1 + 1) - max(a[1], y0))
    return float(iw * ih / (w * h)) if w > 0 and h > 0 else 0.0


def _saved_box(lesion: np.ndarray, box: Box, size: int) -> tuple:
    bx0, by0, bx1, by1 = box
    sx, sy = size / (bx1 - bx0), size / (by1 - by0)
    x0, x1 = (int(np.clip((v - bx0) * sx, 0, size - 1)) for v in (lesion[0], lesion[2]))
    y0, y1 = (int(np.clip((v - by0) * sy, 0, size - 1)) for v in (lesion[1], lesion[3]))
    return x0, y0, x1, y1


def view_label(truth: Truth, i: int, pid: str, area: ContentArea, box: Box, size: int) -> Label | None:
    """Frame ``i``'s label in the view that reads ``box`` of a field whose content area is ``area``;
    None: the lesion is cut by the view's edge, or a cropped view's lesion has no box (module doc)."""
    none = Label(NO_LESION, f"{pid}-n{int(truth.times[i] // NO_LESION_CHUNK_S):03d}", 0.0, ("",) * 4)
    if not truth.visible[i]:
        return none
    lesion, whole = truth.box[i], box == area.box
    known = bool(np.isfinite(lesion).all())
    if not known and not whole:
        return None
    inside = _overlap(box, lesion) if known else 1.0
    if inside == 0.0:
        return none  # a lesion in the frame, none in this view
    if inside < CENTRE_INSIDE:
        return None
    # The truth's coverage is the lesion's share of the field's pixels (the content box times its
    # fill); in a cropped view, of the crop's pixels, taken as all field (near enough for the
    # central square of a wide field).
    coverage = float(truth.coverage[i])  # NaN where the truth does not say: written as unknown
    if not whole:
        field = (area.box[2] - area.box[0]) * (area.box[3] - area.box[1]) * area.fill
        coverage = min(1.0, coverage * field / ((box[2] - box[0]) * (box[3] - box[1])) * inside)
    saved = _saved_box(lesion, box, size) if known else ("",) * 4
    return Label(str(truth.cls[i]), f"{pid}-{truth.lesion_id[i]}", coverage, saved)


def _number(x: float) -> str:
    """A manifest number: 4 significant digits, "" when unknown."""
    return "" if not np.isfinite(x) else f"{x:.4g}"


def video_rows(video: Path, truth: Truth, out: Path, pre: Preprocessor, views: tuple[str, ...], every: int,
               bar: tqdm) -> list[dict]:  # fmt: skip
    """Replay one video; write the kept frames of each view; returns their manifest rows."""
    if not np.array_equal(truth.frame, np.arange(len(truth))):
        raise ValueError(f"{truth_path(video)}: frame numbers must run 0, 1, 2, ... (one row per decoded frame)")
    pid, rows, size = video.stem, [], pre.input_size[0]
    src, decoded = open_file(str(video)), 0
    try:
        for frame in src.frames():
            i, decoded = frame.index, decoded + 1
            bar.update(1)
            area = pre.area(frame)  # on every frame, as the runtime's tracker sees them
            if i >= len(truth) or i % every or truth.modality[i] != "WLI":
                continue
            for view in views:
                box = view_box(view, area.box)
                label = view_label(truth, i, pid, area, box, size)
                if label is None:
                    continue
                rel = f"WLI/{label.cls}/{label.lesion_id}_{i}_{view}.png"
                write_png(out / rel, pre.pixels(frame, box, view).transpose(1, 2, 0))
                lesion = label.cls != NO_LESION
                rows.append({
                    "path": rel, "lesion_id": label.lesion_id, "class": label.cls, "modality": "WLI",
                    "view": i, "paired": 0, "patient_id": pid, "coverage": _number(label.coverage),
                    "x0": label.box[0], "y0": label.box[1], "x1": label.box[2], "y1": label.box[3],
                    "wli_evidence": _number(truth.evidence[i]) if lesion else "", "distance": "",
                    "lesion_contrast": _number(truth.contrast[i]) if lesion else "",
                })  # fmt: skip
    finally:
        src.close()
    if decoded != len(truth):
        raise SourceError(f"{video}: decoded {decoded} frames, its truth has {len(truth)} rows; "
                          "re-make the video with its truth")
    return rows


def videos_with_truth(paths: list[str]) -> list[Path]:
    """The videos ``python -m stream evaluate`` would read from ``paths``; each must have its truth."""
    videos = find_videos(paths)
    for v in videos:
        if not truth_path(v).is_file():
            raise ConfigError(f"{v}: no truth beside it ({truth_path(v).name}); frames need their labels")
    return videos


def cut_frames(videos: list[Path], out: Path, size: int = 256, every: int = 6, views=(WHOLE,),
               include: list[Path] = (), progress: bool = True) -> Path:  # fmt: skip
    """Write the frame set; returns its manifest path. The manifest is written last, so a stopped
    run leaves none (and a folder that has one is refused: nothing is overwritten)."""
    if every < 1 or not 32 <= size <= 1024:
        raise ConfigError(f"--every must be >= 1 and --size in [32, 1024] (got {every}, {size})")
    views = parse_views(views)
    manifest = out / "manifest.csv"
    if manifest.exists():
        raise ConfigError(f"{out} already holds a frame set (manifest.csv); give a new --out or remove it")
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    truths = [read_truth(truth_path(v)) for v in videos]
    with tqdm(total=sum(map(len, truths)), disable=not progress, unit="frame",
              desc="frames as the runtime reads them") as bar:  # fmt: skip
        for v, truth in zip(videos, truths):
            # The runtime's preprocessing at the student's size, a fresh content-area tracker per
            # video as per stream; mean and std do not matter for uint8 pixels.
            pre = Preprocessor((size, size), mean=(0, 0, 0), std=(1, 1, 1), backend="cv2")
            rows += video_rows(v, truth, out, pre, views, every, bar)
    for root in include:
        rows += included_rows(Path(root), out)
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, FRAME_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    meta = {"videos": [str(v) for v in videos], "size": size, "every": every, "views": list(views),
            "include": [str(r) for r in include], "synthetic": "as the videos are"}  # fmt: skip
    (out / "frames_config.json").write_text(json.dumps(meta, indent=1) + "\n")
    return manifest


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m stream frames", description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="+", metavar="VIDEO", help="video files or folders of them, each with "
                    "<video>.truth.csv beside it (python -m pagkd_core synth-video writes both)")
    ap.add_argument("--out", required=True, help="new folder for the frames and manifest.csv")
    ap.add_argument("--size", type=int, default=256, help="the student's input size (default 256)")
    ap.add_argument("--every", type=int, default=6, help="keep every N-th frame (default 6)")
    ap.add_argument("--views", default=WHOLE, help="whole, or whole,centre (default whole)")
    ap.add_argument("--include", action="append", default=[], metavar="ROOT",
                    help="append another frame set's rows (its manifest.csv), e.g. close-ups with NBI images")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        manifest = cut_frames(videos_with_truth(args.videos), Path(args.out), args.size, args.every, args.views,
                              [Path(r) for r in args.include], progress=not args.no_progress)  # fmt: skip
    except (ConfigError, ValueError, SourceError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with open(manifest, newline="") as fh:
        n = sum(1 for _ in fh) - 1
    print(f"wrote {manifest} ({n} frames)")
    return 0

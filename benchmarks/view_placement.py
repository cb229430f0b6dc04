"""Where the second view helps and where it costs: class AUC of close-view lesion frames by where the
lesion sits, inside the central square (stream.views' ``centre``) or outside it, for the whole view
alone and for each way of fusing the views' class splits.

    python -m benchmarks.view_placement VIDEOS --predictions-dir CACHE

``CACHE``: the prediction logs of ``python -m stream evaluate`` run with two views (each line keeps
``view_probs``). No inference runs here. The content area is found on each video's first frame.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from stream.alerts import AlertConfig
from stream.preprocess import detect_content_area
from stream.sources import open_source
from stream.video_eval import find_videos
from stream.video_metrics import auc, read_truth, truth_path
from stream.views import CENTRE, SPLIT, fuse, view_box


def content_area(video: Path) -> tuple[int, int, int, int]:
    with open_source(str(video)) as src:
        frame = next(iter(src))
    found = detect_content_area(frame)
    return found.box if found is not None else (0, 0, frame.size[1], frame.size[0])


def rows(video: Path, log: Path, min_coverage: float) -> list[dict]:
    """One row per WLI frame with a lesion >= ``min_coverage`` of the field and a logged two-view read."""
    truth, (x0, _, x1, _) = read_truth(truth_path(video)), view_box(CENTRE, content_area(video))
    out, alerts = [], None
    with open(log) as f:
        lines = f.readlines()
    for line in lines:
        rec = json.loads(line)
        i, views = rec.get("frame"), rec.get("view_probs")
        if (not views or i is None or i >= len(truth) or not truth.visible[i] or str(truth.modality[i]) != "WLI"
                or not truth.coverage[i] >= min_coverage or not np.isfinite(truth.box[i]).all()):
            continue
        names, p = rec["classes"], np.array(list(views.values()))
        if alerts is None:  # the log's one class list: scored as stream evaluate scores it
            alerts = AlertConfig(class_names=tuple(names))
            positive = {names[k] for k in alerts.alert_indices}
        reads = {"whole view": p[0], **{f"fused ({s} split)": fuse(p, names, split=s) for s in SPLIT}}
        centre_x = (truth.box[i][0] + truth.box[i][2]) / 2
        out.append({"inside": bool(x0 <= centre_x <= x1), "positive": truth.cls[i] in positive,
                    **{k: alerts.alert_probability(v) for k, v in reads.items()}})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.view_placement", description=__doc__.split("\n")[0])
    ap.add_argument("videos", nargs="+", help="videos (each with <video>.truth.csv) or folders of them")
    ap.add_argument("--predictions-dir", required=True, help="two-view logs of python -m stream evaluate")
    ap.add_argument("--min-coverage", type=float, default=0.05, help="lesion share of the field (default: close view)")
    args = ap.parse_args(argv)
    try:
        videos = find_videos(args.videos)
        found = [r for v in videos for r in rows(v, Path(args.predictions_dir) / f"{v.stem}.jsonl", args.min_coverage)]
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    if not found:
        print(f"error: no two-view reads of close-view lesion frames in {args.predictions_dir}", file=sys.stderr)
        return 2
    reads = [k for k in found[0] if k not in ("inside", "positive")]
    print(f"Class AUC (the alert classes against the other lesion classes), WLI frames with a lesion >= {args.min_coverage:.0%} of the field, "
          f"{len(videos)} SYNTHETIC videos\n\n| lesion centre | frames | " + " | ".join(reads) + " |\n|" + "---|" * (2 + len(reads)))
    for inside, label in ((True, "inside the central square"), (False, "outside it")):
        sel = [r for r in found if r["inside"] == inside]
        y = np.array([r["positive"] for r in sel])
        cells = [auc(y, np.array([r[k] for r in sel])) if sel else None for k in reads]
        print(f"| {label} | {len(sel)} | " + " | ".join("–" if c is None else f"{c:.3f}" for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

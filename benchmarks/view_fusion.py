"""How a two-view student's views should be fused (stream.views.fuse), chosen on validation videos.

    python -m benchmarks.view_fusion VAL_VIDEOS --predictions-dir CACHE --out DIR [--grid GRID]

``CACHE`` holds the prediction logs of ``python -m stream evaluate`` run with two views: each line
keeps every view's softmax (``view_probs``) beside the fused one. For each way of fusing P(a lesion
is there) (``stream.views.PRESENCE``: the whole view's, the views' mean, the surer view's), the logs
are fused again into ``DIR/<presence>/predictions`` and ``python -m stream tune`` chooses the alert
setting on them by its rule; the table gives, per fusion, the chosen setting's first-call rate, its
median time from close view to a right call, false alarms, and the frame AUCs. No inference runs
here. The videos must be validation videos (the choice is made on them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from stream.tune import tune
from stream.views import PRESENCE, SPLIT, fuse

FIGURES = (("close_first_call_correct", "first call right"), ("time_close_to_correct_median_s", "close view -> right call, median s"),
           ("false_alarms_no_lesion_per_min", "false alarms/min"), ("auc_class_close_raw", "class AUC (close, raw)"),
           ("auc_presence_raw", "presence AUC (raw)"))


def refuse_log(src: Path, dst: Path, presence: str, split: str = SPLIT[0]) -> int:
    """``src``'s lines with ``probs`` fused again from ``view_probs``; the number of lines fused."""
    n = 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src) as f, open(dst, "w") as out:
        for line in f:
            rec = json.loads(line)
            views = rec.get("view_probs")
            if views:
                rec["probs"] = [round(float(v), 6) for v in fuse(np.array(list(views.values())), rec["classes"], presence, split)]
                n += 1
            out.write(json.dumps(rec) + "\n")
    return n


def view_fusion(argv: list[str]) -> dict:
    args = build_parser().parse_args(argv)
    cache, out = Path(args.predictions_dir), Path(args.out)
    logs = sorted(cache.glob("*.jsonl"))
    if not logs:
        raise FileNotFoundError(f"{cache}: no prediction logs (*.jsonl); run python -m stream evaluate with two views first")
    rows = {}
    for presence in args.presence:
        preds = out / presence / "predictions"
        fused = sum(refuse_log(log, preds / log.name, presence, args.split) for log in logs)
        if not fused:
            raise ValueError(f"{cache}: no line has view_probs; the logs are not of a student reading several views")
        grid = ["--grid", args.grid] if args.grid else []
        t = tune([*args.videos, "--out", str(out / presence), "--predictions-dir", str(preds), *grid,
                  *(["--model", args.model] if args.model else [])])
        pooled = json.loads((out / presence / "evaluate" / "report.json").read_text())["pooled"][t["chosen"]]
        rows[presence] = {"chosen": t["chosen"], "floor": t["first_call_floor"], **{k: pooled.get(k) for k, _ in FIGURES}}
    return {"command": "python -m benchmarks.view_fusion " + " ".join(argv), "out": str(out), "rows": rows}


def markdown(rep: dict) -> str:
    head = ["presence from", "setting chosen (stream tune's rule)", *[name for _, name in FIGURES]]
    lines = ["# Fusing the views: P(a lesion is there) from which view (SYNTHETIC validation videos)", "",
             f"`{rep['command']}`", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for presence, r in rep["rows"].items():
        cells = [f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k, _ in FIGURES]
        lines.append(f"| {presence} | `{r['chosen']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.view_fusion", description=__doc__.split("\n")[0])
    ap.add_argument("videos", nargs="+", help="VALIDATION videos or folders (each with <video>.truth.csv)")
    ap.add_argument("--predictions-dir", required=True, help="logs of python -m stream evaluate with two views")
    ap.add_argument("--out", required=True, help="folder: one subfolder per fusion, and view_fusion.md/json")
    ap.add_argument("--model", help="the student (default: the bundled one)")
    ap.add_argument("--grid", help="stream tune's --grid (default: its own)")
    ap.add_argument("--presence", nargs="+", default=list(PRESENCE), choices=PRESENCE)
    ap.add_argument("--split", default=SPLIT[0], choices=SPLIT, help="how the views' class splits are averaged")
    return ap


def main(argv: list[str] | None = None) -> int:
    try:
        rep = view_fusion(sys.argv[1:] if argv is None else argv)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    out = Path(rep["out"])
    (out / "view_fusion.json").write_text(json.dumps(rep, indent=1) + "\n")
    (out / "view_fusion.md").write_text(markdown(rep))
    print(markdown(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())

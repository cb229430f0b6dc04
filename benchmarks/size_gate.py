"""The first calls a student would make if it waited until a lesion is close, from cached logs.

A first call is the first class label the alert machine shows from a lesion's first visible
frame, so a student that guesses the class of a lesion still too small to classify loses the
lesion there. This asks how much that costs: for each gate ``g``, on frames where the truth
says the lesion covers less than ``g`` of the field, the student's split among the lesion
classes is replaced by even odds (its presence is kept), so no label can start before the
lesion is that close. Each gate is scored over the tune grid and its best setting picked by
``stream tune``'s own rule. The truth supplies the size, so this is a ceiling, not a student:
it says what a learned gate (e.g. ``data.far_coverage``) should aim at. Run it on VALIDATION
videos only. No inference: it reads the per-frame logs ``stream evaluate/tune
--predictions-dir DIR`` cached.

``--presence-from LABEL=DIR``: each student's P(no_lesion) is first replaced by that student's
(same videos, same classes), its split among the lesion classes kept: the first calls it would
make behind another student's presence gate. A student that learnt to see far lesions also opens
its gate on them; behind a gate that opens only on lesions it can read, what is left is its class.

    python -m benchmarks.size_gate --videos VAL_DIR [VAL_DIR ...] --preds LABEL=DIR [...] \
        [--gates 0,0.05,0.1,0.15,0.2] [--grid GRID] [--presence-from LABEL=DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from benchmarks.video_compare import parse_preds, read_logs
from pagkd_core.outputs import background_index, lesion_indices
from stream.alerts import AlertConfig
from stream.tune import DEFAULT_GRID, FALSE_ALARMS, UNCERTAIN, first_call_key, parse_grid, rank
from stream.video_eval import Setting, apply_setting, find_videos
from stream.video_infer import Raw
from stream.video_metrics import read_truth, summarise, truth_path


def gated(raw: Raw, coverage: np.ndarray, gate: float, lesion_cols: list[int]) -> Raw:
    """``raw`` with even odds among the lesion classes (``lesion_cols``) wherever the lesion
    covers < ``gate``; P(lesion), their sum, is kept."""
    probs = raw.probs.copy()
    far = np.nan_to_num(coverage, nan=0.0) < gate
    mass = probs[np.ix_(far, lesion_cols)].sum(axis=1, keepdims=True)
    probs[np.ix_(far, lesion_cols)] = mass / len(lesion_cols)
    return Raw(probs, raw.modality, raw.skipped, raw.gaps)


def with_presence(raw: Raw, other: Raw, bg: int, lesion_cols: list[int]) -> Raw:
    """``raw`` with ``other``'s P(no_lesion) and its own split among the lesion classes (renormalised
    to the other's P(lesion)); a frame either left unanalysed stays unanalysed."""
    probs = raw.probs.copy()
    split = probs[:, lesion_cols] / probs[:, lesion_cols].sum(axis=1, keepdims=True)
    probs[:, lesion_cols] = split * (1.0 - other.probs[:, [bg]])
    probs[:, bg] = other.probs[:, bg]
    probs[~np.isfinite(raw.probs).all(axis=1)] = np.nan
    return Raw(probs, raw.modality, raw.skipped, raw.gaps)


def best_per_gate(videos: list[Path], folder: Path, gates: list[float], grid: str,
                  presence_from: Path | None = None) -> list[dict]:  # fmt: skip
    truths = [read_truth(truth_path(v)) for v in videos]
    names, raws = read_logs(folder.name, folder, videos, truths)
    bg = background_index(names)
    if bg is None:
        raise ValueError(f"{folder}: the student has no no_lesion output")
    cols = lesion_indices(names)
    if presence_from is not None:
        other_names, others = read_logs(presence_from.name, presence_from, videos, truths)
        if other_names != names:
            raise ValueError(f"--presence-from {presence_from}: classes {other_names} differ from {folder}'s {names}")
        raws = [with_presence(r, o, bg, cols) for r, o in zip(raws, others)]
    specs, _ = parse_grid(grid, presence=True)
    settings = [Setting.parse(s, AlertConfig(class_names=tuple(names))) for s in specs]
    rows = []
    for g in gates:
        runs = [(t, gated(r, t.coverage, g, cols) if g > 0 else r) for t, r in zip(truths, raws)]
        pooled = {s.name: summarise([apply_setting(t, t.times, r, s)[0] for t, r in runs]) for s in settings}
        first = first_call_key(pooled)
        best = rank(pooled, first)[0]
        m = pooled[best]
        rows.append({"gate": g, "setting": best, "first_call": m[first], "false_alarms": m[FALSE_ALARMS],
                     "uncertain": m[UNCERTAIN], "median_s": m.get("time_close_to_correct_median_s"),
                     "lesions": m.get("close_view_lesions")})  # fmt: skip
    return rows


def _f(v, fmt: str = ".3f") -> str:
    return "–" if v is None else format(v, fmt)


def markdown(label: str, rows: list[dict]) -> str:
    head = (f"| {label}: gate (lesion share of the field) | first call right | false alarms/min (no lesion) "
            "| close view -> right call (median s) | uncertain | best setting |")
    lines = [head, "|---|---|---|---|---|---|"]
    for r in rows:
        gate = "none" if r["gate"] == 0 else f"< {r['gate']:g}"
        lines.append(f"| {gate} | {_f(r['first_call'])} | {_f(r['false_alarms'])} | {_f(r['median_s'], '.2f')} "
                     f"| {_f(r['uncertain'])} | `{r['setting']}` |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.size_gate", description=__doc__.splitlines()[0])
    ap.add_argument("--videos", nargs="+", required=True, help="validation videos or folders (with .truth.csv)")
    ap.add_argument("--preds", nargs="+", required=True, metavar="LABEL=DIR", help="cached per-frame logs")
    ap.add_argument("--gates", default="0,0.05,0.1,0.15,0.2", help="coverage gates, 0 = none (default %(default)s)")
    ap.add_argument("--grid", default=DEFAULT_GRID, help="settings, in stream tune's grammar (default: tune's)")
    ap.add_argument("--presence-from", metavar="LABEL=DIR", help="another student's logs: its P(no_lesion) is used")
    args = ap.parse_args(argv)
    try:
        gates = [float(g) for g in args.gates.split(",") if g.strip()]
        if not gates or any(not 0 <= g < 1 for g in gates):
            raise ValueError(f"--gates wants shares of the field in [0, 1), got {args.gates!r}")
        videos = find_videos([str(v) for v in args.videos])
        gate_label, gate_folder = parse_preds(args.presence_from) if args.presence_from else ("", None)
        for label, folder in (parse_preds(p) for p in args.preds):
            title = f"{label}, presence from {gate_label}" if gate_folder else label
            print(markdown(title, best_per_gate(videos, folder, gates, args.grid, gate_folder)) + "\n")
    except (OSError, ValueError) as e:
        print(f"size_gate: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""benchmarks.size_gate: the first call a student would make if it waited until a lesion is close.

A hand-made procedure (truth CSV + per-frame log, no video is read): 2 s with no lesion, then one
adenoma 2 s far away (2% of the field) where the student is sure it is hyperplastic, then 2 s
close (30%) where it is sure and right. Without a gate the first call is the far, wrong one;
a gate at 5% keeps the far guess from starting a label, so the first call is the close, right one.
"""
from __future__ import annotations

import csv
import json

import numpy as np

from benchmarks.size_gate import best_per_gate, gated, main
from stream.video_infer import Raw

FPS, N = 30, 180
CLASSES = ["no_lesion", "hyperplastic", "adenoma"]


def write_procedure(folder):
    video = folder / "procedure_s1.mp4"
    video.write_bytes(b"")  # only its name is used: the figures come from the cached log
    with open(folder / "procedure_s1.truth.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["frame", "pts", "lesion_visible", "lesion_id", "class", "modality", "coverage", "wli_evidence"])
        for i in range(N):
            seen = i >= 60
            cov = 0.0 if not seen else (0.02 if i < 120 else 0.30)
            w.writerow([i, i / FPS, int(seen), "L1" if seen else "", "adenoma" if seen else "", "WLI", cov,
                        0.8 if seen else ""])
    preds = folder / "preds"
    preds.mkdir()
    with open(preds / "procedure_s1.jsonl", "w") as f:
        for i in range(N):
            p = [0.95, 0.03, 0.02] if i < 60 else ([0.02, 0.93, 0.05] if i < 120 else [0.02, 0.03, 0.95])
            f.write(json.dumps({"frame": i, "pts": i / FPS, "classes": CLASSES, "probs": p, "modality": "WLI"}) + "\n")
    return video, preds


def test_gated_keeps_presence_and_evens_the_class_split_below_the_gate():
    probs = np.array([[0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [np.nan] * 3])
    raw = Raw(probs, np.array(["WLI"] * 3, dtype=object), [None] * 3)
    out = gated(raw, np.array([0.01, 0.5, 0.01]), 0.05, lesion_cols=[1, 2])
    assert np.allclose(out.probs[0], [0.2, 0.4, 0.4])  # far: P(lesion) 0.8 kept, split evenly
    assert np.allclose(out.probs[1], probs[1])  # close: untouched
    assert np.isnan(out.probs[2]).all()  # a frame the runtime never analysed stays unanalysed
    assert np.allclose(raw.probs[0], [0.2, 0.7, 0.1])  # the caller's log is not changed


def test_a_gate_turns_a_far_wrong_first_call_into_a_close_right_one(tmp_path):
    video, preds = write_procedure(tmp_path)
    rows = best_per_gate([video], preds, [0.0, 0.05], "smoothing=none;threshold=0.7;min_frames=3")
    assert [r["gate"] for r in rows] == [0.0, 0.05]
    assert rows[0]["first_call"] == 0.0 and rows[1]["first_call"] == 1.0
    assert rows[0]["lesions"] == rows[1]["lesions"] == 1


def test_command_prints_one_table_per_student_and_one_line_errors(tmp_path, capsys):
    _, preds = write_procedure(tmp_path)
    assert main(["--videos", str(tmp_path), "--preds", f"toy={preds}", "--gates", "0,0.05",
                 "--grid", "smoothing=none;threshold=0.7"]) == 0
    out = capsys.readouterr().out
    assert "| toy: gate" in out and "| none |" in out and "| < 0.05 |" in out
    assert main(["--videos", str(tmp_path), "--preds", f"toy={preds}", "--gates", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("size_gate: error:") and "--gates" in err and "\n" not in err


def test_with_presence_takes_the_others_gate_and_keeps_the_split():
    from benchmarks.size_gate import with_presence

    mod = np.array(["WLI"] * 2, dtype=object)
    own = Raw(np.array([[0.1, 0.6, 0.3], [np.nan] * 3]), mod, [None] * 2)
    other = Raw(np.array([[0.7, 0.2, 0.1], [0.5, 0.25, 0.25]]), mod, [None] * 2)
    out = with_presence(own, other, 0, [1, 2])
    assert np.allclose(out.probs[0], [0.7, 0.2, 0.1])  # P(lesion) 0.3 from the other, split 2:1 kept
    assert np.isnan(out.probs[1]).all()  # unanalysed by the student: stays so


def test_behind_a_gate_that_stays_shut_on_the_far_frames_the_first_call_is_right(tmp_path, capsys):
    video, preds = write_procedure(tmp_path)
    shy = tmp_path / "shy"  # a student that sees no lesion while it is far, then sees it close
    shy.mkdir()
    with open(shy / "procedure_s1.jsonl", "w") as f:
        for i in range(N):
            p = [0.95, 0.03, 0.02] if i < 120 else [0.05, 0.5, 0.45]
            f.write(json.dumps({"frame": i, "pts": i / FPS, "classes": CLASSES, "probs": p, "modality": "WLI"}) + "\n")
    grid = "smoothing=none;threshold=0.7;presence=0.5;min_frames=3"
    assert best_per_gate([video], preds, [0.0], grid)[0]["first_call"] == 0.0  # its own gate: the far guess
    assert best_per_gate([video], preds, [0.0], grid, presence_from=shy)[0]["first_call"] == 1.0
    assert main(["--videos", str(tmp_path), "--preds", f"toy={preds}", "--gates", "0", "--grid", grid,
                 "--presence-from", f"shy={shy}"]) == 0
    assert "| toy, presence from shy: gate" in capsys.readouterr().out

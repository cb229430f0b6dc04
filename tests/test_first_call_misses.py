"""benchmarks.first_call_misses on a hand-made procedure (truth CSV + per-frame log, no video read).

One 30 fps video: 1 s with no lesion, then five lesions of 2 s each, 1 s of empty colon between
them, one per category under "no smoothing, threshold 0.7, 3 frames":

* L1 adenoma, close (30% of the field), the student sure it is adenoma: right;
* L2 adenoma, 20 frames far (2%) where the student is sure it is hyperplastic, then close and
  right: the wrong first call came far;
* L3 hyperplastic, close, the student sure it is adenoma: wrong, called close;
* L4 adenoma, close, the student sure nothing is there: not seen;
* L5 hyperplastic, close, the student torn between the classes: seen, never sure.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from benchmarks.first_call_misses import CLOSE, FAR, NEVER_SURE, NOT_SEEN, RIGHT, main, misses

FPS, GAP, LEN = 30, 30, 60
CLASSES = ["no_lesion", "hyperplastic", "adenoma"]
SURE_HYP, SURE_ADE, EMPTY = [0.02, 0.93, 0.05], [0.02, 0.03, 0.95], [0.95, 0.03, 0.02]
# id, class, evidence, expected category, per-frame (coverage, probs) of its LEN frames
LESIONS = [("L1", "adenoma", 0.9, RIGHT, lambda i: (0.30, SURE_ADE)),
           ("L2", "adenoma", 0.8, FAR, lambda i: (0.02, SURE_HYP) if i < 20 else (0.30, SURE_ADE)),
           ("L3", "hyperplastic", 0.2, CLOSE, lambda i: (0.30, SURE_ADE)),
           ("L4", "adenoma", 0.1, NOT_SEEN, lambda i: (0.30, [0.90, 0.05, 0.05])),
           ("L5", "hyperplastic", 0.5, NEVER_SURE, lambda i: (0.30, [0.10, 0.48, 0.42]))]
SETTING = "none:threshold=0.7,min_frames=3"


def frames():
    """(lesion id, class, coverage, evidence, probs) of every frame, in order."""
    rng = np.random.default_rng(0)
    out = [("", "", 0.0, None, EMPTY)] * GAP
    for lid, cls, ev, _, at in LESIONS:
        for i in range(LEN):
            cov, p = at(i)
            p = np.clip(np.asarray(p) + rng.uniform(-0.005, 0.005, 3), 1e-4, None)  # a little seeded noise
            out.append((lid, cls, cov, ev, (p / p.sum()).round(6).tolist()))
        out += [("", "", 0.0, None, EMPTY)] * GAP
    return out


def write_procedure(folder, classes=CLASSES):
    videos = folder / "videos"
    videos.mkdir()
    (videos / "procedure_s1.mp4").write_bytes(b"")  # only its name is used: the states come from the log
    preds = folder / "preds"
    preds.mkdir()
    keep = [CLASSES.index(c) for c in classes]
    with open(videos / "procedure_s1.truth.csv", "w", newline="") as t, open(preds / "procedure_s1.jsonl", "w") as f:
        w = csv.writer(t)
        w.writerow(["frame", "pts", "lesion_visible", "lesion_id", "class", "modality", "coverage", "wli_evidence"])
        for i, (lid, cls, cov, ev, p) in enumerate(frames()):
            w.writerow([i, i / FPS, int(bool(lid)), lid, cls, "WLI", cov, "" if ev is None else ev])
            q = np.asarray(p)[keep]
            f.write(json.dumps({"frame": i, "pts": i / FPS, "classes": classes, "probs": (q / q.sum()).tolist(),
                                "modality": "WLI"}) + "\n")
    return videos, preds


def test_each_lesion_lands_in_its_category(tmp_path):
    videos, preds = write_procedure(tmp_path)
    rep = misses(["--videos", str(videos), "--preds", str(preds), "--setting", SETTING])
    got = {les["lesion_id"]: les for les in rep["lesions"]}
    assert {k: v["category"] for k, v in got.items()} == {lid: cat for lid, _, _, cat, _ in LESIONS}
    assert got["L2"]["first_call"] == "hyperplastic" and got["L2"]["coverage_at_first_call"] == pytest.approx(0.02)
    assert got["L3"]["first_call"] == "adenoma" and got["L3"]["coverage_at_first_call"] == pytest.approx(0.30)
    assert got["L4"]["close_no_lesion_share"] == 1.0 and got["L5"]["close_no_lesion_share"] == 0.0
    assert rep["evidence_median"] == pytest.approx(0.5)  # upper half: >= the median, as video_metrics
    assert {k: v["evidence_half"] for k, v in got.items()} == {"L1": "upper", "L2": "upper", "L3": "lower",
                                                               "L4": "lower", "L5": "upper"}
    assert rep["counts"] == {RIGHT: 1, FAR: 1, CLOSE: 1, NOT_SEEN: 1, NEVER_SURE: 1}
    # the vote over the whole view: L2's far frames lose to its close ones, L3 is wrong throughout,
    # L5's slight lean is enough (L4's even odds are a coin toss: not asserted)
    assert {k: got[k]["vote"] for k in ("L1", "L2", "L3", "L5")} == {
        "L1": "adenoma", "L2": "adenoma", "L3": "adenoma", "L5": "hyperplastic"}
    assert [got[k]["vote_right"] for k in ("L1", "L2", "L3", "L5")] == [True, True, False, True]


def test_a_student_without_no_lesion_cannot_miss_by_not_seeing(tmp_path, capsys):
    videos, preds = write_procedure(tmp_path, classes=["hyperplastic", "adenoma"])
    rep = misses(["--videos", str(videos), "--preds", str(preds), "--setting", SETTING])
    assert rep["counts"][NOT_SEEN] == 0 and not rep["has_no_lesion"]
    assert {les["lesion_id"]: les["category"] for les in rep["lesions"]}["L4"] == NEVER_SURE  # even odds: torn
    assert main(["--videos", str(videos), "--preds", str(preds), "--setting", SETTING]) == 0
    assert "'not seen' cannot occur" in capsys.readouterr().out


def test_command_prints_and_writes_the_markdown_and_errors_in_one_line(tmp_path, capsys):
    videos, preds = write_procedure(tmp_path)
    out = tmp_path / "report" / "misses.md"
    assert main(["--videos", str(videos), "--preds", str(preds), "--setting", SETTING, "--out", str(out)]) == 0
    text = out.read_text()
    assert capsys.readouterr().out == text
    assert "SYNTHETIC" in text and f"setting `{SETTING}`" in text and str(preds) in text
    assert "| right | 1 (20%) |" in text and "| not seen | 1 (20%) |" in text
    assert "| procedure_s1 | L2 | adenoma | 0.800 | wrong, called far | hyperplastic | 0.020 |" in text
    assert "| procedure_s1 | L1 |" not in text  # the misses table lists misses only
    assert "| wrong first call, vote right (called too early) | 1 (20%) |" in text  # L2
    assert "| 0.1-0.2 | 1 | 0 (0%) | 0 (0%) |" in text       # L3 (0.2 opens the next band; L4 at 0.1: here)
    (preds / "procedure_s1.jsonl").unlink()
    assert main(["--videos", str(videos), "--preds", str(preds), "--setting", SETTING]) == 2
    err = capsys.readouterr().err
    assert err.startswith("first_call_misses: error:") and "procedure_s1.jsonl" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as e:  # argparse's own errors: one line too
        main(["--videos", str(videos), "--preds", str(preds)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("first_call_misses: error:") and err.count("\n") == 1

"""benchmarks.presence_ceiling on a hand-made procedure (truth CSV + per-frame log, no video read).

Ten WLI frames with no lesion, then ten with one lesion at known contrasts (grey levels). The
student is sure of the lesion at >= 4 grey levels and scores the fainter ones as empty mucosa.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from benchmarks.presence_ceiling import CONTRASTS, COVERAGES, ceiling_rows, main

CLASSES = ["no_lesion", "hyperplastic", "adenoma"]
LESION_CONTRASTS = [0.5, 1.5, 2.5, 3.5, 5.0, 5.0, 6.0, 9.0, 12.0, np.nan]  # the last one not measured


def frames():
    """(lesion visible, contrast, P(no_lesion)) of every frame, in order."""
    empty = [(False, np.nan, 0.9 - 0.01 * i) for i in range(10)]
    lesion = [(True, c, 0.05 if c >= 4 else 0.85) for c in LESION_CONTRASTS]
    return empty + lesion


def test_the_ceiling_counts_the_faint_lesion_frames_and_the_student_is_scored_above_each():
    visible, contrast, p_empty = (np.array(col) for col in zip(*frames()))
    rows = {r["from"]: r for r in ceiling_rows(visible.astype(bool), contrast.astype(float), 1.0 - p_empty)}
    assert list(rows) == list(CONTRASTS)
    # below 1: 0.5 and the unmeasured one; below 2: + 1.5; below 4: + 2.5, 3.5
    assert [rows[c]["lesion_frames_below"] for c in (1.0, 2.0, 3.0, 4.0, 8.0)] == [2, 3, 4, 5, 8]
    assert rows[4.0]["share_below"] == pytest.approx(0.5) and rows[4.0]["ceiling"] == pytest.approx(0.75)
    # sure of everything at >= 4: perfect there; below, its faint-lesion frames rank among the empty ones
    assert rows[4.0]["student_above"] == pytest.approx(1.0) and rows[8.0]["student_above"] == pytest.approx(1.0)
    assert rows[1.0]["student_above"] < 1.0


def test_the_same_ceiling_by_size_in_view():
    visible, _, p_empty = (np.array(col) for col in zip(*frames()))
    coverage = np.full(len(visible), np.nan)
    coverage[visible.astype(bool)] = [0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, np.nan]  # last: not measured
    rows = {r["from"]: r for r in ceiling_rows(visible.astype(bool), coverage, 1.0 - p_empty, COVERAGES)}
    assert list(rows) == list(COVERAGES)
    # below 0.5%: 0.0 and the unmeasured one; below 1%: the same; below 2%: + 0.01; below 5%: + 0.02, 0.03, 0.04
    assert [rows[c]["lesion_frames_below"] for c in COVERAGES] == [2, 2, 3, 6]
    assert rows[0.05]["ceiling"] == pytest.approx(0.7)


def write_procedure(folder, contrast_column=True):
    videos, preds = folder / "videos", folder / "preds"
    videos.mkdir()
    preds.mkdir()
    (videos / "procedure_s1.mp4").write_bytes(b"")  # only its name is used
    with open(videos / "procedure_s1.truth.csv", "w", newline="") as t, open(preds / "procedure_s1.jsonl", "w") as f:
        w = csv.writer(t)
        w.writerow(["frame", "pts", "lesion_visible", "lesion_id", "class", "modality", "coverage"]
                   + (["lesion_contrast"] if contrast_column else []))
        for i, (vis, c, p0) in enumerate(frames()):
            w.writerow([i, i / 30, int(vis), "L1" if vis else "", "adenoma" if vis else "", "WLI", 0.1 if vis else 0.0]
                       + (["" if np.isnan(c) else c] if contrast_column else []))
            f.write(json.dumps({"frame": i, "pts": i / 30, "classes": CLASSES, "modality": "WLI",
                                "probs": [p0, (1 - p0) / 2, (1 - p0) / 2]}) + "\n")
    return videos, preds


def test_command_prints_and_writes_the_table_and_errors_in_one_line(tmp_path, capsys):
    videos, preds = write_procedure(tmp_path)
    out, js = tmp_path / "ceiling.md", tmp_path / "ceiling.json"
    assert main(["--videos", str(videos), "--preds", str(preds), "--out", str(out), "--json", str(js)]) == 0
    printed = capsys.readouterr().out
    assert printed == out.read_text() and "| 4 | 5 | 0.500 | 0.750 | 1.000 |" in printed
    # every lesion frame covers 10% of the field: none is below any size cut
    assert "| 5.0% | 0 | 0.000 | 1.000 |" in printed and "## By size in view" in printed
    rep = json.loads(js.read_text())
    assert rep["lesion_frames"] == 10 and rep["no_lesion_frames"] == 10 and len(rep["rows"]) == len(CONTRASTS)
    assert len(rep["coverage_rows"]) == len(COVERAGES)

    bare = tmp_path / "bare"
    bare.mkdir()
    videos, preds = write_procedure(bare, contrast_column=False)
    assert main(["--videos", str(videos)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("presence_ceiling: error:") and "lesion_contrast" in err and err.count("\n") == 1


def test_a_missing_flag_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main([])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("presence_ceiling: error:") and err.count("\n") == 1

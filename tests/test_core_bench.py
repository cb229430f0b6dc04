"""benchmarks.distill --quick: the decisive protocol end to end through the trainer (one seed,
two folds, one regime), resumable, in pieces, refusing to mix settings."""

from __future__ import annotations

import json

from benchmarks.distill import main
from benchmarks.distill_runs import ROWS


def test_quick_protocol_tables_resume_and_pieces(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["--quick", "--out", str(out), "--rows", "wli_only,swap", "--regime", "few"]) == 0
    table = (out / "table-few.md").read_text()
    for name in ("wli_only", "swap"):
        assert ROWS[name][0] in table
    assert "NBI teacher" in table and "SYNTHETIC" in table and "paired" in table and "--quick" in table
    assert "1 WLI training lesions per class" in table
    res = json.loads((out / "results-few.json").read_text())
    swap = res["rows"]["swap"]
    assert swap["vs_wli_only"]["seeds"] == [0] and swap["vs_wli_only"]["n_units"] > 0
    lo, hi = swap["vs_wli_only"]["ci95"]
    assert lo <= swap["vs_wli_only"]["diff"] <= hi
    assert swap["vs_pagkd"] is None, "PaGKD not run yet"
    hist = json.loads((out / "seed0" / "fold0" / "few.swap" / "last.json").read_text())
    assert hist["distill"]["teacher_class_shift"] == 1 and "grad_norm" in hist["history"][0]
    # pieces: a rerun skips finished stages; --table-only trains nothing and marks missing rows
    stamp = (out / "seed0" / "fold1" / "few.swap" / "last.safetensors").stat().st_mtime
    assert main(["--quick", "--out", str(out), "--rows", "wli_only,swap,pagkd", "--regime", "few",
                 "--table-only"]) == 0
    assert "not run yet" in (out / "table-few.md").read_text()
    assert main(["--quick", "--out", str(out), "--rows", "swap", "--regime", "few"]) == 0
    assert (out / "seed0" / "fold1" / "few.swap" / "last.safetensors").stat().st_mtime == stamp
    # the same folder with other settings is refused, not mixed into the table
    capsys.readouterr()
    assert main(["--quick", "--out", str(out), "--rows", "swap", "--regime", "few", "--few-lesions", "2",
                 "--table-only"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main(["--quick", "--out", str(out), "--rows", "nope"]) == 2


def test_validation_sweep_ranks_by_validation_only(tmp_path):
    out = tmp_path / "sweep"
    assert main(["--quick", "--out", str(out), "--sweep", "pro_weight=0.1,1"]) == 0
    md = (out / "sweep.md").read_text()
    assert "pro_weight=0.1" in md and "pro_weight=1.0" in md and "--set distill.pro_weight=" in md
    assert not list(out.glob("seed0/fold*/sweep.*/test_predictions.json")), "the sweep never predicts test folds"
    assert main(["--quick", "--out", str(out), "--sweep", "nokey=1"]) == 2

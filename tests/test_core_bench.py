"""benchmarks.distill --quick: the ablation table is produced end to end through the trainer."""

from __future__ import annotations

import json

from benchmarks.distill import ROWS, main


def test_quick_ablation_table(tmp_path):
    out = tmp_path / "bench"
    assert main(["--quick", "--out", str(out), "--rows", "wli_only,pagkd,logit_kd"]) == 0
    table = (out / "table.md").read_text()
    for name in ("wli_only", "pagkd", "logit_kd"):
        assert ROWS[name][0] in table
    assert "NBI teacher" in table and "SYNTHETIC" in table
    res = json.loads((out / "results.json").read_text())
    assert set(res["rows"]) == {"nbi_teacher", "wli_only", "pagkd", "logit_kd"}
    for r in res["rows"].values():
        assert 0 <= r["auc"] <= 1 and len(r["fold_auc"]) == 2 and r["n_images"] > 0
    assert main(["--quick", "--out", str(out), "--rows", "nope"]) == 2

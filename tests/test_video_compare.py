"""Paired comparison of two students from cached prediction logs (benchmarks.video_compare).

Everything is written in tmp_path: truth CSVs of hand-made procedures (10 fps, lesions with a
coverage ramp so part of each is in close view), empty ``.mp4`` files beside them (nothing is
decoded) and prediction logs written by stream.video_infer.write_log from seeded scores.
"""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from benchmarks.video_compare import compare, main, markdown
from pagkd_core.outputs import NO_LESION
from stream.video_infer import Raw, write_log
from stream.video_metrics import read_truth

CLASSES3 = [NO_LESION, "hyperplastic", "adenoma"]
CLASSES2 = ["hyperplastic", "adenoma"]
HEADER = ["frame", "pts", "lesion_visible", "lesion_id", "class", "x0", "y0", "x1", "y1", "modality", "coverage",
          "wli_evidence"]


def write_video(folder, stem, lesions, coverage=True, gap=8, length=16):
    """A procedure: ``gap`` no-lesion frames, then each lesion for ``length`` frames (coverage rising
    from 1% to 15%), lesion ids L0, L1, ... (the same ids in every video), classes alternating."""
    rows, f = [], 0
    for i in range(lesions):
        for _ in range(gap):
            rows.append({"frame": f, "lesion_visible": 0, "lesion_id": "", "class": "", "coverage": 0.0})
            f += 1
        for j in range(length):
            rows.append({"frame": f, "lesion_visible": 1, "lesion_id": f"L{i}",
                         "class": CLASSES2[(i + len(stem)) % 2], "coverage": 0.01 + 0.14 * j / (length - 1)})
            f += 1
    folder.mkdir(parents=True, exist_ok=True)
    cols = HEADER if coverage else HEADER[:9]
    with open(folder / f"{stem}.truth.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "pts": r["frame"] / 10, "modality": "WLI"})
    (folder / f"{stem}.mp4").write_bytes(b"")
    return folder / f"{stem}.truth.csv"


def scores(truth, noise, rng, classes=CLASSES3):
    """Probabilities with a fixed signal and Gaussian noise (per frame and per lesion)."""
    n = len(truth)
    lesion_fx = {lid: rng.normal(0, noise) for lid in set(truth.lesion_id)}
    sign = np.where(truth.cls == "adenoma", 1.0, -1.0)
    q = 1 / (1 + np.exp(-(sign * 1.5 + rng.normal(0, noise, n) + [lesion_fx[i] for i in truth.lesion_id])))
    cls = np.stack([1 - q, q], 1)
    if NO_LESION not in classes:
        return cls
    pres = 1 / (1 + np.exp(-(np.where(truth.visible, 1.5, -1.5) + rng.normal(0, noise, n))))
    return np.concatenate([1 - pres[:, None], pres[:, None] * cls], 1)


def write_logs(folder, truths, probs_of, classes=CLASSES3):
    for stem, truth in truths.items():
        p = probs_of(stem, truth)
        skipped = ["NBI: not analysed" if not np.isfinite(r).all() else None for r in p]
        write_log(folder / f"{stem}.jsonl", Raw(p, np.full(len(p), "", dtype=object), skipped), truth, classes)


def dataset(tmp_path, videos=3, lesions=8, coverage=True):
    vdir = tmp_path / "videos"
    return vdir, {f"v{k}": read_truth(write_video(vdir, f"v{k}", lesions, coverage)) for k in range(videos)}


def run(tmp_path, vdir, a="A", b="B", resamples=200, extra=()):
    return compare(["--videos", str(vdir), "--a", f"a={tmp_path / a}", "--b", f"b={tmp_path / b}",
                    "--resamples", str(resamples), "--seed", "0", *extra])


def by_key(rep):
    return {r["key"]: r for r in rep["figures"]}


def test_identical_students_differ_by_zero(tmp_path):
    vdir, truths = dataset(tmp_path)
    rng = np.random.default_rng(0)
    write_logs(tmp_path / "A", truths, lambda s, t: scores(t, 1.5, rng))
    shutil.copytree(tmp_path / "A", tmp_path / "B")
    rep = run(tmp_path, vdir)
    figs = by_key(rep)
    assert set(figs) == {"auc_class_close", "auc_class_lesion_frames", "auc_presence", "lesion_majority_close"}
    for r in figs.values():
        assert r["a"] == r["b"] and r["diff"] == 0.0 and r["ci95"] == [0.0, 0.0], r
    assert figs["auc_presence"]["n_lesions"] == 24 and figs["auc_presence"]["n_no_lesion_groups"] == 3
    assert figs["auc_class_close"]["n_lesions"] == 24 and figs["auc_class_close"]["n_no_lesion_groups"] == 0
    assert figs["lesion_majority_close"]["n_rows"] == 24    # equal ids in two videos are two lesions
    assert rep["frames"]["skipped_either"] == 0 and rep["videos_without_coverage"] == []


def test_better_student_gets_an_interval_above_zero(tmp_path):
    vdir, truths = dataset(tmp_path, videos=4, lesions=10)
    rng = np.random.default_rng(1)
    write_logs(tmp_path / "A", truths, lambda s, t: scores(t, 3.0, rng))
    write_logs(tmp_path / "B", truths, lambda s, t: scores(t, 0.5, rng))
    figs = by_key(run(tmp_path, vdir, resamples=300))
    for key in ("auc_class_close", "auc_class_lesion_frames", "auc_presence"):
        r = figs[key]
        assert r["b"] > r["a"] and r["ci95"][0] > 0, r
        assert r["ci95"][0] <= r["diff"] <= r["ci95"][1]
    assert figs["lesion_majority_close"]["diff"] > 0
    # the same seed gives the same intervals
    assert by_key(run(tmp_path, vdir, resamples=300))["auc_class_close"]["ci95"] == figs["auc_class_close"]["ci95"]


def test_null_probs_are_skipped_for_both_students(tmp_path):
    vdir, truths = dataset(tmp_path)
    rng = np.random.default_rng(2)
    base = {s: scores(t, 1.5, rng) for s, t in truths.items()}
    null = {s: np.arange(len(t)) % 5 == 0 for s, t in truths.items()}

    def a_wrong_there(s, t):      # A reads those frames, backwards; B logs them null
        p = base[s].copy()
        p[null[s]] = p[null[s]][:, [0, 2, 1]]
        return p

    def b_null_there(s, t):
        p = base[s].copy()
        p[null[s]] = np.nan
        return p

    write_logs(tmp_path / "A", truths, a_wrong_there)
    write_logs(tmp_path / "B", truths, b_null_there)
    rep = run(tmp_path, vdir)
    n_null = sum(int(m.sum()) for m in null.values())
    assert rep["frames"]["not_analysed_a"] == 0 and rep["frames"]["not_analysed_b"] == n_null
    assert rep["frames"]["skipped_either"] == n_null
    for r in rep["figures"]:      # what A got wrong on B's null frames does not count
        assert r["diff"] == 0.0 and r["ci95"] == [0.0, 0.0], r
    assert f"skipped for both students: {n_null}" in markdown(rep)


def test_report_files_old_truth_and_two_class_students(tmp_path):
    vdir, truths = dataset(tmp_path, coverage=False)
    rng = np.random.default_rng(3)
    write_logs(tmp_path / "A", truths, lambda s, t: scores(t, 2.0, rng, CLASSES2), CLASSES2)
    write_logs(tmp_path / "B", truths, lambda s, t: scores(t, 1.0, rng, CLASSES2), CLASSES2)
    argv = ["--videos", str(vdir), "--a", f"old={tmp_path / 'A'}", "--b", f"new={tmp_path / 'B'}",
            "--resamples", "100", "--out", str(tmp_path / "cmp.md"), "--json", str(tmp_path / "cmp.json")]
    assert main(argv) == 0
    rep = json.loads((tmp_path / "cmp.json").read_text())
    figs = by_key(rep)
    assert "auc_presence" not in figs and rep["presence"]
    assert figs["auc_class_close"]["a"] == figs["auc_class_lesion_frames"]["a"]   # no coverage: all lesion frames
    assert len(rep["videos_without_coverage"]) == 3
    md = (tmp_path / "cmp.md").read_text()
    assert "python -m benchmarks.video_compare --videos" in md and "Resampling unit: lesion" in md
    assert "| figure | A: old | B: new | B - A [95% CI] | n units |" in md and "24 lesions" in md
    assert "No coverage in the truth of" in md and "skipped for both students: 0" in md


@pytest.mark.parametrize("case", ["no_videos_dir", "no_preds_dir", "other_videos", "other_classes", "bad_side"])
def test_bad_input_is_a_one_line_error(tmp_path, capsys, case):
    vdir, truths = dataset(tmp_path, videos=2, lesions=3)
    rng = np.random.default_rng(4)
    write_logs(tmp_path / "A", truths, lambda s, t: scores(t, 1.0, rng))
    write_logs(tmp_path / "B", truths, lambda s, t: scores(t, 1.0, rng))
    a, b = f"a={tmp_path / 'A'}", f"b={tmp_path / 'B'}"
    if case == "no_videos_dir":
        vdir = tmp_path / "nowhere"
    elif case == "no_preds_dir":
        b = f"b={tmp_path / 'nowhere'}"
    elif case == "other_videos":
        (tmp_path / "B" / "v1.jsonl").rename(tmp_path / "B" / "v7.jsonl")
    elif case == "other_classes":
        other = [NO_LESION, "hyperplastic", "sessile_serrated"]
        write_logs(tmp_path / "B", truths, lambda s, t: scores(t, 1.0, rng), other)
    else:
        b = str(tmp_path / "B")
    assert main(["--videos", str(vdir), "--a", a, "--b", b, "--resamples", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert {"no_videos_dir": "nowhere", "no_preds_dir": "nowhere", "other_videos": "v1.jsonl",
            "other_classes": "lesion classes differ", "bad_side": "LABEL=PREDS_DIR"}[case] in err


def test_a_missing_flag_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main([])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("video_compare: error:") and err.count("\n") == 1

"""benchmarks.first_call_compare on two hand-made report.json files (2 videos, 6 lesions)."""
from __future__ import annotations

import json
import math

import pytest

from benchmarks.first_call_compare import compare, main

# (video, lesion_id, class, close_view, evidence)
LESIONS = [("v1.mp4", "a", "adenoma", True, 0.9), ("v1.mp4", "b", "hyperplastic", True, 0.2),
           ("v1.mp4", "c", "adenoma", False, 0.5), ("v2.mp4", "d", "hyperplastic", True, 0.7),
           ("v2.mp4", "e", "adenoma", True, 0.1), ("v2.mp4", "f", "adenoma", True, 0.6)]
# per lesion: (first call, time from close view to a right call)
CALLS_A = [("adenoma", 1.0), (None, None), ("adenoma", None), ("adenoma", None), (None, None), ("adenoma", 2.0)]
CALLS_B = [("adenoma", 0.5), ("hyperplastic", 1.0), (None, None), ("hyperplastic", 0.5), ("adenoma", 3.0),
           ("hyperplastic", None)]
OTHER = [(None, None)] * 6   # the second setting: never calls


def tracks(calls, lesions=LESIONS):
    return [{"lesion_id": lid, "class": cls, "first_call": call, "close_view": close, "evidence": ev,
             "peak_coverage": 0.3, "time_close_to_correct_s": t, "_video": v}
            for (v, lid, cls, close, ev), (call, t) in zip(lesions, calls)]


def write_report(folder, calls, median, lesions=LESIONS, settings=("own", "quiet")):
    videos = {}
    for s, c in zip(settings, (calls, OTHER)):
        for t in tracks(c, lesions):
            video = videos.setdefault(t.pop("_video"), {"lesion_tracks": {}})
            video["lesion_tracks"].setdefault(s, []).append(t)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps({"settings": list(settings), "videos": videos, "synthetic": True,
                                                    "evidence_split": {"median": median, "tertile_edges": []}}))
    return folder


@pytest.fixture
def dirs(tmp_path):
    # B's own median would put every close-view lesion in the upper half; A's (0.65) keeps a and d
    return write_report(tmp_path / "a", CALLS_A, 0.65), write_report(tmp_path / "b", CALLS_B, 0.05)


def figures(a, b, *extra):
    rep = compare(["--a", f"A={a}", "--b", f"B={b}", "--resamples", "300", *extra])
    return rep, {r["key"]: r for r in rep["figures"]}


def test_point_values_and_intervals(dirs):
    rep, f = figures(*dirs)
    assert rep["lesions"] == 6 and rep["a"]["setting"] == "own" and rep["b"]["setting"] == "own"
    right, upper, called, time = (f[k] for k in ("close_first_call_correct", "close_first_call_correct_upper_evidence",
                                                  "close_called", "time_close_to_correct_median_s"))
    assert (right["a"], right["b"], right["n_lesions"]) == (pytest.approx(0.4), pytest.approx(0.8), 5)
    assert (called["a"], called["b"], called["n_lesions"]) == (pytest.approx(0.6), pytest.approx(1.0), 5)
    # A: over half never right -> no median; B: 0.5, 0.5, 1, 3, inf -> 1.0
    assert math.isnan(time["a"]) and time["b"] == pytest.approx(1.0) and math.isnan(time["diff"])
    for r in (right, upper, called):   # B is right (called) on strictly more lesions
        assert r["diff"] == pytest.approx(r["b"] - r["a"]) and r["diff"] > 0
        lo, hi = r["ci95"]
        assert lo <= r["diff"] <= hi


def test_upper_evidence_uses_a_median(dirs):
    rep, f = figures(*dirs)
    upper = f["close_first_call_correct_upper_evidence"]
    assert rep["evidence_median"] == 0.65
    assert (upper["n_lesions"], upper["a"], upper["b"]) == (2, pytest.approx(0.5), pytest.approx(1.0))
    # swapped, B's report (0.05) is A: every close-view lesion is in the upper half
    _, f = figures(dirs[1], dirs[0])
    assert f["close_first_call_correct_upper_evidence"]["n_lesions"] == 5


def test_median_time_difference_and_setting_choice(dirs):
    b = dirs[1]
    _, f = figures(b, b, "--setting-b", "quiet")
    time, right = f["time_close_to_correct_median_s"], f["close_first_call_correct"]
    assert time["a"] == pytest.approx(1.0) and math.isnan(time["b"])
    assert right["b"] == 0 and right["diff"] == pytest.approx(-0.8) and right["ci95"][1] < 0
    _, f = figures(b, b)   # the same student twice: no difference in any draw
    assert f["time_close_to_correct_median_s"]["diff"] == 0
    assert f["time_close_to_correct_median_s"]["ci95"] == [0, 0]


def test_seeded_and_outputs(dirs, tmp_path):
    a, b = dirs
    assert figures(a, b, "--seed", "3")[0] == figures(a, b, "--seed", "3")[0]
    md, js = tmp_path / "o" / "c.md", tmp_path / "o" / "c.json"
    assert main(["--a", f"A={a}", "--b", f"B={b}", "--resamples", "50", "--out", str(md), "--json", str(js)]) == 0
    text = md.read_text()
    assert "SYNTHETIC" in text and "| figure | A: A | B: B | B - A [95% CI] | n lesions |" in text
    assert "median 0.650 from A's report.json" in text and "B's report has 0.050, not used" in text
    assert json.loads(js.read_text())["figures"][3]["a"] is None   # NaN -> null


@pytest.mark.parametrize("case", ["missing", "setting", "videos", "ids", "spec", "argparse"])
def test_errors_are_one_line(dirs, tmp_path, capsys, case):
    a, b = dirs
    moved = [("v3.mp4" if v == "v2.mp4" else v, *rest) for v, *rest in LESIONS]
    renamed = [(v, "z" if lid == "f" else lid, *rest) for v, lid, *rest in LESIONS]
    argv = {"missing": ["--a", f"A={a}", "--b", f"B={tmp_path / 'nowhere'}"],
            "setting": ["--a", f"A={a}", "--b", f"B={b}", "--setting-b", "nope"],
            "videos": ["--a", f"A={a}", "--b", f"B={write_report(tmp_path / 'c', CALLS_B, 0.5, moved)}"],
            "ids": ["--a", f"A={a}", "--b", f"B={write_report(tmp_path / 'd', CALLS_B, 0.5, renamed)}"],
            "spec": ["--a", str(a), "--b", f"B={b}"],
            "argparse": ["--a", f"A={a}"]}[case]
    try:
        rc = main(argv)
    except SystemExit as e:   # argparse's own errors
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("first_call_compare: error: ") and err.count("\n") == 1
    assert {"missing": "no such report", "setting": "no setting 'nope'", "videos": "different videos",
            "ids": "different lesions", "spec": "LABEL=REPORT_DIR", "argparse": "required: --b"}[case] in err


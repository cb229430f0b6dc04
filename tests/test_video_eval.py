"""Video-level evaluation: metrics on hand-made truth, and the whole command on a real video.

The end-to-end video is synthetic: toy lesion pictures (engine_fixtures) held for runs of
frames, H.264-encoded with PyAV, with a truth CSV in the contract's format.
"""
from __future__ import annotations

import csv
import json
from fractions import Fraction

import av
import numpy as np
import pytest
from engine_fixtures import shared_student, toy_images

from stream.alerts import AlertConfig, AlertMachine
from stream.evaluate import main, split_setting
from stream.video_metrics import Truth, lesion_segments, outcome, read_truth, runs, summarise

CLASSES = ["hyperplastic", "adenoma"]


def make_truth(spec):
    """spec: list of (n_frames, lesion_id or '', class or '') runs at 10 fps."""
    ids, cls = [], []
    for n, lid, c in spec:
        ids += [lid] * n
        cls += [c] * n
    t = len(ids)
    return Truth(np.arange(t), np.arange(t) / 10.0, np.array([bool(i) for i in ids]),
                 np.array(ids, dtype=object), np.array(cls, dtype=object))


def test_runs_and_segments():
    assert runs(np.array([0, 1, 1, 0, 1], bool)) == [(1, 3), (4, 5)]
    assert runs(np.zeros(3, bool)) == []
    t = make_truth([(2, "", ""), (3, "a", "adenoma"), (2, "b", "hyperplastic"), (1, "", ""), (2, "a", "adenoma")])
    assert lesion_segments(t) == [("a", "adenoma", 2, 5), ("b", "hyperplastic", 5, 7), ("a", "adenoma", 8, 10)]


def test_metrics_on_hand_made_sequence():
    # 6 s at 10 fps: nothing, adenoma lesion A, nothing, hyperplastic lesion B, nothing
    truth = make_truth([(10, "", ""), (20, "A", "adenoma"), (10, "", ""), (10, "B", "hyperplastic"), (10, "", "")])
    p = np.full(60, 0.45)   # "uncertain" between lesions
    p[14:30] = 0.9          # A looks like an adenoma from frame 14 (0.4 s after it appears)
    p[3:6] = 0.9            # a false alarm episode before A (3 frames)
    p[40:50] = 0.1          # B looks hyperplastic ...
    p[45:47] = 0.9          # ... but for a 2-frame blip: withheld by min_frames=3
    probs = np.stack([1 - p, p], 1)
    cfg = AlertConfig(class_names=tuple(CLASSES), threshold=0.7, hysteresis=0.1, min_frames=3)
    states = AlertMachine(cfg).run(probs, truth.pts)
    o = outcome("v", truth, truth.pts, probs, probs, states, CLASSES, cfg.alert_indices)
    m = summarise([o])
    assert o.false_alarms == 1                                  # the episode at frames 5 (3+2)..6
    assert m["false_alarms_per_min"] == pytest.approx(1 / (60 / 10 / 60))
    assert m["lesions"] == 2 and m["positive_lesions"] == 1 and m["lesion_sensitivity"] == 1.0
    a, b = o.lesions
    assert a["time_to_correct_s"] == pytest.approx((16 - 10) / 10)   # confirmed at frame 14 + 2
    assert a["first_call"] == "adenoma"
    assert b["first_call"] == "hyperplastic" and b["time_to_correct_s"] == pytest.approx(0.2)
    assert m["lesion_first_call_correct"] == 1.0
    assert m["auc_raw"] > 0.8 and m["auc_lesion_frames_raw"] > 0.8
    alert = o.alert
    y = truth.visible & (truth.cls == "adenoma")
    assert m["sensitivity"] == pytest.approx(alert[y].mean())
    assert m["specificity"] == pytest.approx((~alert[~y]).mean())
    pooled = summarise([o, o])
    assert pooled["false_alarms"] == 2 and pooled["lesions"] == 4
    assert pooled["false_alarms_per_min"] == pytest.approx(m["false_alarms_per_min"])


def test_missing_frames_are_excluded():
    truth = make_truth([(5, "", ""), (5, "A", "adenoma")])
    probs = np.tile([[0.2, 0.8]], (10, 1)).astype(float)
    probs[[1, 7]] = np.nan
    states = [None if np.isnan(p).any() else s for p, s in
              zip(probs, AlertMachine(AlertConfig(min_frames=1)).run(np.nan_to_num(probs)))]
    m = summarise([outcome("v", truth, truth.pts, probs, probs, states, CLASSES, {1})])
    assert m["frames"] == 8


def test_setting_specs():
    assert split_setting("ema:alpha=0.3,min_frames=6,threshold=0.8") == ("ema", {"alpha": 0.3},
                                                                          {"min_frames": 6, "threshold": 0.8})
    with pytest.raises(ValueError, match="no parameter"):
        split_setting("hmm:alpha=0.3")


# -- end to end ----------------------------------------------------------------------------
RUNS = [(12, "", ""), (24, "L1", "adenoma"), (10, "", ""), (24, "L2", "hyperplastic"), (10, "", ""),
        (20, "L3", "adenoma")]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    imgs, labels = toy_images(400, seed=5)
    by_class = {0: imgs[labels == 0], 1: imgs[labels == 1]}
    plain = np.full_like(imgs[0], 140)
    path = root / "toy_procedure.mp4"
    rows, f = [], 0
    with av.open(str(path), "w") as box:
        s = box.add_stream("libx264", rate=Fraction(30, 1))
        s.width, s.height, s.pix_fmt = 128, 128, "yuv420p"
        s.options = {"crf": "12", "g": "30"}
        for n, lid, cls in RUNS:
            for j in range(n):
                img = by_class[CLASSES.index(cls)][j] if lid else plain
                rgb = np.ascontiguousarray(img.transpose(1, 2, 0).repeat(2, 0).repeat(2, 1))
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts, frame.time_base = f, Fraction(1, 30)
                box.mux(s.encode(frame))
                rows.append([f, round(f / 30, 6), int(bool(lid)), lid, cls, *([0, 0, 127, 127] if lid else [""] * 4)])
                f += 1
        box.mux(s.encode())
    with open(root / "toy_procedure.truth.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["frame", "pts", "lesion_visible", "lesion_id", "class", "x0", "y0", "x1", "y1"])
        w.writerows(rows)
    return path


def test_evaluate_command_end_to_end(video, tmp_path):
    student = shared_student()
    out, cache = tmp_path / "eval", tmp_path / "preds"
    args = [str(video.parent), "--model", str(student), "--engine", "torch", "--device", "cpu",
            "--setting", "none", "--setting", "ema:alpha=0.3", "--setting", "hmm:stay=0.95,min_frames=5",
            "--predictions-dir", str(cache), "--out", str(out), "-q"]
    assert main(args) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["settings"] == ["none", "ema:alpha=0.3", "hmm:stay=0.95,min_frames=5"]
    v = rep["videos"]["toy_procedure.mp4"]
    assert v["frames"] == v["analysed"] == sum(n for n, _, _ in RUNS)
    m = rep["pooled"]["none"]
    assert m["lesions"] == 3 and m["positive_lesions"] == 2
    # the toy student separates its two lesion kinds on real decoded, preprocessed video frames
    assert m["auc_lesion_frames_raw"] > 0.75
    for s in rep["settings"]:
        assert set(rep["pooled"][s]) >= {"sensitivity", "specificity", "false_alarms_per_min",
                                         "time_to_correct_call_median_s", "lesion_sensitivity"}
    # smoothing never changes the raw AUC, only what is done with it
    assert rep["pooled"]["ema:alpha=0.3"]["auc_raw"] == m["auc_raw"]
    png = out / "timelines" / "toy_procedure.png"
    assert png.is_file() and png.stat().st_size > 10_000
    md = (out / "report.md").read_text()
    assert "SYNTHETIC" in md and "`hmm:stay=0.95,min_frames=5`" in md and "false alarms/min" in md
    # second pass reads the cached raw probabilities (no engine) and scores identically
    log = cache / "toy_procedure.jsonl"
    assert log.is_file() and len(log.read_text().splitlines()) == v["frames"]
    assert main([*args[:-3], "--out", str(tmp_path / "again"), "-q", "--no-plots"]) == 0
    rep2 = json.loads((tmp_path / "again" / "report.json").read_text())
    assert rep2["engine"] == "cached predictions"
    for s in rep["settings"]:
        for k, val in rep["pooled"][s].items():
            assert rep2["pooled"][s][k] == pytest.approx(val, abs=1e-5), (s, k)
    # the cache belongs to this model: another model's evaluation refuses it
    marker = cache / "model.json"
    marker.write_text(json.dumps({"model": "other", "weights_hash": "0" * 16}))
    assert main([*args[:-3], "--out", str(tmp_path / "third"), "-q", "--no-plots"]) == 2


def test_evaluate_errors(tmp_path, capsys):
    assert main([str(tmp_path / "nope.mp4")]) == 2
    assert "no such video" in capsys.readouterr().err
    (tmp_path / "v.mp4").write_bytes(b"")
    assert main([str(tmp_path / "v.mp4"), "--model", str(shared_student())]) == 2
    assert "truth.csv" in capsys.readouterr().err
    assert main([str(tmp_path), "--setting", "kalman"]) == 2
    assert "unknown smoothing" in capsys.readouterr().err


def test_read_truth_rejects_bad_csv(tmp_path):
    p = tmp_path / "x.truth.csv"
    p.write_text("frame,pts\n0,0\n")
    with pytest.raises(ValueError, match="missing column"):
        read_truth(p)

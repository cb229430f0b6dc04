"""Video-level evaluation: metrics on hand-made truth, and the whole command on a real video.

Metric tests run on small seeded arrays (no video). The end-to-end video is synthetic: toy
lesion pictures (engine_fixtures) held for runs of frames, H.264-encoded with PyAV, with a truth
CSV in the older format (no modality/coverage/evidence columns), scored by a two-class student.
"""
from __future__ import annotations

import csv
import json
from fractions import Fraction

import av
import numpy as np
import pytest
from engine_fixtures import shared_student, toy_images

from pagkd_core.outputs import NO_LESION
from stream.alerts import NBI_NOT_ANALYSED, AlertConfig, AlertMachine
from stream.video_eval import find_videos, main, split_setting
from stream.video_infer import Raw, read_log, write_log
from stream.video_metrics import Truth, lesion_segments, outcome, read_truth, runs, summarise
from stream.video_metrics_breakdown import (
    CONTRAST_BINS,
    COVERAGE_BINS,
    bin_labels,
    bin_of,
    by_contrast,
    by_coverage,
    by_onset_contrast,
    evidence_cuts,
    figures,
)
from stream.video_metrics_modality import modality_summary, nbi_stretch_switches
from stream.video_metrics_report import VIDEO_TARGETS, check_targets

CLASSES = ["hyperplastic", "adenoma"]
CLASSES3 = [NO_LESION, "hyperplastic", "adenoma"]


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


# -- the issue-14 figures on hand-made arrays ------------------------------------------------
class State:
    """What the metrics read of an AlertState."""

    def __init__(self, state: str, alert: bool):
        self.state, self.alert = state, alert


def states_of(names, alert_names=("adenoma",)):
    return [None if n is None else State(n, n in alert_names) for n in names]


def make_truth2(spec, fps=10):
    """spec: runs of (n_frames, lesion_id or '', class or '', coverage, modality, evidence)."""
    cols = [[], [], [], [], []]
    for n, lid, c, cov, mod, ev in spec:
        for col, v in zip(cols, (lid, c, cov, mod, ev)):
            col += [v] * n
    ids, cls, cov, mod, ev = cols
    t = len(ids)
    return Truth(np.arange(t), np.arange(t) / fps, np.array([bool(i) for i in ids]), np.array(ids, dtype=object),
                 np.array(cls, dtype=object), np.array(mod, dtype=object), np.array(cov, float), np.array(ev, float))


def test_no_lesion_output_through_the_metrics():
    nan = np.nan
    truth = make_truth2([(30, "", "", 0, "WLI", nan), (20, "A", "adenoma", 0.1, "WLI", 0.8),
                         (30, "", "", 0, "WLI", nan), (20, "B", "hyperplastic", 0.1, "WLI", 0.3),
                         (10, "", "", 0, "WLI", nan)])
    rng = np.random.default_rng(0)
    bg = np.full(110, 0.9) + rng.uniform(-0.05, 0.05, 110)   # P(no_lesion)
    share = rng.uniform(0.3, 0.7, 110)                        # adenoma share of the lesion classes
    bg[30:50], share[30:50] = 0.8, 0.6    # A: a faint lesion, adenoma-ish
    bg[80:100], share[80:100] = 0.0, 0.4  # B: a clear lesion, hyperplastic-ish
    probs = np.stack([bg, (1 - bg) * (1 - share), (1 - bg) * share], 1)
    names = ["no lesion"] * 110
    names[5:9] = ["adenoma"] * 4          # an alert episode with no lesion anywhere: a false alarm
    names[28:50] = ["adenoma"] * 22       # called early, running into lesion A: not a no-lesion false alarm
    names[60:63] = ["uncertain"] * 3
    names[80:100] = ["hyperplastic"] * 20
    cfg = AlertConfig(class_names=tuple(CLASSES3))
    assert cfg.alert_indices == {2}           # the background raises nothing, nor does NICE 1
    o = outcome("v", truth, truth.pts, probs, probs, states_of(names), CLASSES3, cfg.alert_indices)
    m = summarise([o])
    assert m["auc_presence_raw"] == m["auc_presence"] == 1.0     # score 1 - P(no_lesion)
    # P(adenoma) alone mixes presence into the class question (A's is lower than B's) ...
    assert m["auc_lesion_frames_raw"] == 0.0
    # ... renormalised over the lesion classes it separates them
    assert m["auc_class_close_raw"] == 1.0 and m["close_frames"] == 40
    assert m["false_alarms_no_lesion"] == 1 and m["no_lesion_minutes"] == pytest.approx(7 / 60)
    assert m["false_alarms_no_lesion_per_min"] == pytest.approx(60 / 7)
    assert m["frac_uncertain_no_lesion"] == pytest.approx(3 / 70)
    assert m["frac_call_no_lesion"] == pytest.approx(6 / 70)
    # a two-class student has no presence score
    two = np.stack([1 - share, share], 1)
    o2 = outcome("v", truth, truth.pts, two, two, states_of(names), CLASSES, {1})
    assert summarise([o2])["auc_presence"] is None


def close_view_case(contrast_per_coverage: float | None = None):
    """Five lesions, one of them on NBI frames. ``contrast_per_coverage``: give every lesion frame
    a contrast (grey levels) of its coverage times this (else the truth has none)."""
    nan = np.nan
    truth = make_truth2([
        (10, "A", "adenoma", 0.01, "WLI", 0.9), (15, "A", "adenoma", 0.08, "WLI", 0.9),  # far, then close 1.5 s
        (5, "", "", 0, "WLI", nan),
        (8, "B", "hyperplastic", 0.10, "WLI", 0.7),      # close for 0.8 s only: not a close-view lesion
        (5, "", "", 0, "WLI", nan),
        (12, "C", "adenoma", 0.20, "NBI", 0.6),          # close, but on NBI frames
        (5, "", "", 0, "WLI", nan),
        (10, "D", "hyperplastic", 0.06, "WLI", 0.2),     # close for exactly 1 s
        (5, "", "", 0, "WLI", nan),
        (10, "E", "adenoma", 0.30, "WLI", 0.5),          # close, never called
    ])
    if contrast_per_coverage is not None:
        truth.contrast = np.where(truth.visible, truth.coverage * contrast_per_coverage, np.nan)
    names = (["no call"] * 5 + ["hyperplastic"] * 8 + ["adenoma"] * 12 + ["no call"] * 5 + ["hyperplastic"] * 8
             + ["no call"] * 5 + [None] * 12 + ["no call"] * 5 + ["hyperplastic"] * 10 + ["no call"] * 15)
    probs = np.full((len(truth), 2), 0.5)
    probs[~truth.modality.astype(str).__eq__("WLI")] = np.nan
    skipped = [NBI_NOT_ANALYSED if n is None else None for n in names]
    return outcome("v", truth, truth.pts, probs, probs, states_of(names), CLASSES, {1}, skipped_states=skipped)


def test_close_view_first_call_and_time_to_correct():
    o = close_view_case()
    les = {x["lesion_id"]: x for x in o.tracks}
    assert [les[k]["close_view"] for k in "ABCDE"] == [True, False, False, True, True]
    a = les["A"]
    assert a["first_call"] == "hyperplastic"             # called wrong while still far: a wrong first call
    assert a["time_close_to_correct_s"] == pytest.approx(0.3)
    assert les["D"]["time_close_to_correct_s"] == 0.0 and les["E"]["time_close_to_correct_s"] is None
    m = summarise([o])
    assert m["close_view_lesions"] == 3
    assert m["close_first_call_correct"] == pytest.approx(1 / 3)   # D only
    assert m["evidence_median"] == pytest.approx(0.5)              # of A 0.9, D 0.2, E 0.5
    assert m["close_lesions_upper_evidence"] == 2 and m["close_first_call_correct_upper_evidence"] == 0.0
    assert m["time_close_to_correct_median_s"] == pytest.approx(0.3)  # of 0.3, 0, never
    assert m["close_never_correct"] == 1
    # NBI frames: counted, not scored; their skipped state is kept
    assert m["frames_nbi"] == 12 and m["frames_not_analysed"] == 12 and m["frames"] == len(o.y) - 12
    assert (o.states[o.wli == 0] == NBI_NOT_ANALYSED).all()
    # a pooled evidence split overrides the video's own
    assert summarise([o], ev_median=0.95)["close_lesions_upper_evidence"] == 0


def test_median_time_counts_never_called_lesions():
    o = close_view_case()
    for les in o.tracks:
        if les["lesion_id"] == "D":
            les["time_close_to_correct_s"] = None   # 2 of 3 close-view lesions never called right
    assert summarise([o])["time_close_to_correct_median_s"] is None


def test_a_lesion_that_leaves_the_view_is_one_lesion():
    nan = np.nan
    truth = make_truth2([(10, "A", "adenoma", 0.01, "WLI", 0.6), (5, "", "", 0, "WLI", nan),   # far, lost ...
                         (15, "A", "adenoma", 0.10, "WLI", 0.6)])                             # ... back, close
    names = ["hyperplastic"] * 10 + ["no call"] * 5 + ["no call"] * 4 + ["adenoma"] * 11
    probs = np.full((30, 2), 0.5)
    o = outcome("v", truth, truth.pts, probs, probs, states_of(names), CLASSES, {1})
    assert len(o.lesions) == 2 and len(o.tracks) == 1                 # two runs in view, one lesion
    (t,) = o.tracks
    assert t["runs"] == 2 and t["first_call"] == "hyperplastic"        # its first call came in the far run
    assert t["close_view"] and t["time_close_to_correct_s"] == pytest.approx(0.4)
    m = summarise([o])
    assert m["close_view_lesions"] == 1 and m["close_first_call_correct"] == 0.0


def test_breakdown_binning():
    assert bin_of([0, 0.01, 0.02, 0.049, 0.05, 0.2, np.nan, None, -1], COVERAGE_BINS).tolist() == \
        [0, 0, 1, 1, 2, 3, -1, -1, -1]
    assert bin_of([0.0, 0.5, 1.0], [0.0, 0.5, 1.0]).tolist() == [0, 1, 1]   # the last bin is closed
    assert bin_labels(COVERAGE_BINS, pct=True) == ["<2%", "2%-5%", "5%-15%", ">=15%"]
    lesions = [{"close_view": True, "evidence": e} for e in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)]
    lesions.append({"close_view": False, "evidence": 0.99})   # not a close-view lesion: not in the split
    assert evidence_cuts(lesions) == pytest.approx([0.0, 0.3, 0.5, 1.0])
    assert evidence_cuts([{"close_view": True, "evidence": None}]) is None
    rows = by_coverage([close_view_case()])
    assert [r["bin"] for r in rows] == ["<2%", "2%-5%", "5%-15%", ">=15%"]
    assert [r["frames"] for r in rows] == [10, 0, 15 + 8 + 10, 10]      # WLI lesion frames; C is NBI
    assert [r["lesions"] for r in rows] == [0, 0, 3, 2]                 # by peak coverage: A B D | C E
    f = figures([close_view_case()], None, [0.0, 0.4, 0.8, 1.0])
    ev = f["by_evidence"]
    assert [r["lesions"] for r in ev] == [1, 1, 1]                       # D 0.2 | E 0.5 | A 0.9
    assert [r["first_call_correct"] for r in ev] == [1.0, 0.0, 0.0]
    assert f["metrics"]["modality_accuracy"] is None                     # no modality in this "log"


def test_breakdown_by_contrast_bins_lesion_frames_and_lesions_by_their_peak():
    assert bin_labels(CONTRAST_BINS, open_scale=True) == ["<2", "2-4", "4-8", "8-16", ">=16"]
    rows = by_contrast([close_view_case(contrast_per_coverage=100)])
    # contrast: A 1 far then 8 close, B 10, C 20 (NBI frames: not scored), D 6, E 30
    assert [r["frames"] for r in rows] == [10, 0, 10, 15 + 8, 10]
    assert [r["lesions"] for r in rows] == [0, 0, 1, 2, 2]            # by peak: D | A B | C E
    assert [r["first_call_correct"] for r in rows] == [None, None, 1.0, 0.5, 0.0]   # A wrong, B right
    assert all(r["frames"] == 0 for r in by_contrast([close_view_case()]))   # no contrast in the truth
    # close-view lesions by their contrast over the first second of close view: A 8 (its close
    # run), D 6, E 30; A's right call came 0.3 s into close view, D's at once, E's never
    onset = by_onset_contrast([close_view_case(contrast_per_coverage=100)])
    assert [r["lesions"] for r in onset] == [0, 0, 1, 1, 1]
    assert [r["time_close_to_correct_median_s"] for r in onset] == [None, None, 0.0, pytest.approx(0.3), None]


def test_old_truth_csv_and_logs(tmp_path):
    old = tmp_path / "old.truth.csv"
    old.write_text("frame,pts,lesion_visible,lesion_id,class,x0,y0,x1,y1\n0,0,0,,,,,,\n1,0.1,1,L,adenoma,1,1,5,5\n")
    t = read_truth(old)
    assert t.modality.tolist() == ["WLI", "WLI"] and np.isnan(t.coverage).all() and np.isnan(t.evidence).all()
    new = tmp_path / "new.truth.csv"
    new.write_text("frame,pts,lesion_visible,lesion_id,class,x0,y0,x1,y1,modality,coverage,wli_evidence\n"
                   "0,0,0,,,,,,,NBI,0,\n1,0.1,1,L,adenoma,1,1,5,5,WLI,0.12,0.7\n")
    t = read_truth(new)
    assert t.modality.tolist() == ["NBI", "WLI"] and t.coverage.tolist() == [0.0, 0.12]
    assert np.isnan(t.evidence[0]) and t.evidence[1] == 0.7
    assert len(t.head(1)) == 1 and t.head(1).modality.tolist() == ["NBI"]
    log = tmp_path / "v.jsonl"
    log.write_text(json.dumps({"frame": 0, "probs": [0.2, 0.8]}) + "\n"                       # old line
                   + json.dumps({"frame": 1, "probs": None, "state": NBI_NOT_ANALYSED, "modality": "NBI"}) + "\n"
                   + json.dumps({"frame": 2, "probs": [0.6, 0.4], "modality": "WLI"}) + "\n")
    raw = read_log(log, 4, 2)
    assert raw.analysed() == 2 and np.isnan(raw.probs[[1, 3]]).all()
    assert raw.modality.tolist() == ["", "NBI", "WLI", ""] and raw.skipped == [None, NBI_NOT_ANALYSED, None, None]
    truth = Truth(np.arange(4), np.arange(4) / 10, np.zeros(4, bool), np.full(4, "", object), np.full(4, "", object))
    write_log(tmp_path / "again.jsonl", raw, truth, CLASSES)
    again = read_log(tmp_path / "again.jsonl", 4, 2)
    assert np.array_equal(np.isnan(again.probs), np.isnan(raw.probs)) and again.skipped == raw.skipped
    assert again.modality.tolist() == raw.modality.tolist()
    assert Raw.empty(2, 3).probs.shape == (2, 3)


def test_modality_accuracy_and_switches():
    truth = np.array(list("WWWWWNNNNNNWWWWNNNWW"))
    pred = np.array(list("WWWWWWNWNNNNNWWWNNNW"), dtype=object)
    truth = np.where(truth == "W", "WLI", "NBI")
    pred = np.where(pred == "W", "WLI", "NBI").astype(object)
    assert nbi_stretch_switches(truth, pred) == [3, 1]    # flicker in the first, one clean (late) switch
    m = modality_summary([(truth, pred)])
    assert m["modality_accuracy"] == pytest.approx(14 / 20) and m["nbi_stretches"] == 2
    assert m["modality_switches_per_nbi_stretch_max"] == 3 and m["modality_switches_per_nbi_stretch_mean"] == 2.0
    assert m["modality_switches_total"] == 6
    gaps = pred.copy()
    gaps[[6, 7]] = ""                                   # frames the detector gave nothing for: last value holds
    assert nbi_stretch_switches(truth, gaps) == [1, 1]
    assert modality_summary([(truth, gaps)])["modality_frames"] == 18
    assert modality_summary([(truth, np.full(20, "", object))])["modality_accuracy"] is None   # an old log


def test_benchmark_tables_without_videos():
    from benchmarks import video as bv

    every = [*bv.HELD_OUT.values(), bv.QUICK]
    assert all(seed >= bv.HELDOUT_SEED for sets in every for vs in sets for seed in vs.seeds)
    first, second, both = bv.HELD_OUT["first"], bv.HELD_OUT["second"], bv.HELD_OUT["all"]
    for sets in (first, second):
        assert sum(len(vs.seeds) * vs.seconds for vs in sets) / 60 >= bv.MIN_MINUTES
        assert {vs.size for vs in sets} == {"1280x720", "1920x1080"}
    assert both == first + second
    seeds = [seed for vs in both for seed in vs.seeds]
    assert len(seeds) == len(set(seeds)) == 26                  # no video counted twice in the pool
    assert first[0].folder == "1280x720_60s_seeds1000-1005" and second[0].folder == "1280x720_60s_seeds1020-1031"
    assert bv.closeup_auc({"metrics": {"validation": {"auc": 0.76, "n": 36}}}) == (0.76, "validation auc, n=36")
    # the held-out test fold wins over validation, and the lesion-class AUC over the all-class one
    both = {"validation": {"auc": 0.7}, "test_pooled": {"auc": 0.8, "class_auc": 0.69, "n": 384}}
    assert bv.closeup_auc({"metrics": both}) == (0.69, "test_pooled class_auc, n=384")
    assert bv.closeup_auc({})[0] is None
    pooled = {"close_first_call_correct": 0.9, "auc_class_close": 0.74, "modality_accuracy": None}
    text = bv.target_table({"settings": ["none"], "pooled": {"none": pooled}}, (0.76, "validation, n=36"))
    assert "0.900 met" in text and "0.740 NOT met" in text and "0.020 met" in text   # 0.76 - 0.74 <= 0.03
    assert text.count("\n") == len(VIDEO_TARGETS) + 2                                # + close-up gap row
    rt = bv.runtime_table({"replay_720p30": {"speedup": 2.5, "pipeline_fps": 50, "naive_fps": 20},
                           "live_1080p30": {"how": "file", "p99_ms": 40.0, "lag_growth_ms": None}})
    assert "2.500 NOT met" in rt and "40.000 met" in rt and "not measured" in rt


def test_targets_check():
    rows = {r["key"]: r for r in check_targets({"close_first_call_correct": 0.9, "auc_presence": 0.5,
                                                "false_alarms_no_lesion_per_min": 0.5})}
    assert rows["close_first_call_correct"]["met"] is True and rows["auc_presence"]["met"] is False
    assert rows["false_alarms_no_lesion_per_min"]["met"] is True       # <= is inclusive
    assert rows["modality_accuracy"]["met"] is None and rows["modality_accuracy"]["target"] == ">= 0.99"


# -- end to end ----------------------------------------------------------------------------
RUNS = [(12, "", ""), (24, "L1", "adenoma"), (10, "", ""), (24, "L2", "hyperplastic"), (10, "", ""),
        (20, "L3", "adenoma")]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    imgs, labels = toy_images(400, seed=5)
    by_class = {0: imgs[labels == 0], 1: imgs[labels == 1]}
    plain = np.empty_like(imgs[0])   # lesion-free mucosa: pink, as in white light (grey would read as NBI)
    plain[:] = np.array([200, 120, 110], np.uint8)[:, None, None]
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
    assert "SYNTHETIC" in md and "`hmm:stay=0.95,min_frames=5`" in md and "presence AUC" in md
    # an old truth file and a two-class student: the figures that need more stay empty, nothing fails
    assert m["close_view_lesions"] == 0 and m["auc_class_close"] is None and m["auc_presence"] is None
    assert m["frames_nbi"] == 0 and m["frames_not_analysed"] == 0
    # a runtime with a modality detector logs it per frame (scored against "all WLI" here)
    assert m["modality_accuracy"] is None or m["modality_frames"] == v["frames"]
    assert rep["alert_config"]["alert_classes"] is None
    assert [r["key"] for r in rep["targets"]["none"]] == [t.key for t in VIDEO_TARGETS]
    # second pass reads the cached raw probabilities (no engine) and scores identically
    log = cache / "toy_procedure.jsonl"
    assert log.is_file() and len(log.read_text().splitlines()) == v["frames"]
    assert main([*args[:-3], "--out", str(tmp_path / "again"), "-q", "--no-plots"]) == 0
    rep2 = json.loads((tmp_path / "again" / "report.json").read_text())
    # no engine was built: the report names what the cache's first run asked for
    assert rep2["engine"] == "cached predictions (engine torch, device cpu, precision auto asked for)"
    for s in rep["settings"]:
        for k, val in rep["pooled"][s].items():
            assert rep2["pooled"][s][k] == pytest.approx(val, abs=1e-5), (s, k)
    # the cache belongs to this model run this way: another engine or precision refuses it, a
    # marker from before the engine was recorded is checked on the weights only
    marker = cache / "model.json"
    mine = json.loads(marker.read_text())
    assert {"weights_hash", "engine", "device", "precision", "int8_graphs"} <= set(mine)
    assert mine["engine"] == "torch"
    marker.write_text(json.dumps({**mine, "engine": "onnxruntime"}))
    assert main([*args[:-3], "--out", str(tmp_path / "other_engine"), "-q", "--no-plots"]) == 2
    marker.write_text(json.dumps({**mine, "precision": "int8", "int8_graphs": {"student.int8.onnx": "0" * 16}}))
    assert main([*args[:-3], "--out", str(tmp_path / "other_graph"), "-q", "--no-plots"]) == 2
    # ... and so does another set of views; a marker from before views were recorded read the whole field
    marker.write_text(json.dumps(mine))
    assert mine["views"] == ["whole"]
    assert main([*args[:-3], "--views", "whole,centre", "--out", str(tmp_path / "other_views"), "-q", "--no-plots"]) == 2
    marker.write_text(json.dumps({k: mine[k] for k in ("model", "weights_hash")}))
    assert main([*args[:-3], "--out", str(tmp_path / "old_marker"), "-q", "--no-plots"]) == 0
    marker.write_text(json.dumps({"model": "other", "weights_hash": "0" * 16}))
    assert main([*args[:-3], "--out", str(tmp_path / "third"), "-q", "--no-plots"]) == 2


def write_toy_video(path, frames, rows, header):
    """H.264 at 30 fps from (H, W, 3) uint8 pictures, and its truth CSV."""
    with av.open(str(path), "w") as box:
        s = box.add_stream("libx264", rate=Fraction(30, 1))
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        s.options = {"crf": "12", "g": "30"}
        for f, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts, frame.time_base = f, Fraction(1, 30)
            box.mux(s.encode(frame))
        box.mux(s.encode())
    with open(path.with_suffix(".truth.csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def test_evaluate_nbi_stretch_end_to_end(tmp_path):
    """A truth file with the new columns and an NBI stretch: the runtime's detector keeps those
    frames from the WLI student (no NBI model here), the report counts them and scores the detector."""
    imgs, labels = toy_images(60, seed=6)
    adenoma = [img.transpose(1, 2, 0).repeat(2, 0).repeat(2, 1) for img in imgs[labels == 1]]
    wli = np.empty((128, 128, 3), np.uint8)
    wli[:] = (200, 120, 110)                 # pink mucosa
    nbi = np.empty((128, 128, 3), np.uint8)
    nbi[:] = (60, 110, 120)                  # cyan/green-brown: how NBI shows the mucosa
    plan = [(20, "WLI", None), (36, "WLI", "adenoma"), (30, "NBI", None), (20, "WLI", None)]
    frames, rows = [], []
    for n, mod, cls in plan:
        for j in range(n):
            f = len(frames)
            frames.append(adenoma[j % len(adenoma)] if cls else (nbi if mod == "NBI" else wli))
            rows.append([f, round(f / 30, 6), int(bool(cls)), "L1" if cls else "", cls or "",
                         *([0, 0, 127, 127] if cls else [""] * 4), mod, 0.3 if cls else 0.0, 0.8 if cls else ""])
    header = ["frame", "pts", "lesion_visible", "lesion_id", "class", "x0", "y0", "x1", "y1", "modality",
              "coverage", "wli_evidence"]
    write_toy_video(tmp_path / "nbi_clip.mp4", frames, rows, header)
    out = tmp_path / "eval"
    assert main([str(tmp_path), "--model", str(shared_student()), "--engine", "torch", "--device", "cpu",
                 "--setting", "none", "--out", str(out), "-q", "--no-plots",
                 "--predictions-dir", str(tmp_path / "preds")]) == 0
    rep = json.loads((out / "report.json").read_text())
    m = rep["pooled"]["none"]
    assert m["frames_total"] == 106 and m["frames_nbi"] == 30
    assert m["frames_not_analysed"] >= 30 and m["frames"] == 106 - m["frames_not_analysed"]
    assert m["close_view_lesions"] == 1 and m["nbi_stretches"] == 1
    assert m["modality_accuracy"] > 0.9 and m["modality_switches_per_nbi_stretch_max"] == 1
    log = [json.loads(line) for line in (tmp_path / "preds" / "nbi_clip.jsonl").read_text().splitlines()]
    assert {r["state"] for r in log if r["probs"] is None} == {NBI_NOT_ANALYSED}


def test_evaluate_errors(tmp_path, capsys):
    assert main([str(tmp_path / "nope.mp4")]) == 2
    assert "no such video" in capsys.readouterr().err
    (tmp_path / "v.mp4").write_bytes(b"")
    assert main([str(tmp_path / "v.mp4"), "--model", str(shared_student())]) == 2
    assert "truth.csv" in capsys.readouterr().err
    assert main([str(tmp_path), "--setting", "kalman"]) == 2
    assert "unknown smoothing" in capsys.readouterr().err


def test_a_folder_gives_finished_videos_with_truth_only(tmp_path):
    """A clip still being rendered (``.partial``, pagkd_core.synth.video) has its truth beside it
    too, but is not a finished video; a video without truth is not scored."""
    for name in ("procedure_s1.mp4", "procedure_s1.truth.csv", "procedure_s2.partial.mp4",
                 "procedure_s2.partial.truth.csv", "no_truth.mp4", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [v.name for v in find_videos([str(tmp_path)])] == ["procedure_s1.mp4"]
    (tmp_path / "procedure_s1.mp4").unlink()
    with pytest.raises(FileNotFoundError, match="no videos"):
        find_videos([str(tmp_path)])


def test_read_truth_rejects_bad_csv(tmp_path):
    p = tmp_path / "x.truth.csv"
    p.write_text("frame,pts\n0,0\n")
    with pytest.raises(ValueError, match="missing column"):
        read_truth(p)

"""Smoothers and the alert state machine on hand-made probability sequences."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from stream.alerts import NO_CALL, UNCERTAIN, AlertConfig, AlertMachine
from stream.smoothing import build_smoother, list_smoothers, parse_spec


def seq(*p_adenoma):
    """Two-class frames from the adenoma probability."""
    return [np.array([1 - p, p]) for p in p_adenoma]


# -- smoothing ----------------------------------------------------------------------------
def test_ema_matches_recurrence():
    sm = build_smoother("ema", alpha=0.25)
    frames = seq(0.2, 1.0, 1.0, 0.0)
    out = [sm.update(p)[1] for p in frames]
    want, s = [], None
    for p in (0.2, 1.0, 1.0, 0.0):
        s = p if s is None else 0.25 * p + 0.75 * s
        want.append(s)
    assert np.allclose(out, want, atol=1e-6)


def test_window_mean_and_live_resize():
    sm = build_smoother("window", size=3)
    out = [sm.update(p)[1] for p in seq(0.0, 0.3, 0.6, 0.9)]
    assert np.allclose(out, [0.0, 0.15, 0.3, 0.6], atol=1e-6)
    sm.set_params(size=2)  # keeps the newest frames
    assert np.isclose(sm.update(np.array([0.0, 1.0]))[1], (0.9 + 1.0) / 2, atol=1e-6)


def test_hmm_is_sticky_and_recovers():
    sm = build_smoother("hmm", stay=0.95)
    steady = [sm.update(p)[1] for p in seq(*[0.9] * 20)]
    assert steady[-1] > 0.99
    blip = sm.update(np.array([0.8, 0.2]))[1]   # one contrary frame barely moves it
    assert blip > 0.7                             # raw 0.2, filtered still above a 0.7 threshold
    after = [sm.update(p)[1] for p in seq(*[0.1] * 10)]
    assert after[-1] < 0.05                       # a sustained change wins
    # without stickiness the filter is just the (normalised) input
    flat = build_smoother("hmm", stay=0.5)
    assert np.isclose(flat.update(np.array([0.7, 0.3]))[0], 0.7, atol=1e-5)
    assert np.isclose(flat.update(np.array([0.2, 0.8]))[0], 0.2, atol=1e-5)


def test_hmm_three_classes_sums_to_one():
    sm = build_smoother("hmm", stay=0.9, temperature=2.0)
    rng = np.random.default_rng(0)
    for p in rng.dirichlet([1, 1, 1], 50):
        out = sm.update(p)
        assert out.shape == (3,) and np.isclose(out.sum(), 1, atol=1e-5) and (out >= 0).all()


def test_none_and_run_reset():
    sm = build_smoother("none")
    frames = np.array(seq(0.1, 0.9))
    assert np.allclose(sm.run(frames), frames)
    ema = build_smoother("ema", alpha=0.5)
    assert np.allclose(ema.run(frames), ema.run(frames))  # run() starts from a fresh state


def test_smoother_errors_and_specs():
    assert set(list_smoothers()) == {"none", "ema", "window", "hmm"}
    with pytest.raises(ValueError, match="unknown smoothing"):
        build_smoother("kalman")
    with pytest.raises(ValueError, match="no parameter"):
        build_smoother("ema", beta=0.3)
    with pytest.raises(ValueError, match="alpha"):
        build_smoother("ema", alpha=0)
    sm = build_smoother("ema", alpha=0.5)
    with pytest.raises(ValueError):
        sm.set_params(alpha=2)
    assert sm.params["alpha"] == 0.5  # a rejected change leaves the old value
    with pytest.raises(ValueError, match=r"\(K,\)"):
        sm.update(np.zeros((2, 2)))
    assert parse_spec("hmm:stay=0.98,temperature=2") == ("hmm", {"stay": 0.98, "temperature": 2})
    assert parse_spec("ema") == ("ema", {})
    assert parse_spec("hmm:prior=0.3/0.7")[1]["prior"] == [0.3, 0.7]
    with pytest.raises(ValueError, match="key=value"):
        parse_spec("ema:0.3")


# -- alerts -------------------------------------------------------------------------------
def states(machine, frames, fps=30.0):
    return [machine.update(p, i / fps) for i, p in enumerate(frames)]


def test_min_frames_withholds_short_bursts():
    m = AlertMachine(AlertConfig(threshold=0.7, hysteresis=0.0, min_frames=3))
    out = states(m, seq(0.9, 0.9, 0.2, 0.9, 0.9, 0.9, 0.9))
    assert [s.state for s in out] == [NO_CALL, NO_CALL, NO_CALL,  # 0.2: hyperplastic pending
                                      NO_CALL, NO_CALL, "adenoma", "adenoma"]
    assert [s.alert for s in out] == [False] * 5 + [True, True]
    assert out[5].changed and not out[6].changed and out[6].frames_in_state == 2


def test_hysteresis_keeps_label_until_exit_threshold():
    m = AlertMachine(AlertConfig(threshold=0.7, hysteresis=0.15, min_frames=1, uncertain_low=0.5))
    out = states(m, seq(0.75, 0.62, 0.56, 0.54, 0.66))
    # enters at 0.75, holds down to 0.55 (0.7 - 0.15), drops at 0.54; 0.66 is below the entry again
    assert [s.state for s in out] == ["adenoma", "adenoma", "adenoma", UNCERTAIN, UNCERTAIN]
    no_hyst = AlertMachine(AlertConfig(threshold=0.7, hysteresis=0.0, min_frames=1))
    assert [s.state for s in states(no_hyst, seq(0.75, 0.62))] == ["adenoma", UNCERTAIN]


def test_uncertain_band_and_no_call():
    cfg = AlertConfig(class_names=("a", "b", "c"), threshold=0.8, uncertain_low=0.5, min_frames=1,
                      alert_classes=("c",))
    m = AlertMachine(cfg)
    frames = [np.array(p) for p in ([0.34, 0.33, 0.33], [0.6, 0.3, 0.1], [0.1, 0.05, 0.85], [0.9, 0.05, 0.05])]
    out = states(m, frames)
    assert [s.state for s in out] == [NO_CALL, UNCERTAIN, "c", "a"]
    assert [s.alert for s in out] == [False, False, True, False]
    assert out[2].label == 2 and out[1].label is None
    assert np.isclose(out[1].confidence, 0.6)


def test_min_duration_in_seconds():
    m = AlertMachine(AlertConfig(threshold=0.7, min_frames=1, min_duration_s=0.1))
    out = states(m, seq(*[0.9] * 5), fps=25.0)    # 0, 40, 80, 120 ms ...
    assert [s.alert for s in out] == [False, False, False, True, True]
    assert out[3].since == pytest.approx(0.12)


def test_switching_labels_passes_through_no_call():
    m = AlertMachine(AlertConfig(threshold=0.7, hysteresis=0.1, min_frames=2))
    out = states(m, seq(0.9, 0.9, 0.9, 0.1, 0.1, 0.1))
    assert [s.state for s in out] == [NO_CALL, "adenoma", "adenoma", NO_CALL, "hyperplastic", "hyperplastic"]
    assert [s.alert for s in out] == [False, True, True, False, False, False]


def test_live_reconfigure_and_validation():
    m = AlertMachine(AlertConfig(threshold=0.7, min_frames=1, hysteresis=0.0))
    assert m.update(np.array([0.35, 0.65]), 0.0).state == UNCERTAIN
    m.configure(threshold=0.6)
    assert m.update(np.array([0.35, 0.65]), 0.033).state == "adenoma"
    m.configure(alert_classes=("hyperplastic",))
    assert m.update(np.array([0.35, 0.65]), 0.066).alert is False
    with pytest.raises(ValueError, match="unknown alert parameter"):
        m.configure(treshold=0.5)
    with pytest.raises(ValueError, match="hysteresis"):
        m.configure(hysteresis=0.9)
    assert m.cfg.threshold == 0.6  # rejected changes leave the config as it was
    with pytest.raises(ValueError, match="alert_classes"):
        AlertConfig(alert_classes=("polyp",))
    with pytest.raises(ValueError, match="expected 2"):
        m.update(np.array([0.2, 0.3, 0.5]))


def test_default_alert_classes_are_all_but_first():
    cfg = AlertConfig(class_names=("hyperplastic", "adenoma", "adenocarcinoma"))
    assert cfg.alert_indices == {1, 2}


def test_smoother_then_alerts_removes_flicker():
    """A noisy adenoma segment: raw frames flicker across the threshold, smoothed ones do not."""
    rng = np.random.default_rng(0)
    p = np.clip(0.75 + rng.normal(0, 0.15, 120), 0, 1)
    cfg = AlertConfig(threshold=0.7, hysteresis=0.1, min_frames=3)
    raw = AlertMachine(cfg).run(seq(*p))
    sm = build_smoother("ema", alpha=0.2).run(np.array(seq(*p)))
    smooth = AlertMachine(cfg).run(sm)
    flips = lambda out: sum(a.alert != b.alert for a, b in itertools.pairwise(out))
    assert flips(smooth) < flips(raw)
    assert flips(smooth) <= 2

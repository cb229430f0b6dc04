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


# -- a model with a no_lesion output --------------------------------------------------------
@pytest.fixture(scope="module")
def no_lesion_student(tmp_path_factory):
    """A tiny random student exported the standard way with the background-first class list."""
    import torch

    from pagkd_core.export import export_student
    from pagkd_core.models import build_model
    from pagkd_core.outputs import NO_LESION

    torch.manual_seed(0)
    stem = tmp_path_factory.mktemp("model") / "bg"
    export_student(build_model("test_resnet", 3, embed_dim=8), stem,
                   class_names=[NO_LESION, "hyperplastic", "adenoma"], input_size=32, onnx=False)
    return stem.with_suffix(".json")


def bg_frames(rng, n, p_bg=(0.65, 0.98)):
    """No lesion in view: P(no_lesion) noisy in ``p_bg``, the rest split at random."""
    out = []
    for _ in range(n):
        b = rng.uniform(*p_bg)
        a = rng.uniform(0, 1)
        out.append(np.array([b, (1 - b) * (1 - a), (1 - b) * a]))
    return out


def lesion_frames(rng, n, p_lesion=(0.6, 0.95), p_adenoma=(0.75, 0.95)):
    out = []
    for _ in range(n):
        pl, pa = rng.uniform(*p_lesion), rng.uniform(*p_adenoma)
        out.append(np.array([1 - pl, pl * (1 - pa), pl * pa]))
    return out


def test_no_lesion_output_through_alerts(no_lesion_student):
    from stream.alerts import NO_LESION_STATE
    from stream.engines import ModelSource

    names = tuple(ModelSource.from_path(no_lesion_student).meta["class_names"])
    cfg = AlertConfig(class_names=names, threshold=0.7, hysteresis=0.1, min_frames=3)
    assert cfg.alert_indices == {2} and cfg.background == 0  # adenoma alerts, hyperplastic does not
    rng = np.random.default_rng(0)
    frames = bg_frames(rng, 60) + lesion_frames(rng, 40) + bg_frames(rng, 60)
    for mode, params in (("none", {}), ("ema", {"alpha": 0.3}), ("hmm", {"stay": 0.95})):
        smoothed = build_smoother(mode, **params).run(np.array(frames))
        out = [s.state for s in AlertMachine(cfg).run(smoothed, np.arange(len(frames)) / 30)]
        # no-lesion stretches: "no lesion" throughout - no alert, no uncertain/no-call flicker
        assert set(out[:60]) == {NO_LESION_STATE} and set(out[-50:]) == {NO_LESION_STATE}, mode
        assert UNCERTAIN not in out
        # the lesion stretch gets its call, among the lesion classes
        assert out[100 - 30 : 100].count("adenoma") == 30, (mode, out[60:100])
    alerts = AlertMachine(cfg).run(np.array(frames))
    assert [a.alert for a in alerts].count(True) > 30 and not any(a.alert for a in alerts[:60])


def test_lesion_class_is_called_given_a_lesion_and_presence_has_hysteresis():
    from pagkd_core.outputs import NO_LESION
    from stream.alerts import NO_LESION_STATE

    cfg = AlertConfig(class_names=(NO_LESION, "hyperplastic", "adenoma"), threshold=0.7, min_frames=1,
                      presence=0.5, presence_hysteresis=0.15)
    m = AlertMachine(cfg)
    # a lesion half in view: P(lesion) 0.55, adenoma 0.45 of it all -> 0.82 given a lesion: called
    s = m.update(np.array([0.45, 0.10, 0.45]), 0.0)
    assert s.state == "adenoma" and s.alert and s.confidence == pytest.approx(0.45 / 0.55)
    # P(lesion) dips to 0.4: still in view (exit at 0.35), the call is kept
    assert m.update(np.array([0.6, 0.05, 0.35]), 0.033).state == "adenoma"
    out = m.update(np.array([0.7, 0.05, 0.25]), 0.066)
    assert out.state == NO_LESION_STATE and not out.alert and out.label is None
    assert out.confidence == pytest.approx(0.7)
    # re-entering needs P(lesion) >= 0.5 again, and the call is made afresh
    assert m.update(np.array([0.55, 0.05, 0.40]), 0.1).state == NO_LESION_STATE
    # a lesion in view, torn between its classes: "uncertain" (0.5 given a lesion is in the band)
    assert m.update(np.array([0.3, 0.35, 0.35]), 0.133).state == UNCERTAIN
    assert cfg.alert_probability([0.5, 0.1, 0.4]) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="lesion classes"):
        AlertConfig(class_names=(NO_LESION, "a", "b"), alert_classes=(NO_LESION,))
    with pytest.raises(ValueError, match="presence"):
        AlertConfig(class_names=(NO_LESION, "a", "b"), presence=0.3, presence_hysteresis=0.3)


def test_not_analysed_state_drops_the_call():
    from stream.alerts import NBI_NOT_ANALYSED

    m = AlertMachine(AlertConfig(threshold=0.7, min_frames=1))
    assert m.update(np.array([0.1, 0.9]), 0.0).state == "adenoma"
    s = m.not_analysed(0.033)
    assert (s.state, s.alert, s.label, s.changed) == (NBI_NOT_ANALYSED, False, None, True)
    assert m.not_analysed(0.066).frames_in_state == 2
    assert m.update(np.array([0.1, 0.9]), 0.1).state == "adenoma"  # min_frames 1: a fresh call


def test_old_two_class_student_alerts_as_before(tmp_path):
    """A two-class (no no_lesion) student's class list drives the machine exactly as the
    lesion-only rule always has: the top class over all outputs, no "no lesion" state."""
    from test_core_models_export import old_student

    from stream.alerts import NO_LESION_STATE
    from stream.engines import ModelSource

    path, _ = old_student(tmp_path)
    names = tuple(ModelSource.from_path(path).meta["class_names"])
    cfg = AlertConfig(class_names=names, threshold=0.7, hysteresis=0.1, min_frames=2)
    assert cfg.background is None and cfg.alert_indices == {1}
    out = AlertMachine(cfg).run(seq(0.05, 0.05, 0.9, 0.9, 0.9, 0.62, 0.55))
    assert [s.state for s in out] == [NO_CALL, names[0], NO_CALL, names[1], names[1], names[1], UNCERTAIN]
    assert NO_LESION_STATE not in {s.state for s in out}

"""A student's own smoothing + alert setting: the tuning rule, storing it in the student, and the
runtime reading it under its files and flags (defaults < student < file < flags).

Rule and config tests run on hand-made dicts and a copy of the bundled student's metadata (no
weights are read). The end-to-end test reuses test_video_eval's toy video and the shared toy
student (engine_fixtures), copied so that writing into it touches no other test's files.
"""
from __future__ import annotations

import json
import shutil

import pytest
from engine_fixtures import shared_student
from test_video_eval import video  # noqa: F401 - the toy procedure video fixture, reused

from pagkd_core.config import ConfigError
from stream import cli
from stream.alerts import AlertConfig
from stream.config import bundled_model, load_pipeline_config
from stream.smoothing import SmoothingConfig
from stream.tune import DEFAULT_GRID, choose, join_spec, parse_grid, write_setting
from stream.tune import main as tune_main
from stream.ui.app import parse_args, starting_controls
from stream.ui.controls import Controls
from stream.video_eval import DEFAULT_SETTINGS, default_settings

FA, FC, UNC = "false_alarms_no_lesion_per_min", "close_first_call_correct", "frac_uncertain"
TIME = "time_close_to_correct_median_s"
OWN = "window:size=8,threshold=0.6,presence=0.9"


def row(fc, fa, unc=0.1, time=1.0, n=None):
    return {FC: fc, FA: fa, UNC: unc, TIME: time, "close_view_lesions": n}


# -- the rule ----------------------------------------------------------------------------------
def test_rule_takes_the_best_first_call_within_the_bound():
    pooled = {"a": row(0.60, 0.4), "b": row(0.90, 0.6), "c": row(0.65, 0.0), "d": row(0.65, 0.5, unc=0.3)}
    t = choose(pooled)
    assert t["chosen"] == "c" and t["met_bound"] and t["first_call_key"] == FC
    assert t["ranked"] == ["c", "d", "a", "b"]  # d ties c on first call but is more often uncertain


def test_rule_breaks_first_call_ties_by_the_sooner_right_call():
    pooled = {"slow": row(0.8, 0.0, unc=0.0, time=1.5), "fast": row(0.8, 0.0, unc=0.2, time=0.9),
              "never": row(0.8, 0.0, unc=0.0, time=None), "best": row(0.85, 0.0, time=2.0)}
    # accuracy first; among equals the sooner right call, before the uncertain share; no median
    # (over half never called right) is the slowest
    assert choose(pooled)["ranked"] == ["best", "fast", "slow", "never"]


def test_rule_takes_the_soonest_right_call_within_one_standard_error_of_the_best():
    # 100 lesions, best 0.90: one standard error is 0.03, so 0.87 is within it and 0.86 is not
    pooled = {"best": row(0.90, 0.0, time=1.5, n=100), "close": row(0.87, 0.0, time=0.9, n=100),
              "closer": row(0.88, 0.2, time=0.9, n=100), "fast_worse": row(0.86, 0.0, time=0.3, n=100),
              "fast_loud": row(0.90, 0.8, time=0.2, n=100), "never": row(0.89, 0.0, time=None, n=100)}
    t = choose(pooled)
    # within one SE: the sooner right call first, a tie in time by the higher first-call rate; a
    # setting past the bound is never preferred, however fast
    assert t["ranked"] == ["closer", "close", "best", "never", "fast_worse", "fast_loud"]
    assert t["first_call_floor"] == pytest.approx(0.87)
    # the bound decides which setting is "the best" whose noise counts
    assert choose({"a": row(0.95, 0.6, n=100), "b": row(0.80, 0.0, time=2.0, n=100),
                   "c": row(0.78, 0.0, time=0.5, n=100)})["chosen"] == "c"
    # more lesions, a narrower standard error: 0.87 no longer ties 0.90 on 1000 lesions
    assert choose({k: {**m, "close_view_lesions": 1000} for k, m in pooled.items()})["chosen"] == "best"


def test_rule_when_no_setting_meets_the_bound():
    pooled = {"a": row(0.9, 3.0), "b": row(0.5, 1.0), "c": row(0.6, 1.0), "d": row(0.8, None)}
    t = choose(pooled)
    assert t["chosen"] == "c" and not t["met_bound"]  # fewest false alarms, tie by first call
    assert t["ranked"][-1] == "d"  # no minute without a lesion: the bound is not shown to be met


def test_rule_on_truth_without_close_views_uses_all_lesions():
    pooled = {"a": {FC: None, "lesion_first_call_correct": 0.5, FA: 0.0, UNC: 0.1},
              "b": {FC: None, "lesion_first_call_correct": 0.7, FA: 0.2, UNC: 0.1}}
    t = choose(pooled)
    assert t["chosen"] == "b" and t["first_call_key"] == "lesion_first_call_correct"


def test_grid_grammar(tmp_path, capsys):
    specs, notes = parse_grid(DEFAULT_GRID, presence=True)
    assert len(specs) == 360 and specs[0] == "ema:alpha=0.3,threshold=0.55,presence=0.5,min_frames=3" and not notes
    specs, notes = parse_grid(DEFAULT_GRID, presence=False)
    assert len(specs) == 90 and "presence=" not in " ".join(specs) and "no_lesion" in notes[0]
    specs, _ = parse_grid("smoothing=none|hmm:stay=0.98; threshold=0.6,0.7", presence=True)
    assert specs == ["none:threshold=0.6", "none:threshold=0.7", "hmm:stay=0.98,threshold=0.6",
                     "hmm:stay=0.98,threshold=0.7"]
    assert join_spec("window:size=8", "") == "window:size=8"
    for bad, words in [("threshold=0.6", "smoothing axis"), ("smoothing=none;colour=red", "unknown grid axis"),
                       ("smoothing=none;threshold=", "NAME=VALUES"), ("smoothing=none;smoothing=ema", "twice")]:
        with pytest.raises(ValueError, match=words):
            parse_grid(bad, presence=True)
    # the command: one line before any video is read (the bundled student: presence is on its grid)
    assert cli.main(["tune", str(tmp_path), "--out", str(tmp_path), "--grid", "smoothing=none;presence=1.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "presence" in err and "\n" not in err


# -- the student's file --------------------------------------------------------------------------
@pytest.fixture
def student_json(tmp_path):
    """The bundled student's metadata (3 classes with no_lesion), with ``setting`` if given."""
    def make(setting: str | None = OWN, name: str = "s"):
        meta = json.loads(bundled_model().read_text())
        meta.pop("alert_setting", None)  # the bundled student may carry its own one day
        meta.pop("alert_setting_chosen_on", None)
        if setting is not None:
            meta["alert_setting"] = setting
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(meta, indent=1) + "\n")
        return path
    return make


def test_write_keeps_every_other_key_and_is_atomic(student_json, monkeypatch):
    path = student_json(None)
    before = json.loads(path.read_text())
    write_setting(path.with_suffix(".safetensors"), "hmm:stay=0.98", "somewhere")
    after = json.loads(path.read_text())
    assert list(after) == [*before, "alert_setting", "alert_setting_chosen_on"]
    assert {k: after[k] for k in before} == before and after["alert_setting"] == "hmm:stay=0.98"
    assert path.read_text().startswith('{\n "format"')  # the file's own indent
    write_setting(path, OWN, "again")  # an existing key keeps its place
    assert list(json.loads(path.read_text()))[-2:] == ["alert_setting", "alert_setting_chosen_on"]
    write_setting(path, OWN, "with views", ("whole", "centre"))  # chosen for views named by --views
    assert json.loads(path.read_text())["views"] == ["whole", "centre"]
    text = path.read_text()

    def fail(*_):
        raise OSError("disk full")
    monkeypatch.setattr("stream.tune.os.replace", fail)
    with pytest.raises(OSError):
        write_setting(path, "none", "never")
    assert path.read_text() == text and [p.name for p in path.parent.iterdir()] == [path.name]


def test_config_takes_the_students_setting_under_file_and_flags(student_json, tmp_path):
    model = str(student_json())
    cfg = load_pipeline_config(None, {"model": model, "threshold": 0.8, "min_frames": None})
    assert cfg.smoothing == SmoothingConfig("window", {"size": 8})
    assert cfg.alerts.threshold == 0.8 and cfg.alerts.presence == 0.9  # the flag wins one field only
    for other in (model[:-5], model[:-5] + ".safetensors"):  # the stem, or another of its files
        assert load_pipeline_config(None, {"model": other}).alerts.threshold == 0.6
    yaml = tmp_path / "run.yaml"
    yaml.write_text("smoothing: hmm:stay=0.95\n")
    cfg = load_pipeline_config(str(yaml), {"model": model})
    assert cfg.smoothing.mode == "hmm" and cfg.alerts.threshold == 0.6 and cfg.alerts.presence == 0.9


def test_a_student_without_a_setting_or_unreadable_behaves_as_before(student_json, tmp_path):
    plain = load_pipeline_config(None, {"model": str(student_json(None, "plain"))})
    missing = load_pipeline_config(None, {"model": str(tmp_path / "missing.json")})  # the engine's error, later
    assert (missing.smoothing, missing.alerts) == (plain.smoothing, plain.alerts)
    assert plain.smoothing == SmoothingConfig("ema", {"alpha": 0.3}) and plain.alerts == AlertConfig()
    with pytest.raises(ConfigError, match=r"bad\.json: alert_setting 'window:size=8,presence=2'"):
        load_pipeline_config(None, {"model": str(student_json("window:size=8,presence=2", "bad"))})


def test_evaluate_defaults_and_ui_start_from_the_students_setting(student_json):
    assert default_settings({"alert_setting": OWN}) == [OWN, *DEFAULT_SETTINGS]
    assert default_settings({}) == list(DEFAULT_SETTINGS)
    model, names = str(student_json()), ["no_lesion", "hyperplastic", "adenoma"]
    c = starting_controls(parse_args(["--strength", "0.9"]), model, names)
    assert c.smoothing == "window" and c.strength == 0.9 and c.threshold == 0.6 and c.presence == 0.9
    c = starting_controls(parse_args([]), model, names)
    assert c.smoothing_config(3) == SmoothingConfig("window", {"size": 8})
    assert c.alert_config(names).presence == 0.9 and c.alert_config(names).min_frames == AlertConfig.min_frames
    assert starting_controls(parse_args([]), str(student_json(None, "plain")), names) == Controls()
    for spec in ("ema:alpha=0.3", "hmm:stay=0.98"):  # the sliders stand for the setting exactly
        sm = SmoothingConfig.parse(spec)
        assert Controls.from_configs(sm, AlertConfig(), 3).smoothing_config(3) == sm


# -- end to end ----------------------------------------------------------------------------------
def test_tune_write_then_evaluate_and_run_use_it(video, tmp_path, capsys):  # noqa: F811
    src = shared_student()
    for f in src.parent.glob(f"{src.stem}.*"):  # a copy: the shared student stays as it is
        shutil.copy(f, tmp_path / f.name)
    model, out, preds = tmp_path / src.name, tmp_path / "tune", tmp_path / "preds"
    before = json.loads(model.read_text())
    args = [str(video.parent), "--model", str(model), "--out", str(out), "--predictions-dir", str(preds),
            "--grid", "smoothing=none|window:size=8;threshold=0.6,0.7;presence=0.8", "--engine", "torch",
            "--device", "cpu"]
    assert tune_main(args) == 0
    t = json.loads((out / "tune.json").read_text())
    assert len(t["ranked"]) == 4 and "no_lesion" in t["notes"][0] and t["written"] is None
    assert (preds / "toy_procedure.jsonl").is_file() and "must be VALIDATION videos" in (out / "tune.md").read_text()
    assert json.loads(model.read_text()) == before  # nothing written without --write
    assert tune_main([*args, "--views", "centre"]) == 2  # a bad --views fails before any video is read
    capsys.readouterr()
    assert tune_main([*args, "--write"]) == 0  # the cache: no second inference
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "wrote it into" in line
    meta = json.loads(model.read_text())
    assert meta["alert_setting"] == t["chosen"] and "toy_procedure.mp4" in meta["alert_setting_chosen_on"]
    assert {k: meta[k] for k in before} == before
    from stream.video_eval import evaluate_videos
    rep = evaluate_videos([str(video.parent), "--model", str(model), "--predictions-dir", str(preds),
                           "--out", str(tmp_path / "eval"), "--no-plots", "-q"])
    assert rep["settings"][0] == t["chosen"] and rep["engine"].startswith("cached predictions")
    stats = tmp_path / "stats.json"
    assert cli.main(["run", str(video), "--model", str(model), "--engine", "torch", "--device", "cpu",
                     "--threads", "1", "--max-frames", "5", "-q", "--stats", str(stats), "--min-frames", "4"]) == 0
    s = json.loads(stats.read_text())
    own = load_pipeline_config(None, {"model": str(model)})
    assert s["smoothing"] == own.smoothing.spec and s["alerts"]["threshold"] == own.alerts.threshold
    assert s["alerts"]["min_frames"] == 4

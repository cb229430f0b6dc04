"""`python -m stream`: run on real files, exit codes, one-line errors, subcommand wiring."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import torch
from stream_media import write_video

from stream import cli
from stream.sinks import read_predictions

KEYS = {"frame", "pts", "probs", "smoothed", "state", "alert", "latency_ms"}


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    from pagkd_core.export import export_student
    from pagkd_core.models import build_model

    torch.manual_seed(0)
    stem = tmp_path_factory.mktemp("model") / "tiny"
    export_student(
        build_model("resnet10t", 2, embed_dim=16),
        stem,
        class_names=["hyperplastic", "adenoma"],
        input_size=64,
        onnx=False,
    )
    threads = torch.get_num_threads()
    yield str(stem.with_suffix(".json"))
    torch.set_num_threads(threads)


def test_run_file_writes_predictions_and_recording(student, tmp_path, capsys):
    video = write_video(tmp_path / "v.mp4", n=25)
    pred, rec, stats = tmp_path / "p.jsonl", tmp_path / "rec.ts", tmp_path / "stats.json"
    rc = cli.main(
        [
            "run",
            str(video),
            "--model",
            student,
            "--engine",
            "torch",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--batch",
            "4",
            "--fast",
            "--smoothing",
            "window:size=4",
            "--predictions",
            str(pred),
            "--record",
            str(rec),
            "--stats",
            str(stats),
        ]
    )
    assert rc == 0
    recs = read_predictions(pred)
    assert [r["frame"] for r in recs] == list(range(25)) and KEYS <= set(recs[0])
    assert isinstance(recs[0]["alert"], bool) and len(recs[0]["probs"]) == 2
    err = capsys.readouterr().err
    assert "p99" in err and "25 frames" in err
    import av

    with av.open(str(rec)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 25
    assert '"total"' in stats.read_text()


def test_run_realtime_max_frames(student, tmp_path):
    video = write_video(tmp_path / "v.mp4", n=60)
    pred = tmp_path / "p.jsonl"
    rc = cli.main(
        [
            "run",
            str(video),
            "--model",
            student,
            "--engine",
            "torch",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--realtime",  # the older name of --live, still accepted
            "--max-frames",
            "10",
            "--predictions",
            str(pred),
            "-q",
        ]
    )
    assert rc == 0
    recs = read_predictions(pred)
    assert len(recs) == 10 and np.all(np.diff([r["frame"] for r in recs]) >= 1)


def test_damaged_file_decoded_past_the_damage_warns_and_exits_0(student, tmp_path, capsys):
    """Exit 3 is for runs that could not go on; this one did, so the damage is a warning that
    says the run went on (not "the frames before it")."""
    video = write_video(tmp_path / "v.mp4", n=60)
    data = bytearray(video.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 3000] = np.random.default_rng(2).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    pred = tmp_path / "p.jsonl"
    rc = cli.main(
        [
            "run",
            str(bad),
            "--model",
            student,
            "--engine",
            "torch",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--predictions",
            str(pred),
            "-q",
        ]
    )
    assert rc == cli.EXIT_OK
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and "bad.mp4" in err[0]
    assert "went on" in err[0] and "before it" not in err[0]
    assert len(read_predictions(pred)) >= 20


def test_unopenable_source_is_one_line_and_nonzero(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "stream", "run", str(tmp_path / "missing.mp4")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == cli.EXIT_USAGE
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing.mp4" in lines[0] and "no such file" in lines[0]


def test_bad_model_is_one_line_and_nonzero(tmp_path, capsys):
    video = write_video(tmp_path / "v.mp4", n=3)
    rc = cli.main(["run", str(video), "--model", str(tmp_path / "nomodel.json")])
    assert rc == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nomodel" in err[0]


@pytest.mark.parametrize("sub,module", [("evaluate", "stream.video_eval"), ("ui", "stream.ui.app")])
def test_subcommands_delegate_with_their_own_arguments(monkeypatch, sub, module):
    seen = {}
    fake = types.ModuleType(module)
    fake.main = lambda argv: seen.setdefault("argv", argv) and 0
    monkeypatch.setitem(sys.modules, module, fake)
    assert cli.main([sub, "--x", "1", "videos/"]) == 0
    assert seen["argv"] == ["--x", "1", "videos/"]


def test_evaluate_from_python_raises_where_the_command_exits(tmp_path):
    from stream.video_eval import evaluate_videos, main

    with pytest.raises(FileNotFoundError, match="no such video"):
        evaluate_videos([str(tmp_path / "nope.mp4")])
    with pytest.raises(ValueError, match="unknown smoothing"):
        evaluate_videos([str(tmp_path), "--setting", "kalman"])
    assert main([str(tmp_path / "nope.mp4")]) == 2  # the command keeps its exit code


def test_yaml_config_with_flag_overrides(tmp_path):
    from pathlib import Path

    from pagkd_core.config import ConfigError
    from stream.config import load_pipeline_config

    root = Path(__file__).resolve().parents[1]
    cfg = load_pipeline_config(str(root / "configs" / "stream_live.yaml"), {"threshold": 0.9, "batch": None})
    assert cfg.batch == 1 and cfg.alerts.min_duration_s == 0.2 and cfg.alerts.threshold == 0.9
    bad = tmp_path / "bad.yaml"
    bad.write_text("batch: many\n")
    with pytest.raises(ConfigError, match="batch"):
        load_pipeline_config(str(bad))
    bad.write_text("no_such_key: 1\n")
    with pytest.raises(ConfigError, match="no_such_key"):
        load_pipeline_config(str(bad))


def test_modality_flags_reach_the_config():
    from stream.cli import _CFG_KEYS, build_parser
    from stream.config import load_pipeline_config

    args = build_parser().parse_args(["run", "demo", "--no-detect-modality", "--nbi-teacher", "none"])
    cfg = load_pipeline_config(None, {k: getattr(args, k) for k in _CFG_KEYS})
    assert cfg.detect_modality is False and cfg.nbi_teacher == "none"
    default = load_pipeline_config(None, {k: getattr(build_parser().parse_args(["run", "demo"]), k) for k in _CFG_KEYS})
    assert default.detect_modality is True and default.nbi_teacher == "auto"


def _tiny_run(student, *args) -> list[str]:
    return ["run", *args, "--model", student, "--engine", "torch", "--device", "cpu", "--threads", "1", "-q"]


def test_resolution_change_mid_stream_is_not_an_error(student, tmp_path, capsys):
    # Two MPEG-TS streams spliced (what a source switching resolution sends): the continuity
    # counters jump, which the demuxer flags, yet every frame decodes. That is no error (exit 3
    # with "corrupt data" before).
    a = write_video(tmp_path / "a.ts", n=30, w=160, h=128)
    b = write_video(tmp_path / "b.ts", n=30, w=320, h=240)
    both = tmp_path / "both.ts"
    both.write_bytes(a.read_bytes() + b.read_bytes())
    pred = tmp_path / "p.jsonl"
    rc = cli.main(_tiny_run(student, str(both), "--predictions", str(pred)))
    err = capsys.readouterr().err
    assert rc == cli.EXIT_OK and "error:" not in err and "corrupt" not in err
    assert len(read_predictions(pred)) >= 59


@pytest.mark.parametrize(
    "flags,words",
    [
        (["--predictions", "{dir}"], "give a file path"),
        (["--record", "{dir}"], "cannot record"),
        (["--max-wait-ms", "-5"], "max_wait_ms (--max-wait-ms) must be at least 0"),
        (["--batch", "0"], "batch (--batch) must be at least 1"),
    ],
)
def test_bad_output_paths_and_option_values_are_one_line(student, tmp_path, flags, words):
    video = write_video(tmp_path / "v.mp4", n=3)
    flags = [f.format(dir=tmp_path) for f in flags]
    out = subprocess.run(
        [sys.executable, "-m", "stream", *_tiny_run(student, str(video), *flags)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    lines = out.stderr.strip().splitlines()
    assert out.returncode == cli.EXIT_USAGE, out.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines


def test_two_sigterms_in_a_row_still_end_with_a_summary(student, tmp_path):
    stats, pred = tmp_path / "s.json", tmp_path / "p.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream", *_tiny_run(student, "synthetic", "--live", "--stats", str(stats),
                                                     "--predictions", str(pred))],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # Running once the log has lines (polled; the loop bound is a hang guard only).
        for _ in range(1200):
            if pred.exists() and pred.stat().st_size > 0:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == cli.EXIT_OK, proc.stderr.read()
    summary = json.loads(stats.read_text())
    assert summary["frames"] >= 1 and summary["frames"] == len(read_predictions(pred))

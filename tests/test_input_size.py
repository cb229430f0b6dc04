"""benchmarks.input_size: the size curve's structure, not its figures (nothing here asserts a time).

The test-time-only path on the shared toy student (engine_fixtures) and test_video_eval's toy
procedure video (also the int8 calibration frames): one table row per size, a figure, a record;
a second launch redoes nothing; bad input is one line with exit code 2 before any work.
"""
from __future__ import annotations

import json

import pytest
from engine_fixtures import shared_student
from test_video_eval import video  # noqa: F401 - the toy procedure video fixture, reused

from benchmarks import input_size


@pytest.fixture(scope="module")
def curve(video, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("input_size") / "curve"
    argv = ["--quick", "--test-time-only", "--model", str(shared_student()), "--videos", str(video.parent),
            "--calib", str(video), "--sizes", "32,48", "--out", str(out)]
    assert input_size.main(argv) == 0
    return out, argv


def test_one_row_per_size_a_figure_and_a_record(curve):
    out, _ = curve
    md = (out / "input_size.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [r.split(" | ")[0] for r in rows] == ["| 32", "| 48"]
    assert "SYNTHETIC" in md and "VALIDATION videos only" in md and "python -m benchmarks.input_size" in md
    assert (out / "input_size.png").stat().st_size > 0
    rec = json.loads((out / "input_size.json").read_text())
    assert rec["mode"] == "test-time-only" and rec["reference_size"] == 48
    assert [r["size"] for r in rec["rows"]] == [32, 48]
    row = rec["rows"][0]
    assert {k for k, _ in input_size.FIGURES} <= set(row) and row["setting"]
    assert row["int8_images_per_s"] > 0 and rec["rows"][1]["int8_ratio"] == 1.0
    for size in (32, 48):  # the copy runs at the size; the weights are the toy student's
        meta = json.loads((out / f"s{size}" / "student.json").read_text())
        assert meta["input_size"] == [size, size] and "alert_setting" not in meta
        assert (out / f"s{size}" / "student.int8.onnx").is_file()
        assert (out / f"s{size}" / "tune" / "tune.json").is_file()


def test_a_second_launch_skips_finished_sizes(curve, capsys):
    out, argv = curve
    made = {p: p.stat().st_mtime_ns for p in out.glob("s*/**/*") if p.is_file()}
    capsys.readouterr()
    assert input_size.main(argv) == 0
    said = capsys.readouterr().out
    assert said.count("int8 graph up to date, skipped") == 2 and said.count("chosen before") == 2
    assert "reused" in said and "calibrating" not in said
    assert {p: p.stat().st_mtime_ns for p in made} == made


@pytest.mark.parametrize("extra, words", [
    (["--sizes", "128,abc"], "--sizes"),
    (["--sizes", "192,192"], "distinct"),
    (["--sizes", "8"], "at least 16"),
])
def test_bad_sizes_are_one_line_and_exit_2(extra, words, tmp_path, capsys):
    assert input_size.main(["--test-time-only", "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and words in err and "\n" not in err
    assert not (tmp_path / "o").exists()  # refused before any work


def test_held_out_videos_and_missing_validation_videos_are_refused(tmp_path, capsys, monkeypatch):
    held = tmp_path / "procedure_s1000.mp4"
    held.write_bytes(b"")
    held.with_suffix(".truth.csv").write_text("frame\n")
    assert input_size.main(["--test-time-only", "--videos", str(held), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "held-out" in err and "\n" not in err
    monkeypatch.setattr(input_size, "DEFAULT_VIDEOS", (str(tmp_path / "none"),))
    assert input_size.main(["--test-time-only", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "make_videos" in err and "\n" not in err

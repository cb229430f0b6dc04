"""``--ray`` on a 2-worker local Ray that this module starts (loopback only, no dashboard) and
stops: ``python -m stream evaluate`` gives the same report as the local run and a corrupt video
does not stop the others; ``python -m benchmarks.distill --quick`` runs as tasks and resumes.
Skipped where Ray is not installed (the optional ``ray`` extra), but for the one-line error.
Videos: tiny clips from the project's synthetic procedure generator; model: the toy student."""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys

import pytest
from engine_fixtures import shared_student

from pagkd_core.synth import VideoConfig, write_video
from stream import ray_eval
from stream.video_eval import evaluate_videos, main

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (extra 'ray')")

# the report's figures, as opposed to how and where the run was made (command, engine, speed, ray)
FIGURES = ("settings", "class_names", "alert_config", "evidence_split", "pooled", "targets", "breakdowns",
           "videos", "problems")


@pytest.fixture(scope="module")
def cluster():
    ray, started = ray_eval.connect("local", num_cpus=2)
    assert started and ray.util.get_node_ip_address() == "127.0.0.1"
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray_videos")
    for seed in range(3):
        write_video(VideoConfig(width=128, height=96, fps=10, seconds=3, seed=seed, text=False),
                    root / f"clip{seed}.mp4", progress=False)
    return root


def args(folder, out, *more):
    return [str(folder), "--model", str(shared_student()), "--engine", "torch", "--device", "cpu",
            "--setting", "none", "--setting", "hmm:stay=0.95,min_frames=3", "--out", str(out), "-q",
            "--no-plots", *more]


@needs_ray
def test_ray_report_equals_local(cluster, videos, tmp_path):
    local = evaluate_videos(args(videos, tmp_path / "local"))
    on_ray = evaluate_videos(args(videos, tmp_path / "ray", "--ray"))
    assert list(on_ray["videos"]) == ["clip0.mp4", "clip1.mp4", "clip2.mp4"]
    assert {k: on_ray[k] for k in FIGURES} == {k: local[k] for k in FIGURES}  # exactly, not approximately
    written = json.loads((tmp_path / "ray" / "report.json").read_text())
    assert written["pooled"] == json.loads((tmp_path / "local" / "report.json").read_text())["pooled"]
    r = on_ray["ray"]
    assert r["failed"] == {} and r["retries"] == 0 and r["cpus"] == 2
    assert 1 <= r["engines_built"] <= r["workers"] <= 2  # one engine per worker, not per video


@needs_ray
def test_corrupt_video_does_not_stop_the_others(cluster, videos, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(videos, folder)
    (folder / "broken.mp4").write_bytes(b"\x00garbage, not a video\xff" * 200)
    shutil.copy(folder / "clip0.truth.csv", folder / "broken.truth.csv")
    rep = evaluate_videos(args(folder, tmp_path / "out", "--ray"))
    assert sorted(rep["videos"]) == ["clip0.mp4", "clip1.mp4", "clip2.mp4"]
    assert list(rep["ray"]["failed"]) == ["broken.mp4"]
    err = rep["ray"]["failed"]["broken.mp4"]
    assert err and "\n" not in err
    assert any(p.startswith("broken.mp4: not evaluated: ") for p in rep["problems"])
    assert "broken.mp4" in (tmp_path / "out" / "report.md").read_text()


@needs_ray
def test_only_corrupt_videos_is_one_line(cluster, tmp_path, capsys):
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 500)
    (tmp_path / "broken.truth.csv").write_text("frame,pts,lesion_visible,lesion_id,class,x0,y0,x1,y1\n0,0,0,,,,,,\n")
    assert main(args(tmp_path, tmp_path / "out", "--ray")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no video could be evaluated; broken.mp4: not evaluated") and "\n" not in err


def test_without_ray_one_line(videos, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does where Ray is not installed
    assert main(args(videos, tmp_path / "out", "--ray")) == 2
    assert capsys.readouterr().err == f"error: {ray_eval.NEED_RAY}\n"


@needs_ray
def test_distill_grid_as_tasks_resumes(cluster, tmp_path, capsys):
    """benchmarks.distill --quick --ray: one fold's teacher, trained once, and two students that
    read it; a re-launch submits only the run that is missing."""
    from benchmarks.distill import main as distill

    out = tmp_path / "bench"
    argv = ["--quick", "--out", str(out), "--rows", "pagkd,swap", "--regime", "few", "--folds", "0", "--ray"]
    assert distill(argv) == 0
    assert "3 run(s) to do on Ray" in capsys.readouterr().out  # teacher + 2 students, not a teacher each
    fold = out / "seed0" / "fold0"
    assert sorted(p.name for p in fold.iterdir()) == ["few.pagkd", "few.swap", "teacher"]
    table = (out / "table-few.md").read_text()
    assert "PaGKD (GKD-Pro + GKD-Den)" in table and "class-swapped" in table and "not run yet" not in table
    kept = {p: (fold / p / "last.safetensors").stat().st_mtime for p in ("teacher", "few.swap")}
    shutil.rmtree(fold / "few.pagkd")
    assert distill(argv) == 0
    assert "1 run(s) to do on Ray" in capsys.readouterr().out
    assert {p: (fold / p / "last.safetensors").stat().st_mtime for p in kept} == kept
    assert (fold / "few.pagkd" / "test_predictions.json").is_file()

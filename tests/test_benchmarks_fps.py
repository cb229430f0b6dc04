"""benchmarks.fps: the --quick run's output shape (not its speed), and the pieces it is built
from (test videos, timing summaries, the keep-up rule, the naive baseline, the config)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks import media
from benchmarks.fps import FpsConfig, load_config
from benchmarks.fps_breakdown import STAGES, breakdown
from benchmarks.fps_decode import ARRAY_OUTPUTS, decode_ceiling
from benchmarks.fps_e2e import KeepUp
from benchmarks.fps_report import auto_choice_lines, breakdown_table, targets
from benchmarks.naive import NaiveClassifier, naive_paced
from benchmarks.timing import summary_ms

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "stream" / "assets" / "student.json"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return media.make_clip(tmp_path_factory.mktemp("media"), "720p", "h264", fps=30, frames=12)


def test_clip_is_real_h264_with_every_frame_and_is_cached(clip):
    import cv2

    assert clip.codec == "h264" and clip.name == "720p-h264"
    cap = cv2.VideoCapture(str(clip.path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr)
    assert len(frames) == 12 and frames[0].shape == (720, 1280, 3)
    # Moving, textured content: consecutive frames differ (a static picture decodes too fast).
    assert np.abs(frames[1].astype(int) - frames[0].astype(int)).mean() > 1.0
    mtime = clip.path.stat().st_mtime_ns
    again = media.make_clip(clip.path.parent, "720p", "h264", fps=30, frames=12)
    assert again.path == clip.path and clip.path.stat().st_mtime_ns == mtime


def test_opencv_writer_fallback_names_the_codec_it_really_wrote(tmp_path, monkeypatch):
    monkeypatch.setattr(media, "writers", lambda: ["opencv"])
    c = media.make_clip(tmp_path, "720p", "hevc", fps=30, frames=5)
    assert c.writer == "opencv" and c.name == "720p-hevc"
    assert c.codec in ("hevc", "mpeg4")  # pip OpenCV has no HEVC encoder: MPEG-4 part 2, said so


def test_summary_ms_percentiles():
    s = summary_ms([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert s["n"] == 100 and s["max_ms"] == 100.0
    assert s["p50_ms"] == pytest.approx(50.5) and s["p99_ms"] == pytest.approx(99.01)
    assert summary_ms([])["p50_ms"] is None


def test_keep_up_rule():
    rule = KeepUp(max_drop=0.02, max_p99_ms=120)
    ok = {"offered": 100, "dropped": 2, "latency": {"p99_ms": 50.0}}
    assert rule(ok)
    assert not rule({**ok, "dropped": 3})
    assert not rule({**ok, "latency": {"p99_ms": 121.0}})
    assert not rule({**ok, "never_reached": 5})
    assert not rule({"offered": 0, "dropped": 0, "latency": {"p99_ms": None}})


class _FixedCost(NaiveClassifier):
    """The naive loop with a model that takes a fixed time: fast or too slow for the feed."""

    def __init__(self, seconds: float):
        super().__init__(None, (32, 32), [0.5] * 3, [0.25] * 3)
        self.seconds = seconds

    def __call__(self, bgr):
        self.preprocess(bgr)
        time.sleep(self.seconds)
        return np.zeros((1, 2), np.float32)


def test_naive_paced_lag_grows_when_too_slow_and_not_when_fast(clip):
    # A generous latency bound: other processes share this machine's two cores.
    rule = KeepUp(max_p99_ms=1000)
    fast = naive_paced(_FixedCost(0.002), [str(clip.path)], fps=30, frames_per_stream=12)
    assert fast["processed"] == 12 and fast["never_reached"] == 0 and rule(fast), fast
    slow = naive_paced(_FixedCost(0.3), [str(clip.path)], fps=30, frames_per_stream=12)
    # 300 ms per 33 ms frame: each frame waits for the backlog, ~270 ms more than the one before;
    # the loop gives up on the frames it would reach only after twice the feed's duration.
    assert slow["never_reached"] > 0 and slow["latency"]["max_ms"] > 1000 and not rule(slow), slow


def test_decode_ceiling_is_the_fastest_unconverted_decode():
    rows = [{"clip": "a", "output": "none", "fps": 900.0}, {"clip": "a", "output": "picture", "fps": 950.0},
            {"clip": "a", "output": "rgb24", "fps": 200.0}, {"clip": "a", "output": "bgr24", "fps": 250.0},
            {"clip": "b", "output": "rgb24", "fps": 999.0}]
    assert decode_ceiling(rows, "a")["fps"] == 950.0
    assert decode_ceiling(rows, "a", ARRAY_OUTPUTS)["fps"] == 250.0
    assert decode_ceiling(rows, "c") is None


def test_config_lists_quick_and_errors(tmp_path):
    cfg = load_config(["--batches", "1,4", "--engines", "torch-fp32", "--seconds", "0.5"])
    assert cfg.batches == [1, 4] and cfg.engines == ["torch-fp32"] and cfg.seconds == 0.5
    yml = tmp_path / "fps.yaml"
    yml.write_text("max_streams: 4\nbatches: [1, 2, 8]\n")
    cfg = load_config(["--config", str(yml), "--quick"])
    assert cfg.quick and cfg.max_streams == 2 and cfg.batches == [1, 8] and cfg.seconds <= 0.3
    with pytest.raises(SystemExit):
        load_config(["--sections", "decode,nonsense"])
    assert FpsConfig().batches == [1, 2, 4, 8, 16, 32, 64]


def test_engine_variants_one_list_for_the_sweep_and_the_self_check():
    from benchmarks.engine_variants import VARIANTS, self_checked, swept

    ids = [v.id for v in VARIANTS]
    assert len(ids) == len(set(ids))  # one name per variant
    cpu_sweep = {v.id for v in swept("cpu", (1,))}
    assert cpu_sweep >= {"torch-fp32", "onnxruntime-fp32", "onnxruntime-int8"}
    assert all(v.batches == (1,) for v in swept("cpu", (1,)) if v.slow_build)  # compile: only these sizes
    assert [v.id for v in self_checked("cpu")] == ["torch-fp32", "torch-bf16", "onnxruntime-fp32"]
    cuda = self_checked("cuda")
    assert cuda[-1].slow_build and all(v.tolerance for v in cuda)  # torch.compile last
    assert {v.id for v in cuda} & {v.id for v in swept("cuda", ())} >= {"torch-fp16", "tensorrt-fp16"}


def test_bundled_training_data_is_made_once_with_patient_folds(tmp_path, monkeypatch):
    from benchmarks import fps_model

    # the full recipe's shape on a small set: the folds are the trainer's, made once
    small = ["frames", "--size", "48", "--lesions-per-class", "15", "--frames-per-lesion", "1",
             "--no-lesion-frames", "4", "--seed", "5"]
    monkeypatch.setitem(fps_model.BUNDLED_DATA, "full", small)
    root, splits = fps_model.bundled_training_data(tmp_path)
    folds = json.loads(splits.read_text())["folds"]
    assert len(folds) == fps_model.BUNDLED_FOLDS["k"] and (root / "manifest.csv").is_file()
    for fold in folds:  # every patient in exactly one part of each fold
        parts = [set(fold[k]) for k in ("train", "val", "test")]
        assert all(not (a & b) for i, a in enumerate(parts) for b in parts[i + 1:]) and parts[2]
    mtime = (root / "manifest.csv").stat().st_mtime_ns
    assert fps_model.bundled_training_data(tmp_path) == (root, splits)
    assert (root / "manifest.csv").stat().st_mtime_ns == mtime
    quick_root, no_splits = fps_model.bundled_training_data(tmp_path, quick=True)
    assert no_splits is None and quick_root != root and (quick_root / "manifest.csv").is_file()


def test_gpu_check_script_parses():
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")], check=True)


def test_quick_run_writes_every_section(tmp_path):
    """The whole --quick run on this machine: checks the JSON's shape, never its speed."""
    out = tmp_path / "fps.json"
    model = [] if BUNDLED.is_file() else ["--backbone", "mobilenetv3_small_100", "--input-size", "96"]
    cmd = [sys.executable, "-m", "benchmarks.fps", "--quick", "--json", str(out), "--media-dir",
           str(tmp_path / "media"), "--model-cache", str(tmp_path / "models"), *model]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "## End to end" in proc.stdout and "## Targets" in proc.stdout
    r = json.loads(out.read_text())

    env = r["environment"]
    for key in ("cpu", "usable_cores", "device", "versions", "loadavg"):
        assert key in env
    assert env["versions"]["torch"] and env["device"] == "cpu"

    decode = [row for row in r["stages"]["decode"] if "clip" in row]
    assert {row["clip"] for row in decode} == {"720p-h264", "720p-hevc", "1080p-h264", "1080p-hevc"}
    assert {row["threads"] for row in decode if row["reader"] == "pyav"} == {"NONE", "SLICE", "FRAME", "AUTO"}
    assert any(row["reader"] == "opencv" for row in decode)
    assert any(row["reader"] == "stream.sources" for row in decode)
    assert all(row["fps"] > 0 for row in decode)

    pre = r["stages"]["preprocess"]
    assert {row["impl"].split(" ")[0] for row in pre} == {"stream.preprocess", "naive"}

    inf = r["stages"]["inference"]
    timed = [row for row in inf if "img_s" in row]
    assert {(row["engine"], row["batch"]) for row in timed} >= {("torch-fp32", 1), ("torch-fp32", 8),
                                                               ("onnxruntime-fp32", 1), ("onnxruntime-fp32", 8)}
    for row in timed:
        assert row["p50_ms"] > 0 and row["p99_ms"] >= row["p50_ms"] and row["img_s"] > 0
    # every engine of the device appears: timed, or skipped with the reason
    assert {row["engine"] for row in inf} >= {"torch-fp32", "onnxruntime-fp32", "onnxruntime-int8"}
    # int8: calibrated in the run at the benchmark's size (224 by default) and timed; its accuracy
    # cost measured at the student's trained size on held-out lesions
    assert r["model"]["input_size"] == [224, 224] and ("onnxruntime-int8", 8) in {(t["engine"], t["batch"])
                                                                                  for t in timed}
    acc = r["int8_accuracy"]
    trained = json.loads(BUNDLED.read_text())["input_size"] if BUNDLED.is_file() else [96, 96]
    assert acc["input_size"] == trained
    assert acc["images"] > 0 and -1 <= acc["auc_drop"] <= 1 and acc["benchmark_input_size"] == [224, 224]
    pair = r["stages"]["int8_vs_eager"]
    assert pair["batch"] == 8 and pair["ratio"] == pytest.approx(
        pair["onnxruntime-int8"]["img_s"] / pair["torch-fp32"]["img_s"], rel=0.02)

    assert {row["stage"] for row in r["stages"]["smoothing"]} >= {"smoother ema", "smoother hmm", "alert machine"}

    (e2e,) = r["end_to_end"]
    assert e2e["clip"] == "720p-h264" and e2e["engine"]["engine"] in ("onnxruntime", "torch")
    rep = e2e["replay"]
    assert rep["pipeline"]["fps"] > 0 and rep["naive"]["fps"] > 0 and rep["decode_ceiling_fps"] > 0
    assert rep["speedup_vs_naive"] == pytest.approx(rep["pipeline"]["fps"] / rep["naive"]["fps"], rel=0.02)
    assert [p["fps"] for p in e2e["paced"]] == [30, 60]
    for p in e2e["paced"]:
        for who in ("pipeline", "naive"):
            row = p[who]
            assert row["offered"] > 0 and set(row["latency"]) >= {"p50_ms", "p90_ms", "p99_ms", "max_ms"}
            assert isinstance(row["keeps_up"], bool)
    conc = e2e["concurrent"]
    for who in ("pipeline", "naive"):
        assert conc[who]["runs"] and conc[who]["max_streams_keeping_up"] in (0, 1, 2)
        assert conc[who]["runs"][0]["streams"] == 1
    assert any("replay / naive" in t["target"] for t in r["targets"])

    # the host's flags and what --engine auto runs on it, beside the fastest engine of the run
    from stream.host import isa_flags

    ac = r["stages"]["auto_choice"]
    assert ac["isa"] == isa_flags() and all(f in ac["host"] for f in ac["isa"])
    assert ac["chosen"] in {row["engine"] for row in timed} and ac["fastest"] in {row["engine"] for row in timed}
    assert ac["vs_fastest"]["ratio"] > 0 and ac["vs_eager"]["ratio"] > 0
    assert f"`--engine auto` here runs **{ac['chosen']}**" in proc.stdout
    names = [t["target"] for t in r["targets"]]
    assert any(n.startswith("--engine auto") for n in names) and any("/ torch eager fp32" in n and "chosen" in n
                                                                     for n in names)
    bd = e2e["breakdown"]
    assert [s["stage"] for s in bd["stages"]][:5] == list(STAGES) and bd["replay_over_decode_only"] > 0
    assert sum(s["share"] for s in bd["stages"]) == pytest.approx(1, abs=0.01)
    assert "Where the replay's CPU goes" in proc.stdout and any("decode-only" in n for n in names)
    assert "| met |" in proc.stdout or "| not met |" in proc.stdout


def test_breakdown_names_every_stage_and_its_shares_sum_to_one(clip):
    """The per-stage CPU breakdown on the bundled student: its structure, not its figures."""
    from stream.engines import build_engine

    if not BUNDLED.is_file():
        pytest.skip("no bundled student")
    with build_engine("onnxruntime", BUNDLED, device="cpu", max_batch=4, precision="int8", threads=1) as engine:
        bd = breakdown(engine, clip, frames=12, batch=4, rounds=1, chunk=8)
    stages = {s["stage"]: s for s in bd["stages"]}
    assert list(stages)[:-1] == list(STAGES) and list(stages)[-1].startswith("rest")
    assert all(stages[k]["cpu_ms_per_frame"] >= 0 for k in STAGES)  # measured, so never negative
    assert sum(s["share"] for s in bd["stages"]) == pytest.approx(1, abs=0.01)
    assert bd["replay_cpu_ms_per_frame"] > 0 and bd["decode_only_fps"] > 0 and bd["replay_fps"] > 0
    assert bd["replay_over_decode_only"] == pytest.approx(bd["replay_fps"] / bd["decode_only_fps"], rel=0.01)
    assert "| decode |" in breakdown_table(bd)


def _auto_result(isa: list[str], vs_fastest: float, vs_eager: float) -> dict:
    ac = {"host": "2-core X (" + " ".join(isa) + "), Linux", "isa": isa, "chosen": "onnxruntime-fp32",
          "line": "engine auto: onnxruntime-fp32 (...)", "batch": 8, "fastest": "onnxruntime-int8",
          "vs_fastest": {"ratio": vs_fastest, "batch": 8, "rounds": 4}, "vs_eager": {"ratio": vs_eager, "batch": 8}}
    return {"environment": {"device": "cpu"}, "stages": {"auto_choice": ac}}


def test_auto_choice_targets_take_their_goal_from_the_instruction_set():
    vnni = {t["target"]: t for t in targets(_auto_result(["avx2", "avx512f", "avx512_vnni"], 0.95, 2.0))}
    avx2 = {t["target"]: t for t in targets(_auto_result(["avx2"], 0.8, 2.0))}
    (auto_v,) = [t for n, t in vnni.items() if n.startswith("--engine auto")]
    (eager_v,) = [t for n, t in vnni.items() if "torch eager" in n and "chosen" in n]
    (auto_a,) = [t for n, t in avx2.items() if n.startswith("--engine auto")]
    (eager_a,) = [t for n, t in avx2.items() if "torch eager" in n and "chosen" in n]
    assert auto_v["met"] is True and auto_a["met"] is False and auto_v["goal"] == ">= 0.9"
    assert (eager_v["goal"], eager_v["met"]) == (">= 3", False)
    assert (eager_a["goal"], eager_a["met"]) == (">= 1.5", True)
    text = "\n".join(auto_choice_lines(_auto_result(["avx2"], 0.8, 2.0)["stages"]["auto_choice"]))
    assert "(avx2)" in text and "**onnxruntime-fp32**" in text and "onnxruntime-int8" in text

"""``--engine auto`` on CPU decides on this host (stream.engines.auto_choice, issue 17 item 1).

No wall-clock figure is asserted: timing goes through an injected measure that returns fixed
seconds and counts its calls, and the agreement check runs on fixed frames. The engines are real
ONNX Runtime sessions on a hand-made graph (per-channel mean -> logits, no torch export), or fakes
whose logits the test sets. Every decision is cached under tmp_path (``$PAGKD_CACHE``).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from engine_fixtures import mean_graph

from stream import host
from stream.engines import EngineError, ModelSource, build_engine
from stream.engines import auto_choice as ac

SIZE, K = 16, 3
INT8_FIRST = [("onnxruntime", {"precision": "int8"}), ("onnxruntime", {"precision": "fp32"}),
              ("torch", {"precision": "fp32"})]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAGKD_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def tiny(tmp_path):
    """A student with an fp32 graph and an 'int8' graph beside it (the same graph: agreement 1)."""
    fp32, int8 = tmp_path / "tiny.onnx", tmp_path / "tiny.int8.onnx"
    mean_graph(fp32, SIZE)
    mean_graph(int8, SIZE)
    meta = {"input_size": [SIZE, SIZE], "class_names": ["a", "b", "c"], "num_classes": K,
            "mean": [0.5] * 3, "std": [0.25] * 3}
    return ModelSource(meta=meta, name="tiny", onnx=fp32, int8_onnx=int8, _hash="1" * 16)


def _frames(n=24, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, 3, SIZE, SIZE)).astype(np.float32)
    return x, {"count": n, "from": "synthesised", "why": "test"}


class Measure:
    """Fixed seconds per image for each precision, and a count of the calls."""

    def __init__(self, int8=1e-3, fp32=3e-3):
        self.cost, self.calls = {"int8": int8, "fp32": fp32}, 0

    def __call__(self, engine, x, calls):
        self.calls += 1
        return self.cost[engine.precision] * calls * len(x)


@pytest.fixture
def measured(monkeypatch):
    m = Measure()
    monkeypatch.setattr(ac, "time_calls", m)
    monkeypatch.setattr(ac, "probe_frames", lambda meta: _frames())
    return m


def _auto(source, lines, **kw):
    return build_engine("auto", source, device="cpu", max_batch=4, threads=1, on_choice=lines.append, **kw)


def test_first_use_probes_and_a_cache_hit_skips_measuring(tiny, measured, tmp_path):
    lines = []
    with _auto(tiny, lines) as eng:
        assert (eng.name, eng.precision) == ("onnxruntime", "int8")
    probe_calls = measured.calls
    assert probe_calls == ac.ROUNDS * 2 * 2  # rounds x candidates x batch sizes (1 and 8)
    [record] = (tmp_path / "cache" / "engine_choice").glob("tiny-*.json")
    rec = json.loads(record.read_text())
    assert rec["order"] == ["onnxruntime-int8", "onnxruntime-fp32"] and rec["batches"] == [1, 8]
    assert rec["candidates"]["onnxruntime-int8"]["agreement"] == 1.0
    assert set(rec["candidates"]["onnxruntime-fp32"]["images_per_s"]) == {"1", "8"}
    assert rec["frames"]["from"] == "synthesised"  # the record says what the agreement was measured on
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith("engine auto: onnxruntime-int8 [tiny.int8.onnx, for any host] "
                               "(int8 3.00x fp32 at batch 8")
    assert f"cached at {record}" in lines[0] and " ".join(host.isa_flags()) in lines[0]
    with _auto(tiny, lines) as eng:
        assert (eng.name, eng.precision) == ("onnxruntime", "int8")
    assert measured.calls == probe_calls  # the hit measured nothing
    assert len(lines) == 2 and f"reused {record}" in lines[1]


def test_cache_key_changes_with_model_hash_int8_graph_and_isa_flags(tiny, measured, monkeypatch):
    def path():
        return ac.record_path(tiny, ac.cache_key(tiny, tiny.int8_graph(), [1, 4], {"threads": 1}))

    monkeypatch.setattr(host, "isa_flags", lambda: ["avx2", "avx512f", "avx512_vnni"])
    base = path()
    assert path() == base
    assert ac.record_path(tiny, ac.cache_key(tiny, tiny.int8_graph(), [1, 8], {"threads": 1})) != base
    monkeypatch.setattr(host, "isa_flags", lambda: ["avx2"])  # an AVX2-only host of the same model
    avx2 = path()
    assert avx2 != base
    monkeypatch.setattr(tiny, "_hash", "2" * 16)  # other weights
    assert path() not in (base, avx2)
    monkeypatch.setattr(tiny, "_hash", "1" * 16)
    mean_graph(tiny.int8_onnx, SIZE, name="remade")  # a re-made int8 graph
    assert path() not in (base, avx2)
    # and a changed key means a new probe, not the old decision
    lines = []
    _auto(tiny, lines).close()
    calls = measured.calls
    monkeypatch.setattr(host, "isa_flags", lambda: ["avx2", "avx512f"])
    _auto(tiny, lines).close()
    assert measured.calls == 2 * calls and all("cached at" in line for line in lines)


def test_shipped_report_is_never_taken_as_this_hosts_speed(tiny, measured):
    report = tiny.int8_onnx.with_suffix(".json")  # measured elsewhere: int8 10x fp32, perfect agreement
    report.write_text(json.dumps({"speedup_b1": 10.0, "speedup_b8": 10.0, "top1_agreement": 1.0,
                                  "weights_hash": tiny.weights_hash()}))
    measured.cost["int8"] = 6e-3  # here it is half as fast as fp32
    lines = []
    with _auto(tiny, lines) as eng:
        assert (eng.name, eng.precision) == ("onnxruntime", "fp32")
    assert lines[0].startswith("engine auto: onnxruntime-fp32 (int8 [tiny.int8.onnx, for any host] "
                               "0.50x fp32 at batch 8")


def test_forced_engine_or_precision_skips_the_probe(tiny, monkeypatch, tmp_path):
    def no_probe(*a, **k):
        raise AssertionError("probed")

    monkeypatch.setattr(ac, "probe", no_probe)
    monkeypatch.setattr(ac, "choose", no_probe)
    with build_engine("onnxruntime", tiny, device="cpu", precision="int8") as eng:
        assert eng.precision == "int8"
    for precision in ("int8", "fp32"):
        with build_engine("auto", tiny, device="cpu", precision=precision) as eng:
            assert (eng.name, eng.precision) == ("onnxruntime", precision)
    assert not (tmp_path / "cache" / "engine_choice").exists()


class Fake:
    """An engine whose top-1 call is each frame's label, flipped on the frames in ``wrong``."""

    def __init__(self, precision, wrong=()):
        self.precision, self.wrong, self.closed = precision, set(wrong), False

    def infer(self, x):
        labels = (np.abs(x[:, 0, 0, 0]) * 100).astype(int) % K
        wrong = [i for i in self.wrong if i < len(x)]
        labels[wrong] = (labels[wrong] + 1) % K
        return np.eye(K, dtype=np.float32)[labels]

    def close(self):
        self.closed = True


def _choose(tiny, build, measure, lines, frames=None):
    return ac.choose(tiny, tiny.int8_graph(), INT8_FIRST, build, {"threads": 1}, lines.append,
                     measure=measure, frames=frames or _frames())


def test_accuracy_bound_rejects_an_int8_graph_that_disagrees(tiny):
    built = []

    def build(kind, extra):
        built.append(Fake(extra["precision"], wrong=[3] if extra["precision"] == "int8" else ()))
        return built[-1]

    lines, m = [], Measure()  # int8 is 3x faster, and off on 1 of 24 frames: agreement 0.958
    order = _choose(tiny, build, m, lines)
    assert order == INT8_FIRST[1:]  # fp32 first, torch as the fallback; int8 dropped
    assert all(e.closed for e in built)
    rec = json.loads(next(ac.choice_dir().glob("tiny-*.json")).read_text())
    assert rec["candidates"]["onnxruntime-int8"]["agreement"] == round(23 / 24, 4)
    assert "rejected" in rec["candidates"]["onnxruntime-int8"]
    assert "agreement 0.958 on 24 synthesised frames (< 0.97: int8 rejected)" in lines[0]


def test_a_candidate_that_fails_is_skipped_with_its_reason(tiny):
    def build_without(missing):
        def build(kind, extra):
            if extra["precision"] == missing:
                raise EngineError(f"no {missing} here\nsecond line")
            return Fake(extra["precision"])
        return build

    lines = []
    assert _choose(tiny, build_without("int8"), Measure(), lines) == INT8_FIRST[1:]
    rec = json.loads(next(ac.choice_dir().glob("tiny-*.json")).read_text())
    assert rec["candidates"]["onnxruntime-int8"] == {"skipped": "EngineError: no int8 here"}
    assert "int8 [tiny.int8.onnx, for any host] not built (EngineError: no int8 here)" in lines[0]
    # everything but int8 fails: int8 it is, its agreement unchecked (no fp32 to check it against)
    for f in ac.choice_dir().glob("*.json"):
        f.unlink()
    assert _choose(tiny, build_without("fp32"), Measure(), lines)[0] == INT8_FIRST[0]
    rec = json.loads(next(ac.choice_dir().glob("tiny-*.json")).read_text())
    assert rec["candidates"]["onnxruntime-int8"]["agreement"] is None
    # nothing builds: the list is left as it was, for the fallbacks to report, and nothing is cached
    for f in ac.choice_dir().glob("*.json"):
        f.unlink()

    def broken(kind, extra):
        raise EngineError("broken")

    assert _choose(tiny, broken, Measure(), lines) == INT8_FIRST
    assert not list(ac.choice_dir().glob("*.json"))


def test_a_corrupt_cache_file_is_ignored_and_rewritten(tiny, capsys):
    key = ac.cache_key(tiny, tiny.int8_graph(), list(ac.PROBE_BATCHES), {"threads": 1})
    path = ac.record_path(tiny, key)
    for junk in ("{not json", json.dumps({"key": key, "order": ["pickle"], "candidates": {}})):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(junk)
        m, lines = Measure(), []
        assert _choose(tiny, lambda kind, extra: Fake(extra["precision"]), m, lines)[0] == INT8_FIRST[0]
        assert m.calls > 0  # measured again
        warnings = [w for w in capsys.readouterr().err.splitlines() if w.startswith("warning:")]
        assert len(warnings) == 1 and str(path) in warnings[0] and "rewriting" in warnings[0]
        assert json.loads(path.read_text())["order"][0] == "onnxruntime-int8"


def test_probe_frames_from_the_demo_video_else_synthesised(tiny, monkeypatch):
    x, info = ac.probe_frames(tiny.meta, count=8)
    assert x.shape == (8, 3, SIZE, SIZE) and x.dtype == np.float32
    assert info["from"] == "demo-video"
    monkeypatch.setattr(ac, "DEMO_VIDEO", ac.DEMO_VIDEO.with_name("missing.mp4"))
    y, info = ac.probe_frames(tiny.meta, count=8)
    assert y.shape == x.shape and info["from"] == "synthesised" and info["why"]
    assert np.array_equal(y, ac.probe_frames(tiny.meta, count=8)[0])  # seeded: the same every time

"""int8 graphs per instruction set (issue 17): a student ships its portable ``<stem>.int8.onnx``
and variants ``<stem>.int8.<tag>.onnx``; every int8 engine runs the one made for this host.

The host is the test's: ``stream.host.isa_flags`` is patched, as tests/test_host.py reads a
cpuinfo text. Graphs are the two-node mean graph (engine_fixtures.mean_graph, no torch); graphs
that must differ get different names, so their bytes differ. No timing is asserted: auto's
measure is injected. Every cache is under tmp_path (``$PAGKD_CACHE``).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from engine_fixtures import mean_graph

from benchmarks import int8
from stream import host
from stream.engines import EngineError, ModelSource, build_engine
from stream.engines import auto_choice as ac
from stream.engines.model_source import int8_report, int8_suffix

SIZE = 16
VNNI = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]  # an AVX-512 VNNI host
AVX2 = ["avx2"]                                            # a host without VNNI
VNNI_CLASS = ["avx2", "avx512f", "avx512_vnni"]           # benchmarks.int8.VARIANT_ISA["vnni"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAGKD_CACHE", str(tmp_path / "cache"))


def _on(monkeypatch, flags):
    monkeypatch.setattr(host, "isa_flags", lambda: list(flags))


def _ship(stem, variant, for_isa, weights_hash=None, report=True):
    """An int8 graph beside the student and, unless ``report`` is False, its report."""
    graph = stem.with_name(stem.name + int8_suffix(variant))
    mean_graph(graph, SIZE, name=f"int8-{variant}")
    int8_report(graph).unlink(missing_ok=True)
    if report:
        rep = {"for_isa": for_isa, "weights_hash": weights_hash or ModelSource.from_path(stem).weights_hash()}
        int8_report(graph).write_text(json.dumps({k: v for k, v in rep.items() if v is not None}))
    return graph


@pytest.fixture
def stem(tmp_path):
    """A student (metadata, weights, fp32 graph) with the portable graph made --for-isa avx2, as
    the bundled one, and a vnni variant made for AVX-512 VNNI hosts."""
    s = tmp_path / "m" / "student"
    s.parent.mkdir()
    meta = {"format": "pagkd-student/1", "backbone": "test", "num_classes": 3, "class_names": ["a", "b", "c"],
            "input_size": [SIZE, SIZE], "mean": [0.5] * 3, "std": [0.25] * 3, "embed_dim": 8,
            "config_hash": "0", "metrics": {}, "train_command": "tests/test_int8_variants.py",
            "synthetic": True}
    s.with_suffix(".json").write_text(json.dumps(meta))
    s.with_suffix(".safetensors").write_bytes(b"weights")  # hashed, never loaded
    mean_graph(s.with_suffix(".onnx"), SIZE)
    _ship(s, None, AVX2)
    _ship(s, "vnni", VNNI_CLASS)
    return s


def _chosen(stem):
    return ModelSource.from_path(stem).int8_onnx_path().name


def test_names_have_one_owner_and_variants_are_found_beside_the_student(stem):
    assert (int8_suffix(), int8_suffix("vnni")) == (".int8.onnx", ".int8.vnni.onnx")
    assert int8_report(stem.with_name("student.int8.vnni.onnx")).name == "student.int8.vnni.json"
    with pytest.raises(ValueError, match="lower-case letters, digits or _"):
        int8_suffix("a.b")
    # neither a half-written graph nor the teacher's graph is a variant
    (stem.parent / "student.int8.amx.onnx.tmp").write_bytes(b"")
    mean_graph(stem.parent / "student.nbi.int8.onnx", SIZE)
    src = ModelSource.from_path(stem)
    assert src.int8_onnx.name == "student.int8.onnx"
    assert [p.name for p in src.int8_variants] == ["student.int8.vnni.onnx"]
    assert src.default_int8_path("vnni") == stem.parent / "student.int8.vnni.onnx"
    assert src.at_input_size((SIZE * 2, SIZE * 2)).int8_variants == ()  # graphs have their size baked in
    # any of a student's files names it, a variant's graph too (pagkd_core.student.student_stem)
    assert ModelSource.from_path(stem.parent / "student.int8.vnni.onnx").stem == src.stem


def test_a_vnni_host_runs_the_variant_and_an_avx2_host_the_portable_graph(stem, monkeypatch):
    for flags, want in ((VNNI, "student.int8.vnni.onnx"), (AVX2, "student.int8.onnx")):
        _on(monkeypatch, flags)
        assert _chosen(stem) == want
        with build_engine("onnxruntime", stem, device="cpu", precision="int8", threads=1) as eng:
            assert eng.onnx_path.name == want  # what the engine runs, not only what is chosen
    # a host whose flags are unknown (not Linux) runs the portable graph, as before variants existed
    _on(monkeypatch, [])
    assert _chosen(stem) == "student.int8.onnx"


def test_a_variant_is_run_only_where_it_fits(stem, monkeypatch):
    _ship(stem, "amx", [*VNNI_CLASS, "amx_int8"])  # names the most flags, but this host lacks amx_int8
    _on(monkeypatch, VNNI)
    assert _chosen(stem) == "student.int8.vnni.onnx"
    _on(monkeypatch, [*VNNI, "amx_tile", "amx_int8"])
    assert _chosen(stem) == "student.int8.amx.onnx"  # the most specific fitting one
    # as many flags as the portable graph: the portable one; no report (which hosts?): never run
    _ship(stem, "vnni", ["avx512_vnni"])
    _ship(stem, "amx", None, report=False)
    _on(monkeypatch, VNNI)
    with pytest.warns(UserWarning, match="no report"):
        assert _chosen(stem) == "student.int8.onnx"
    stem.with_name("student.int8.amx.onnx").unlink()
    # calibrated for other weights: never run, as for the portable graph
    _ship(stem, "vnni", VNNI_CLASS, weights_hash="0" * 16)
    with pytest.warns(UserWarning, match="calibrated for other weights"):
        assert _chosen(stem) == "student.int8.onnx"
    # only a variant, and it does not fit: no int8 graph for this host
    _ship(stem, "vnni", VNNI_CLASS)
    stem.with_name("student.int8.onnx").unlink()
    _on(monkeypatch, AVX2)
    assert ModelSource.from_path(stem).int8_onnx_path() is None
    with pytest.raises(EngineError, match="no calibrated int8 graph"):
        build_engine("onnxruntime", stem, device="cpu", precision="int8")


def test_auto_probes_the_hosts_graph_keys_its_decision_by_it_and_names_it(stem, monkeypatch):
    per_image = {"int8": 1e-3, "fp32": 3e-3}  # seconds: int8 3x faster on every host
    monkeypatch.setattr(ac, "time_calls", lambda eng, x, calls: calls * len(x) * per_image[eng.precision])
    x = np.random.default_rng(0).normal(size=(24, 3, SIZE, SIZE)).astype(np.float32)
    monkeypatch.setattr(ac, "probe_frames", lambda meta: (x, {"count": len(x), "from": "synthesised"}))
    keys, lines = {}, []
    for name, flags, want in (("vnni", VNNI, "student.int8.vnni.onnx"), ("avx2", AVX2, "student.int8.onnx")):
        _on(monkeypatch, flags)
        src = ModelSource.from_path(stem)
        keys[name] = ac.cache_key(src, src.int8_graph(), list(ac.PROBE_BATCHES), {})
        assert keys[name]["int8_graph"]["file"] == want
        with build_engine("auto", src, device="cpu", threads=1, on_choice=lines.append) as eng:
            assert (eng.precision, eng.onnx_path.name) == ("int8", want)
    assert keys["vnni"]["int8_graph"]["sha256"] != keys["avx2"]["int8_graph"]["sha256"]
    assert ac.record_path(src, keys["vnni"]) != ac.record_path(src, keys["avx2"])
    assert lines[0].startswith("engine auto: onnxruntime-int8 "
                               "[student.int8.vnni.onnx, for avx2 avx512f avx512_vnni] (")
    assert lines[1].startswith("engine auto: onnxruntime-int8 [student.int8.onnx, for avx2] (")


class NothingToMeasure:
    """benchmarks.int8's data without an image set: random calibration frames, no labelled images
    (the command's path for a video), so the real quantiser runs and nothing is timed."""

    def __init__(self, calib, *args):
        self.calib, self.eval, self.splits, self.modality = calib, None, None, "WLI"

    def calibration(self, meta):
        return np.random.default_rng(0).normal(size=(4, 3, SIZE, SIZE)).astype(np.float32)

    def evaluation(self, meta):
        return None


def test_int8_command_writes_a_variant_beside_the_student(stem, monkeypatch, capsys):
    monkeypatch.setattr(int8, "HeldOut", NothingToMeasure)
    graph, report = stem.with_name("student.int8.vnni.onnx"), stem.with_name("student.int8.vnni.json")
    report.write_text(json.dumps({"weights_hash": "0" * 16, "for_isa": VNNI_CLASS}))  # a stale one
    argv = ["--model", str(stem.with_suffix(".json")), "--calib", "clip.mp4", "--variant", "vnni"]
    assert int8.main(argv) == 0
    rec = json.loads(report.read_text())  # re-written: for the class vnni names, with this student's weights
    assert (rec["int8"], rec["variant"], rec["for_isa"]) == (str(graph), "vnni", VNNI_CLASS)
    assert rec["reduce_range"] is False and rec["weights_hash"] == ModelSource.from_path(stem).weights_hash()
    assert "warning" not in capsys.readouterr().err
    _on(monkeypatch, VNNI)
    assert _chosen(stem) == graph.name
    # flags that tie with the portable graph's: made, but the command says the runtime would not run it
    assert int8.main([*argv, "--for-isa", "avx512_vnni"]) == 0
    assert "would run student.int8.onnx, for avx2, not student.int8.vnni.onnx" in capsys.readouterr().err
    # refused in one line: a tag without default flags, a flag stream.host does not know, a bad tag
    for extra, why in ((["--variant", "fast"], "--variant fast needs --for-isa FLAGS"),
                       (["--for-isa", "avx512vnni"], "unknown flags avx512vnni"),
                       (["--variant", "a.b", "--for-isa", "avx2"], "lower-case letters")):
        assert int8.main([*argv[:4], *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert why in err and "\n" not in err
    with pytest.raises(SystemExit):
        int8.main([*argv, "--out", str(graph)])  # one destination

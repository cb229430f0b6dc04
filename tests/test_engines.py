"""Engines agree with torch eager on the same inputs; selection, errors and TensorRT keys.

The student is a tiny network trained for a few steps on a synthetic toy task (engine_fixtures)
so that its logits have real margins. Tolerances:
  * torch eager (channels_last / contiguous) and ONNX Runtime fp32: max |diff| <= 1e-4 * max|logit|
  * torch bf16 (CPU): <= 5e-2 * max|logit| and >= 95% top-1 agreement
  * ONNX Runtime int8 (static QDQ, 64 calibration frames): >= 90% top-1 agreement and
    max |diff| <= 0.25 * max|logit| (int8 activations carry ~1% error per layer)
"""
from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch
from engine_fixtures import SIZE, normalise, shared_student, toy_images

from stream.engines import EngineError, ModelSource, auto_candidates, build_engine, list_engines
from stream.engines import tensorrt_engine as trt


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    # a private copy: the int8 test writes <stem>.int8.onnx next to it
    src = shared_student()
    dst = tmp_path_factory.mktemp("student")
    for f in src.parent.glob("toy.*"):
        shutil.copy(f, dst / f.name)
    return dst / "toy.json"


@pytest.fixture(scope="module")
def batch():
    imgs, labels = toy_images(24, seed=11)
    return normalise(imgs), labels


@pytest.fixture(scope="module")
def reference(student, batch):
    from pagkd_core.student import load_student
    model, _ = load_student(student)
    with torch.no_grad():
        return model(torch.from_numpy(batch[0])).numpy()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAGKD_CACHE", str(tmp_path / "cache"))


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("channels_last", [True, False])
def test_torch_eager_matches_reference(student, batch, reference, channels_last):
    with build_engine("torch", student, device="cpu", max_batch=8, channels_last=channels_last, threads=1) as eng:
        out = eng.infer(batch[0])  # 24 items: three chunks of max_batch
        assert out.shape == (24, 2) and out.dtype == np.float32
        assert _rel(out, reference) <= 1e-4
        assert np.allclose(eng.infer(torch.from_numpy(batch[0][:3])), reference[:3], atol=1e-4)


def test_torch_bf16_close(student, batch, reference):
    with build_engine("torch", student, device="cpu", precision="bf16", max_batch=8) as eng:
        out = eng.infer(batch[0])
    assert eng.precision == "bf16"
    assert _rel(out, reference) <= 5e-2
    assert (out.argmax(1) == reference.argmax(1)).mean() >= 0.95


def test_onnxruntime_fp32_matches_reference(student, batch, reference):
    with build_engine("onnxruntime", student, device="cpu", max_batch=8, threads=1) as eng:
        assert eng.onnx_path.name == "toy.onnx"  # the exported sibling, not a re-export
        out = eng.infer(batch[0])
    assert _rel(out, reference) <= 1e-4


def test_onnxruntime_threads_and_spinning(student):
    from stream.engines.onnxruntime_engine import usable_cores
    with build_engine("onnxruntime", student, device="cpu") as eng:
        info = eng.describe()
        so = eng.session.get_session_options()
        assert info["threads"] == usable_cores() and info["spinning"] is False
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with build_engine("onnxruntime", student, device="cpu", threads=1, spinning=True) as eng:
        so = eng.session.get_session_options()
        assert so.intra_op_num_threads == 1
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    with pytest.raises(EngineError, match="threads"):
        build_engine("onnxruntime", student, device="cpu", threads=0)


def test_int8_options_formats_and_histogram_calibration(student, batch, reference, tmp_path):
    import onnx

    from benchmarks.int8 import QuantOptions, quantize
    with pytest.raises(ValueError, match="fmt"):
        QuantOptions(fmt="qdqq")
    with pytest.raises(ValueError, match="float_layers"):
        QuantOptions(float_layers="middle")
    src = ModelSource.from_path(student)
    calib, _ = toy_images(13, seed=5)  # not a multiple of the calibration batch: a short last batch
    for opts in (QuantOptions(fmt="qoperator", float_layers="none"),
                 QuantOptions(method="minmax", per_channel=False, reduce_range=False)):
        out = quantize(src, normalise(calib), tmp_path / f"{opts.fmt}-{opts.method}.int8.onnx", opts)
        ops = {n.op_type for n in onnx.load(str(out)).graph.node}
        if opts.fmt == "qoperator":
            assert "QLinearConv" in ops and "Conv" not in ops
        else:  # QDQ: float Conv between Q/DQ pairs, fused into QLinearConv when the session loads
            assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
        with build_engine("onnxruntime", src, device="cpu", precision="int8", onnx_path=out) as eng:
            q = eng.infer(batch[0])
        assert (q.argmax(1) == reference.argmax(1)).mean() >= 0.9


def test_int8_keeps_the_input_convolution_and_classifier_in_float(student, tmp_path):
    """The default graph reads the input with a float Conv and writes the logits with a float Gemm
    (docs/engines.md, int8 settings); ``--float none`` quantises both ends too."""
    import onnx

    from benchmarks.int8 import QuantOptions, quantize
    src = ModelSource.from_path(student)
    calib, _ = toy_images(16, seed=5)

    def ends(opts):
        g = onnx.load(str(quantize(src, normalise(calib), tmp_path / f"{opts.float_layers}.int8.onnx", opts))).graph
        reader = next(n for n in g.node if g.input[0].name in n.input)
        writer = next(n for n in g.node if g.output[0].name in n.output)
        return reader.op_type, writer.op_type, sum(n.op_type == "DequantizeLinear" for n in g.node)

    first, last, dq = ends(QuantOptions())
    assert (first, last) == ("Conv", "Gemm") and dq > 0  # the layers between stay int8
    assert ends(QuantOptions(float_layers="none"))[:2] == ("QuantizeLinear", "DequantizeLinear")


def test_int8_reduce_range_by_instruction_set():
    """7-bit weights only for x86 hosts without VNNI (16-bit saturating sums there); the flags are
    those of the host the graph is for, this host's unless given."""
    from benchmarks.int8 import QuantOptions, reduce_range_for
    from stream import host
    assert reduce_range_for(["avx2"], "x86_64") and reduce_range_for(["avx2", "avx512f"], "AMD64")
    assert not reduce_range_for(["avx2", "avx512f", "avx512_vnni"], "x86_64")
    assert not reduce_range_for(["avx2", "avx_vnni"], "x86_64") and not reduce_range_for([], "aarch64")
    assert QuantOptions().for_isa == tuple(host.isa_flags())
    assert QuantOptions().reduce_range == reduce_range_for(host.isa_flags())
    assert QuantOptions(for_isa=("avx2",), reduce_range=False).reduce_range is False  # an explicit choice stands


def test_int8_end_layers_found_through_moves():
    """Which nodes are the graph's ends is read from its structure (any student's export): through
    ops that only move values (a layout Transpose in front, Flatten and Softmax behind)."""
    from onnx import TensorProto, helper

    from benchmarks.int8 import end_layers
    f32 = TensorProto.FLOAT
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], name="t", perm=[0, 1, 3, 2]),
             helper.make_node("Conv", ["xt", "w1"], ["c1"], name="stem"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="body"),
             helper.make_node("GlobalAveragePool", ["c2"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "wf"], ["logits"], name="head", transB=1),
             helper.make_node("Softmax", ["logits"], ["probs"], name="softmax")]
    inits = [helper.make_tensor(n, f32, d, [0.0] * int(np.prod(d)))
             for n, d in (("w1", [4, 3, 3, 3]), ("w2", [4, 4, 3, 3]), ("wf", [2, 4]))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f32, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("probs", f32, [1, 2])], inits)
    assert end_layers(graph) == {"first": ["stem"], "last": ["head"]}


def test_source_at_another_input_size(student, batch, reference, tmp_path):
    src = ModelSource.from_path(student)
    assert src.at_input_size(tuple(src.meta["input_size"])) is src
    big = src.at_input_size((SIZE * 2, SIZE * 2))
    assert big.meta["input_size"] == [SIZE * 2] * 2 and big.onnx is None and big.int8_onnx is None
    assert src.meta["input_size"] == [SIZE, SIZE]  # the original is untouched
    # its int8 graph never lands next to the student, where auto would take it for the trained size
    assert big.default_int8_path().parent == tmp_path / "cache" / "onnx"
    assert big.weights_hash() != src.weights_hash()
    x = np.repeat(np.repeat(batch[0][:4], 2, axis=2), 2, axis=3)
    with build_engine("onnxruntime", big, device="cpu", max_batch=4) as eng:
        assert eng.infer(x).shape == (4, 2)


def test_onnx_exported_on_demand_for_in_memory_model(batch, tmp_path):
    torch.manual_seed(0)
    from pagkd_core.models import build_model
    model = build_model("test_resnet", 2, embed_dim=8).eval()
    # non-square input, exported on demand into the cache
    meta = {"class_names": ["a", "b"], "input_size": [48, SIZE], "mean": [0.5] * 3, "std": [0.25] * 3}
    src = ModelSource.from_module(model, meta, name="mem")
    x = np.ascontiguousarray(batch[0][:5, :, :48])
    with build_engine("onnxruntime", src, device="cpu", max_batch=4) as eng:
        assert eng.onnx_path.parent == tmp_path / "cache" / "onnx"
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert _rel(eng.infer(x), ref) <= 1e-4


def test_int8_calibrated_close_and_selected_by_auto(student, batch, reference, monkeypatch):
    from benchmarks.int8 import compare, quantize
    src = ModelSource.from_path(student)
    calib, _ = toy_images(64, seed=3)
    out = quantize(src, normalise(calib))
    assert out.name == "toy.int8.onnx" and out.is_file()
    with build_engine("onnxruntime", student, device="cpu", precision="int8", max_batch=8) as eng:
        q = eng.infer(batch[0])
    assert (q.argmax(1) == reference.argmax(1)).mean() >= 0.9
    assert _rel(q, reference) <= 0.25
    # auto on CPU probes both graphs on this host (stream.engines.auto_choice; the measure and the
    # frames are injected: no timing in tests) and keeps int8 where it is faster and agrees with fp32
    from stream.engines import auto_choice
    with build_engine("onnxruntime", student, device="cpu", precision="fp32", max_batch=8) as eng:
        agreement = float((q.argmax(1) == eng.infer(batch[0]).argmax(1)).mean())
    want = "int8" if agreement >= auto_choice.AGREEMENT_BOUND else "fp32"
    monkeypatch.setattr(auto_choice, "probe_frames", lambda meta: (batch[0], {"count": len(batch[0]), "from": "toy"}))
    monkeypatch.setattr(auto_choice, "time_calls",
                        lambda eng, x, calls: calls * len(x) * (1.0 if eng.precision == "int8" else 3.0))
    lines = []
    with build_engine("auto", student, device="cpu", on_choice=lines.append) as eng:
        assert (eng.name, eng.precision) == ("onnxruntime", want)
    assert len(lines) == 1 and f"agreement {agreement:.3f} on {len(batch[0])} toy frames" in lines[0]
    res = compare(src, batch[0], batch[1], seconds=0.05, batches=(1,))
    assert {"top1_agreement", "auc_fp32", "auc_int8", "fps_int8_b1", "speedup_b1"} <= set(res)
    # the report beside the graph (measured wherever it was calibrated) is not this host's speed:
    # a fresh probe decides as before, though the report says int8 is slower
    report = out.with_suffix(".json")
    report.write_text(json.dumps({"speedup_b1": 0.7, "speedup_b8": 0.8, "top1_agreement": 1.0}))
    for f in auto_choice.choice_dir().glob("*.json"):
        f.unlink()
    with build_engine("auto", student, device="cpu", on_choice=lines.append) as eng:
        assert eng.precision == want
    assert len(lines) == 2 and "cached at" in lines[1]
    # a graph calibrated for other weights (the student re-exported over the old one) is never used
    report.write_text(json.dumps({"speedup_b1": 1.3, "top1_agreement": 0.99, "weights_hash": "0" * 16}))
    with pytest.warns(UserWarning, match="calibrated for other weights"):
        assert ModelSource.from_path(student).int8_onnx_path() is None
    report.write_text(json.dumps({"speedup_b1": 1.3, "weights_hash": src.weights_hash()}))
    assert ModelSource.from_path(student).int8_onnx_path() == out
    report.unlink()


def test_auto_on_cpu_without_int8(student, tmp_path):
    for f in student.parent.glob("toy.*"):
        if not f.name.endswith(".int8.onnx"):
            shutil.copy(f, tmp_path / f.name)
    with build_engine("auto", tmp_path / "toy.safetensors", device="cpu") as eng:
        assert (eng.name, eng.precision) == ("onnxruntime", "fp32")
    assert auto_candidates("cpu", ModelSource.from_path(tmp_path / "toy"))[0] == ("onnxruntime", {"precision": "fp32"})
    with build_engine("auto", tmp_path / "toy.json", device="cpu", precision="bf16") as eng:
        assert (eng.name, eng.precision) == ("torch", "bf16")  # a precision only torch runs


def test_auto_falls_back_and_reports(student, monkeypatch):
    from stream import engines
    monkeypatch.setattr(engines, "auto_candidates", lambda *a, **k: [("tensorrt", {}), ("torch", {})])
    notes = []
    if importlib.util.find_spec("torch_tensorrt") is None:
        with build_engine("auto", student, device="cpu", on_fallback=notes.append) as eng:
            assert eng.name == "torch"
        assert len(notes) == 1 and "tensorrt" in notes[0]


def test_auto_on_cuda_order(monkeypatch):
    from stream import engines
    monkeypatch.setattr(engines.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(engines, "ort_has_cuda", lambda: False)
    assert [k for k, _ in auto_candidates("cuda")] == ["torch"]
    monkeypatch.setattr(engines, "ort_has_cuda", lambda: True)
    monkeypatch.setattr(engines.importlib.util, "find_spec", lambda name: object())
    assert [k for k, _ in auto_candidates("cuda")] == ["tensorrt", "onnxruntime", "torch"]


def test_bad_inputs_and_options(student):
    with build_engine("torch", student, device="cpu", max_batch=2) as eng:
        with pytest.raises(EngineError, match=r"expected a \(N,3,64,64\)"):
            eng.infer(np.zeros((1, 3, 32, 32), np.float32))
        assert eng.infer(np.zeros((0, 3, SIZE, SIZE), np.float32)).shape == (0, 2)
    with pytest.raises(EngineError, match="unknown engine"):
        build_engine("tflite", student)
    with pytest.raises(EngineError, match="CUDA"):
        build_engine("torch", student, device="cpu", cuda_graphs=True)
    with pytest.raises(EngineError, match="bf16"):
        build_engine("torch", student, device="cpu", precision="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="--device cpu"):
            build_engine("torch", student, device="cuda")
    with pytest.raises(FileNotFoundError, match="no student metadata"):
        build_engine("torch", student.parent / "missing.json")


def test_int8_missing_is_a_clear_error(student, tmp_path):
    for f in student.parent.glob("toy.*"):
        if not f.name.endswith(".int8.onnx"):
            shutil.copy(f, tmp_path / f.name)
    with pytest.raises(EngineError, match="benchmarks.int8"):
        build_engine("onnxruntime", tmp_path / "toy.json", device="cpu", precision="int8")


@pytest.mark.skipif(importlib.util.find_spec("torch_tensorrt") is not None, reason="torch-tensorrt installed")
def test_tensorrt_missing_is_a_clear_error(student):
    assert "tensorrt" not in list_engines(available_only=True)
    with pytest.raises(EngineError, match=r"pip install -e '\.\[gpu\]'"):
        build_engine("tensorrt", student, device="cpu")


def test_tensorrt_shape_profile():
    p = trt.ShapeProfile.for_batch((224, 224), opt_batch=4, max_batch=8)
    assert p.min == (1, 3, 224, 224) and p.opt == (4, 3, 224, 224) and p.max == (8, 3, 224, 224)
    assert p.accepts((1, 3, 224, 224)) and p.accepts((8, 3, 224, 224))
    assert not p.accepts((9, 3, 224, 224)) and not p.accepts((4, 3, 256, 224))
    with pytest.raises(EngineError):
        trt.ShapeProfile.for_batch((224, 224), opt_batch=9, max_batch=8)
    with pytest.raises(EngineError):
        trt.ShapeProfile.for_batch((224, 224), opt_batch=0, max_batch=8)


def test_tensorrt_cache_key_covers_everything(tmp_path):
    prof = trt.ShapeProfile.for_batch((224, 224), 4, 8)
    vers = {"torch": "2.11.0", "torch_tensorrt": "2.11.0", "tensorrt": "10.9", "cuda": "12.8", "cudnn": "9"}
    base = trt.cache_key("abc", prof, "fp16", "NVIDIA H100 sm90", vers)
    assert base == trt.cache_key("abc", prof, "fp16", "NVIDIA H100 sm90", dict(vers))  # stable
    variants = [
        trt.cache_key("abd", prof, "fp16", "NVIDIA H100 sm90", vers),
        trt.cache_key("abc", trt.ShapeProfile.for_batch((224, 224), 8, 8), "fp16", "NVIDIA H100 sm90", vers),
        trt.cache_key("abc", trt.ShapeProfile.for_batch((256, 256), 4, 8), "fp16", "NVIDIA H100 sm90", vers),
        trt.cache_key("abc", prof, "fp32", "NVIDIA H100 sm90", vers),
        trt.cache_key("abc", prof, "fp16", "NVIDIA H200 sm90", vers),
        trt.cache_key("abc", prof, "fp16", "NVIDIA H100 sm90", {**vers, "tensorrt": "10.10"}),
    ]
    assert len({base, *variants}) == 7
    assert trt.engine_cache_path(base, tmp_path) == tmp_path / f"{base}.ep"
    versions = trt.runtime_versions()
    assert versions["torch"] == torch.__version__ and "torch_tensorrt" in versions
    json.dumps(versions)


def test_weights_hash_tracks_weights(student, tmp_path):
    a = ModelSource.from_path(student).weights_hash()
    assert a == ModelSource.from_path(student.with_suffix(".safetensors")).weights_hash()
    for f in student.parent.glob("toy.*"):
        shutil.copy(f, tmp_path / f.name)
    w = tmp_path / "toy.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 1
    w.write_bytes(bytes(data))
    assert ModelSource.from_path(tmp_path / "toy").weights_hash() != a


def test_cache_key_includes_the_input_transpose_and_keeps_older_keys():
    from pagkd_core.models import build_model
    model = build_model("test_resnet", 2, embed_dim=8)
    meta = {"class_names": ["a", "b"], "input_size": [32, 32], "mean": [0.5] * 3, "std": [0.25] * 3}
    plain = ModelSource.from_module(model, meta).weights_hash()
    # a student written before transpose_hw existed keeps its key (its cached graphs, int8 reports)
    assert ModelSource.from_module(model, {**meta, "transpose_hw": False}).weights_hash() == plain
    assert ModelSource.from_module(model, {**meta, "transpose_hw": True}).weights_hash() != plain
    bundled = ModelSource.from_path("stream/assets/student.json")
    report = bundled.int8_onnx.with_suffix(".json") if bundled.int8_onnx else None
    if report is not None and report.is_file():
        assert bundled.weights_hash() == json.loads(report.read_text())["weights_hash"]
    with pytest.raises(ValueError, match="transpose_hw must be true or false"):
        ModelSource.from_module(model, {**meta, "transpose_hw": "yes"})


def test_int8_calibration_frames_are_laid_out_as_the_student_reads_them(tmp_path):
    from PIL import Image
    from stream_media import scope_frame, write_video

    from benchmarks.int8 import calibration_frames
    meta = {"class_names": ["hyperplastic", "adenoma"], "input_size": [SIZE, SIZE], "mean": [0.5] * 3,
            "std": [0.25] * 3}
    transposed = {**meta, "transpose_hw": True}
    video = write_video(tmp_path / "v.mp4", n=6, w=160, h=128)
    plain = calibration_frames(video, meta, count=3)  # through the runtime's preprocessor
    assert plain.shape == (3, 3, SIZE, SIZE)
    np.testing.assert_array_equal(calibration_frames(video, transposed, count=3), plain.transpose(0, 1, 3, 2))
    for i, cls in enumerate(["hyperplastic", "adenoma"] * 2):  # training images, the trainer's resize
        (tmp_path / "img" / "WLI" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(scope_frame(i, 96, 80, field="rect")).save(tmp_path / "img" / "WLI" / cls / f"l{i}_0.png")
    plain = calibration_frames(tmp_path / "img", meta, count=4)
    assert plain.shape == (4, 3, SIZE, SIZE)
    np.testing.assert_array_equal(calibration_frames(tmp_path / "img", transposed, count=4),
                                  plain.transpose(0, 1, 3, 2))


@pytest.mark.slow
def test_torch_compile_matches_reference(student, batch, reference):
    with build_engine("torch", student, device="cpu", max_batch=8, compile=True) as eng:
        assert eng.precision == "fp32+compile"
        assert _rel(eng.infer(batch[0][:8]), reference[:8]) <= 1e-4


def test_gpu_selfcheck_runs_everywhere(tmp_path):
    from benchmarks import gpu_selfcheck
    out = tmp_path / "check.json"
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the self-check is run as its own command on GPU hosts")
    assert gpu_selfcheck.main(["--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["status"] == "no CUDA, skipped" and rep["cuda"] is False
    assert rep["environment"]["versions"]["torch"] == torch.__version__
    assert gpu_selfcheck.skip_reason("onnxruntime") is not None  # CPU build of onnxruntime here
    if importlib.util.find_spec("torch_tensorrt") is None:
        assert "torch-tensorrt" in gpu_selfcheck.skip_reason("tensorrt")


def test_gpu_selfcheck_dry_run_on_cpu(student, tmp_path):
    """The comparison/timing code path the GPU run relies on, exercised with the CPU engines."""
    from benchmarks import gpu_selfcheck
    out = tmp_path / "dry.json"
    rc = gpu_selfcheck.main(["--device", "cpu", "--model", str(student), "--iters", "2",
                             "--batches", "1,2", "--only", "torch-fp32,torch-fp16,onnxruntime-fp32,tensorrt-fp16",
                             "--json", str(out)])
    rep = json.loads(out.read_text())
    assert rc == 0 and rep["status"] == "ok", rep
    rows = {r["engine"]: r for r in rep["results"]}
    assert set(rows) == {"torch-fp32", "onnxruntime-fp32"}  # fp16 and TensorRT are CUDA-only
    assert rows["torch-fp32"]["max_abs_diff"] < 1e-4 and rows["onnxruntime-fp32"]["top1_agreement"] == 1.0
    assert set(rows["torch-fp32"]["timing"]) == {"b1", "b2"}


def _image_folder(root):
    """48 toy pictures of 16 lesions in the generic layout <root>/WLI/<class>/<lesion>_<n>.png."""
    from PIL import Image
    imgs, labels = toy_images(48, seed=21)
    for i, (img, lab) in enumerate(zip(imgs, labels)):
        d = root / "WLI" / ["hyperplastic", "adenoma"][lab]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.transpose(1, 2, 0)).save(d / f"les{i % 16:02d}_{i}.png")
    return root


def test_int8_command_on_an_image_folder(student, tmp_path):
    """The calibration command on the generic layout <root>/WLI/<class>/<lesion>_<n>.png."""
    from benchmarks import int8
    _image_folder(tmp_path / "data")
    out = tmp_path / "m" / "toy.int8.onnx"
    out.parent.mkdir()
    rc = int8.main(["--model", str(student), "--calib", str(tmp_path / "data"), "--count", "16", "--for-isa", "avx2",
                    "--seconds", "0.05", "--out", str(out), "--json", str(tmp_path / "r.json")])
    assert rc == 0 and out.is_file()
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["calib_frames"] == 16 and rep["top1_agreement"] >= 0.9 and "auc_drop" in rep
    # the record names the settings, the CPU's instruction sets and what auto's probe frames give
    assert rep["float_layers"] == "ends" and rep["method"] == "percentile" and rep["for_isa"] == ["avx2"]
    assert rep["reduce_range"] == int8.reduce_range_for(["avx2"])  # True on x86: made for hosts without VNNI
    assert isinstance(rep["isa"], list) and rep["cpu"]
    assert 0 <= rep["probe_agreement"] <= 1 and rep["probe_accepts"] == (rep["probe_agreement"] >= 0.97)
    assert json.loads(out.with_suffix(".json").read_text()) == rep  # the sidecar auto selection reads
    assert int8.main(["--model", str(student), "--calib", str(tmp_path / "nothing")]) == 2


def test_int8_sweep_writes_the_settings_table(student, tmp_path):
    """The settings sweep (docs/engines.md, int8 settings) on a toy folder: every row judged for
    each seed, timed once, written as JSON and a markdown table; an unknown row is refused."""
    from benchmarks import int8_sweep
    from stream import host
    data = _image_folder(tmp_path / "data")
    args = ["--model", str(student), "--calib", str(data), "--count", "16", "--seconds", "0.02",
            "--out", str(tmp_path / "sweep")]
    assert int8_sweep.main([*args, "--rows", "before,nothing"]) == 2
    assert int8_sweep.main([*args, "--rows", "before,ends_pct", "--seeds", "0,1"]) == 0
    res = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [r["row"] for r in res["rows"]] == ["before", "ends_pct"] and res["isa"] == host.isa_flags()
    for r in res["rows"]:
        assert len(r["agreement_heldout"]) == len(r["agreement_demo"]) == 2 and r["speedup_b8"] > 0
    assert "| ends_pct |" in (tmp_path / "sweep" / "sweep.md").read_text()


def test_calibration_frames_from_a_video(student, tmp_path):
    """Frames of a real H.264 file, through the runtime's preprocessor, as calibration data."""
    from fractions import Fraction

    import av

    from benchmarks.int8 import calibration_frames
    imgs, _ = toy_images(30, seed=4)
    path = tmp_path / "calib.mp4"
    with av.open(str(path), "w") as box:
        s = box.add_stream("libx264", rate=Fraction(30, 1))
        s.width, s.height, s.pix_fmt = 128, 96, "yuv420p"
        for i, img in enumerate(imgs):
            rgb = np.zeros((96, 128, 3), np.uint8)
            rgb[16:80, 32:96] = img.transpose(1, 2, 0)  # the picture inside a black border
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 30)
            box.mux(s.encode(frame))
        box.mux(s.encode())
    meta = ModelSource.from_path(student).meta
    frames = calibration_frames(path, meta, count=8)
    assert frames.shape == (8, 3, SIZE, SIZE) and frames.dtype == np.float32
    # the black border is cropped away: no frame is dominated by black (normalised black ~ -2)
    assert (frames.mean(axis=(1, 2, 3)) > -1.0).all()

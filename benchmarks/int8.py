"""int8 static quantisation (QDQ) for the ONNX Runtime CPU engine, calibrated on real frames.

    python -m benchmarks.int8 --model runs/student.json --calib data/synth --eval data/synth_test

Calibration frames are training images (the synthetic image set's WLI pictures, resized and
normalised like the trainer does) or frames of a video (through the runtime's preprocessor);
either way laid out as the student reads them (transposed for a ``transpose_hw`` student).
The int8 graph is written next to the student as ``<stem>.int8.onnx`` where ``build_engine``
finds it (``--out`` elsewhere), or with ``--variant TAG`` as ``<stem>.int8.<TAG>.onnx``: a graph
for the hosts ``--for-isa`` names, which the runtime runs there instead (``ModelSource.int8_graph``,
docs/engines.md "int8 graphs per instruction set"). Its accuracy cost against fp32 (top-1
agreement on the held-out images and on the frames ``--engine auto``'s probe uses, logit error,
AUC) and both speeds are measured in the same run and printed/written as JSON, also beside the
graph as a record of how, from what, for which hosts and on which CPU it was made (``auto``
measures speed and agreement again on the host it runs on). The runtime itself only runs the
graph; making and judging it is measurement, hence here. ``QuantOptions`` holds the settings;
``python -m benchmarks.int8_sweep`` measured them.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

# HeldOut, calibration_frames and split_lesions are imported from here by benchmarks.fps_model and tests
from benchmarks.int8_data import HeldOut, calibration_frames, split_lesions  # noqa: F401
from benchmarks.int8_measure import accuracy_cost, probe_agreement, rates
from stream import host
from stream.engines.model_source import ModelSource, int8_report

_METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}


class FrameBatches(CalibrationDataReader):
    """Feeds normalised (N,3,H,W) frames to the calibrator in fixed-size batches."""

    def __init__(self, frames: np.ndarray, input_name: str = "input", batch: int = 8):
        self.frames, self.input_name, self.batch = frames, input_name, batch
        self._i = 0

    def get_next(self):
        if self._i >= len(self.frames):
            return None
        x = self.frames[self._i:self._i + self.batch]
        self._i += self.batch
        return {self.input_name: np.ascontiguousarray(x, np.float32)}

    def rewind(self) -> None:
        self._i = 0


# -- quantise -----------------------------------------------------------------------------
_FORMATS = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
_TYPES = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
_FLOAT_LAYERS = {"none": (), "first": ("first",), "last": ("last",), "ends": ("first", "last")}
# Ops whose weights the quantiser turns into int8 (the layers --float keeps), and ops that only
# move or reshape values between such a layer and the graph's input or output.
_WEIGHTED = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
_PASS_THROUGH = {"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Cast", "Softmax"}


# Instruction sets whose u8 x s8 dot products add into 32 bits (VPDPBUSD, AMX tiles): nothing
# saturates. Without them ONNX Runtime's x86 u8 x s8 kernels (VPMADDUBSW) add pairs of products
# in saturating 16 bits, which full-range (8-bit) weights can overflow (its quantisation docs
# name reduce_range or u8 x u8 as the remedy).
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def reduce_range_for(isa, machine: str | None = None) -> bool:
    """Whether a graph for a host with instruction-set flags ``isa`` gets 7-bit weights: on x86
    without VNNI, where they keep every 16-bit sum exact. Measured on a VNNI host only
    (docs/engines.md, "int8 settings"): there 7-bit weights cost no speed but 0.5-1 point of
    top-1 agreement, so hosts that sum in 32 bits keep 8 bits."""
    machine = (machine or platform.machine()).lower()
    return machine in ("x86_64", "amd64", "i386", "i686") and not any(f in isa for f in VNNI_FLAGS)


# ``--for-isa`` of a variant by its tag, when not given: every flag of the host class, as the
# default (this host's flags) records them. The runtime runs the fitting graph that names the most
# flags, ties going to the portable one, so a variant must name more than the portable graph's
# ``avx2`` to be run on the hosts it is for; reduce_range follows from the flags (reduce_range_for).
VARIANT_ISA = {"vnni": ("avx2", "avx512f", "avx512_vnni")}


@dataclass(frozen=True)
class QuantOptions:
    """How the int8 graph is made. Defaults, measured on the bundled ResNet-10t (docs/engines.md,
    "int8 settings"): the u8 x s8 pair (the fast one), per-channel weights, QDQ, percentile
    calibration, the first convolution and the classifier left in float, and reduce_range by
    the instruction sets of the host the graph is for (``for_isa``, default this one's).
    With every layer int8, top-1 calls moved on 4-7% of the probe's frames (most of it the first
    convolution's doing); with both ends in float and percentile calibration agreement stayed
    >= 0.977 on held-out images and >= 0.979 on the probe's frames for every calibration draw
    measured, at the same speed."""

    method: str = "percentile"  # calibration: minmax | entropy | percentile (clips the top 0.001%)
    fmt: str = "qdq"            # qdq (ONNX Runtime fuses it into QLinearConv at load) | qoperator
    activations: str = "u8"     # u8 | s8; u8 activations x s8 weights is the pair x86 kernels take natively
    weights: str = "s8"         # s8 | u8
    per_channel: bool = True    # one weight scale per output channel: same speed, smaller error
    reduce_range: bool | None = None  # 7-bit weights; None: reduce_range_for(for_isa)
    float_layers: str = "ends"  # none | first (input convolution) | last (classifier) | ends (both)
    for_isa: tuple[str, ...] | None = None  # flags of the host class the graph is for; None: this host's

    def __post_init__(self):
        for name, value, allowed in (("method", self.method, _METHODS), ("fmt", self.fmt, _FORMATS),
                                     ("activations", self.activations, _TYPES), ("weights", self.weights, _TYPES),
                                     ("float_layers", self.float_layers, _FLOAT_LAYERS)):
            if value not in allowed:
                raise ValueError(f"int8 {name} must be one of {list(allowed)}, got {value!r}")
        # resolved here, so the record says what was used (frozen: set through object)
        if self.for_isa is None:
            object.__setattr__(self, "for_isa", tuple(host.isa_flags()))
        object.__setattr__(self, "for_isa", tuple(self.for_isa))
        unknown = [f for f in self.for_isa if f not in host.ISA_FLAGS]
        if unknown:  # the runtime matches these against stream.host's flags: a typo would never fit a host
            raise ValueError(f"int8 for_isa: unknown flags {', '.join(unknown)}; "
                             f"use some of {', '.join(host.ISA_FLAGS)}")
        if self.reduce_range is None:
            object.__setattr__(self, "reduce_range", reduce_range_for(self.for_isa))

    def describe(self) -> dict:
        return {**dataclasses.asdict(self), "for_isa": list(self.for_isa)}


def end_layers(graph) -> dict[str, list[str]]:
    """Names of the weighted nodes at each end of an ONNX graph: ``first`` read the graph's input,
    ``last`` write its outputs (through ops that only move values, e.g. Flatten or Softmax). Found
    by structure, so that it holds for any student and not only for one export's node names."""
    consumers: dict[str, list] = {}
    producer = {}
    for n in graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
        for t in n.output:
            producer[t] = n
    found: dict[str, list[str]] = {"first": [], "last": []}
    weights = {i.name for i in graph.initializer}
    todo, seen = [i.name for i in graph.input if i.name not in weights], set()
    while todo:
        for n in consumers.get(todo.pop(), []):
            if n.name not in seen:
                seen.add(n.name)
                if n.op_type in _WEIGHTED:
                    found["first"].append(n.name)
                elif n.op_type in _PASS_THROUGH:
                    todo.extend(n.output)
    todo, seen = [o.name for o in graph.output], set()
    while todo:
        n = producer.get(todo.pop())
        if n is not None and n.name not in seen:
            seen.add(n.name)
            if n.op_type in _WEIGHTED:
                found["last"].append(n.name)
            elif n.op_type in _PASS_THROUGH:
                todo.append(n.input[0])
    return found


def _prepare(source: ModelSource, path: Path, float_layers: str) -> list[str]:
    """Write the graph the quantiser reads; returns the node names to keep in float."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process
    # Shape inference and ONNX Runtime's basic graph optimisation first: BatchNorm is folded
    # into the convolutions, so the quantiser sees Conv+ReLU and drops the ReLU (the uint8
    # range after it starts at zero); at load the runtime fuses each DQ-Conv-Q group into
    # one QLinearConv.
    quant_pre_process(str(source.onnx_path()), str(path), skip_symbolic_shape=True)
    roles = _FLOAT_LAYERS[float_layers]
    if not roles:
        return []
    model = onnx.load(str(path))
    unnamed = [n for n in model.graph.node if not n.name]
    for i, n in enumerate(unnamed):  # nodes_to_exclude matches names: give every node one
        n.name = f"{n.op_type}_unnamed_{i}"
    if unnamed:
        onnx.save(model, str(path))
    ends = end_layers(model.graph)
    return [name for role in roles for name in ends[role]]


def quantize(source: ModelSource, frames: np.ndarray, out: Path | None = None,
             options: QuantOptions | None = None) -> Path:
    """Write the calibrated int8 graph of ``source`` at its ``input_size``; returns its path."""
    options = options or QuantOptions()
    if len(frames) == 0:
        raise ValueError("no calibration frames")
    out = Path(out) if out else source.default_int8_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        keep_float = _prepare(source, prepared, options.float_layers)
        # The histogram calibrators (entropy, percentile) stack every batch's activations and fail
        # on a short last batch: they get one frame at a time.
        reader = FrameBatches(frames, batch=8 if options.method == "minmax" else 1)
        with contextlib.redirect_stdout(sys.stderr):  # the histogram calibrators print progress
            quantize_static(str(prepared), str(out) + ".tmp", reader,
                            quant_format=_FORMATS[options.fmt], activation_type=_TYPES[options.activations],
                            weight_type=_TYPES[options.weights], per_channel=options.per_channel,
                            reduce_range=options.reduce_range, calibrate_method=_METHODS[options.method],
                            nodes_to_exclude=keep_float)
    Path(str(out) + ".tmp").replace(out)
    # The record beside the graph described the graph just replaced; left there, it would name
    # the old weights and the runtime would refuse the new graph as stale (the command writes
    # a new record after measuring).
    int8_report(out).unlink(missing_ok=True)
    source.use_int8(out)  # what is measured next is this graph, not a variant beside it
    return out


# -- measure ------------------------------------------------------------------------------
def compare(source: ModelSource, images: np.ndarray, labels: np.ndarray | None = None, threads: int | None = None,
            batches=(1, 8), seconds: float = 2.0, probe: bool = False, **session) -> dict:
    """int8 vs fp32 ONNX Runtime on the same images: agreement, logit error, AUC, with ``probe``
    the agreement on the auto probe's frames, and (unless ``batches`` is empty) speed.
    ``session``: further ONNX Runtime engine options (spinning, graph_opt)."""
    from stream.engines import build_engine
    engines = {p: build_engine("onnxruntime", source, device="cpu", precision=p, max_batch=max(batches, default=8),
                               threads=threads, **session) for p in ("fp32", "int8")}
    fp32, int8 = engines["fp32"], engines["int8"]
    try:
        res = accuracy_cost(fp32.infer(images), int8.infer(images), labels)
        if probe:
            res.update(probe_agreement(fp32, int8, source.meta))
        speed = rates(engines, images, batches, seconds) if batches else {}
        for bs in batches:
            f, q = speed["fp32"][bs], speed["int8"][bs]
            res[f"fps_fp32_b{bs}"], res[f"fps_int8_b{bs}"] = round(f, 1), round(q, 1)
            res[f"speedup_b{bs}"] = round(q / f, 2)
    finally:
        fp32.close()
        int8.close()
    return res


def calibrate_and_measure(source: ModelSource, data: HeldOut, options: QuantOptions | None = None,
                          out: Path | None = None, threads: int | None = None, batches=(1, 8),
                          seconds: float = 2.0, probe: bool = False, **session) -> dict:
    """Calibrate the int8 graph of ``source`` (at its input size) and measure its accuracy cost on
    held-out images: the one code path of the command below and of ``python -m benchmarks.fps``.
    The record names the settings and this host's instruction sets (int8 kernels differ by them)."""
    options = options or QuantOptions()
    meta = source.meta
    frames = data.calibration(meta)
    t0 = time.perf_counter()
    graph = quantize(source, frames, out, options)
    res: dict = {"int8": str(graph), "calib": str(data.calib), "calib_frames": len(frames),
                 "quantise_s": round(time.perf_counter() - t0, 1), **options.describe(),
                 "input_size": list(meta["input_size"]), "splits": data.splits,
                 "fold": data.fold if data.splits else None, "modality": data.modality,
                 "cpu": host.cpu_model(), "isa": host.isa_flags()}
    held = data.evaluation(meta)
    if held is None:
        return {**res, "note": "no labelled images to measure on (give --eval IMAGE_ROOT)"}
    images, labels, lesions = held
    return {**res, **compare(source, images, labels, threads, batches, seconds, probe, **session),
            "eval": str(data.eval or data.calib), "eval_lesions": lesions}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.int8", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="exported student (.json/.safetensors/stem)")
    ap.add_argument("--calib", required=True, help="image set root (manifest.csv or <modality>/<class>/) or a video")
    ap.add_argument("--eval", help="labelled image set to measure the accuracy cost on "
                                   "(default: the other half of --calib's lesions)")
    ap.add_argument("--count", type=int, default=256, help="calibration frames")
    ap.add_argument("--splits", help="a training run's splits.json: calibrate on --fold's train lesions, "
                                     "measure on its test lesions (default: two halves of the lesions)")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--modality", default="WLI", help="image modality to use (WLI for students, NBI for a teacher)")
    ap.add_argument("--eval-count", type=int, default=512)
    defaults = QuantOptions()
    ap.add_argument("--method", default=defaults.method, choices=list(_METHODS))
    ap.add_argument("--format", default=defaults.fmt, choices=list(_FORMATS), help="QDQ or QOperator graph")
    ap.add_argument("--activations", default=defaults.activations, choices=list(_TYPES))
    ap.add_argument("--weights", default=defaults.weights, choices=list(_TYPES))
    ap.add_argument("--per-tensor", action="store_true", help="one scale per weight tensor, not per channel")
    ap.add_argument("--reduce-range", action=argparse.BooleanOptionalAction, default=None,
                    help="7-bit weights (default: on for x86 without VNNI in --for-isa, docs/engines.md 'int8 settings')")
    ap.add_argument("--for-isa", help="comma-separated instruction-set flags of the hosts the graph is for "
                                      "(default: this host's, for --variant vnni avx2,avx512f,avx512_vnni; "
                                      "e.g. avx2 for a graph shipped to hosts without VNNI)")
    ap.add_argument("--float", dest="float_layers", default=defaults.float_layers, choices=list(_FLOAT_LAYERS),
                    help="layers left in float: the input convolution (first), the classifier (last), both (ends)")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--out", help="int8 graph path (default <stem>.int8.onnx)")
    where.add_argument("--variant", help="write <stem>.int8.VARIANT.onnx beside the student: the graph the "
                                         "runtime runs on hosts with every --for-isa flag (tags with default "
                                         f"flags: {', '.join(VARIANT_ISA)})")
    ap.add_argument("--input-size", type=int, default=0,
                    help="calibrate and measure at this square size instead of the trained one")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: one per core)")
    ap.add_argument("--spinning", action="store_true", help="time sessions whose idle threads spin-wait")
    ap.add_argument("--graph-opt", default="all", choices=["disable", "basic", "extended", "all"],
                    help="ONNX Runtime graph optimisation level of the timed sessions")
    ap.add_argument("--seconds", type=float, default=3.0, help="timing window per engine and batch size")
    ap.add_argument("--json", help="write the measurements here")
    args = ap.parse_args(argv)
    try:
        source = ModelSource.from_path(args.model)
        if args.input_size:
            source = source.at_input_size((args.input_size, args.input_size))
        for_isa = VARIANT_ISA.get(args.variant) if args.for_isa is None else \
            tuple(f for f in args.for_isa.split(",") if f)
        if args.variant and for_isa is None:
            raise ValueError(f"--variant {args.variant} needs --for-isa FLAGS (the hosts it is for, "
                             f"e.g. {','.join(VARIANT_ISA['vnni'])})")
        options = QuantOptions(args.method, args.format, args.activations, args.weights, not args.per_tensor,
                               args.reduce_range, args.float_layers, for_isa)
        out = Path(args.out) if args.out else source.default_int8_path(args.variant)
        data = HeldOut(args.calib, args.eval, args.splits, args.fold, args.modality, args.count, args.eval_count)
        res = calibrate_and_measure(source, data, options, out, args.threads,
                                    seconds=args.seconds, probe=True, spinning=args.spinning, graph_opt=args.graph_opt)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res.update(model=str(args.model), weights_hash=source.weights_hash(), variant=args.variant,
               threads=args.threads, spinning=args.spinning, graph_opt=args.graph_opt)
    print(json.dumps(res, indent=2))
    # next to the graph: how, from which weights and for which hosts it was made (ModelSource
    # reads for_isa and checks the weights hash; a variant without it is never run)
    int8_report(out).write_text(json.dumps(res, indent=2) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    if "note" in res:
        print(res["note"], file=sys.stderr)
    if args.variant:
        _check_variant_runs(args.model, out, options.for_isa)
    return 0


def _check_variant_runs(model: str, graph: Path, for_isa: tuple[str, ...]) -> None:
    """Warn when the runtime would not run the variant just made beside the student on a host
    where it and the portable graph both fit: the portable one names as many flags (a tie goes
    to it), or more."""
    beside = ModelSource.from_path(model)
    if graph not in beside.int8_variants:  # made into the cache: another input size, a read-only folder
        return
    both = set(for_isa).union(*(g.for_isa for g in beside.int8_graphs() if g.portable))
    chosen = beside.int8_graph(flags=both)
    if chosen is not None and chosen.path != graph:
        flags = " ".join(f for f in host.ISA_FLAGS if f in both)
        print(f"warning: a host with {flags} would run {chosen.label()}, not {graph.name}; name every flag "
              f"of the hosts it is for in --for-isa (e.g. {','.join(VARIANT_ISA['vnni'])})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

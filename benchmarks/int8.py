"""int8 static quantisation (QDQ) for the ONNX Runtime CPU engine, calibrated on real frames.

    python -m benchmarks.int8 --model runs/student.json --calib data/synth --eval data/synth_test

Calibration frames are training images (the synthetic image set's WLI pictures, resized and
normalised like the trainer does) or frames of a video (through the runtime's preprocessor);
either way laid out as the student reads them (transposed for a ``transpose_hw`` student).
The int8 graph is written next to the student as ``<stem>.int8.onnx`` where ``build_engine``
finds it; its accuracy cost against fp32 (top-1 agreement, logit error, AUC) and both speeds
are measured on the evaluation images in the same run and printed/written as JSON (and beside
the graph, where the runtime's ``auto`` reads whether int8 pays off). The runtime itself only
runs the graph; making and judging it is measurement, hence here.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from tqdm import tqdm

from benchmarks.timing import repeat
from pagkd_core.data.layouts import DataError, Sample, scan_generic
from pagkd_core.data.splits import select
from pagkd_core.filetypes import VIDEO_EXTENSIONS
from pagkd_core.student import input_transform
from stream.engines.model_source import ModelSource

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


# -- frames -------------------------------------------------------------------------------
def labelled_images(root: Path, class_names: list[str], modality: str = "WLI") -> list[Sample]:
    """The images of ``modality`` and ``class_names`` under ``root``, read by the training core's
    own reader (manifest.csv or <root>/<modality>/<class>/<lesion>_<n>.<ext>). A sample's
    ``patient`` is the split unit a training run's splits.json lists (the lesion when the
    manifest names no patient)."""
    try:
        samples = scan_generic(Path(root)) if Path(root).is_dir() else []
    except DataError as e:
        raise FileNotFoundError(str(e)) from None
    out = [s for s in samples if s.modality == modality and s.cls in class_names]
    if not out:
        raise FileNotFoundError(f"no {modality} images of classes {class_names} under {root} "
                                f"(expected manifest.csv or {modality}/<class>/*.png)")
    return out


def lesion_half(lesion_id: str) -> int:
    """0 or 1, stable per lesion: splits one image set into calibration and evaluation lesions."""
    return zlib.crc32(lesion_id.encode()) & 1


def read_images(paths: list[Path], meta: dict) -> np.ndarray:
    """Resize + normalise exactly like the training core's evaluation path, then lay the pictures
    out as the student reads them (transposed for a ``transpose_hw`` student, as the runtime's
    preprocessor does), so that calibration sees the activations the runtime will."""
    import torch

    from pagkd_core.data.images import read_image
    from pagkd_core.data.transforms import normalize, resize_uint8
    h, w = meta["input_size"]
    if h != w:
        raise ValueError(f"training images are resized square; input_size {meta['input_size']} is not")
    t = input_transform(meta)
    out = [normalize(resize_uint8(read_image(str(p)), h), t["mean"], t["std"])
           for p in tqdm(paths, desc="reading images", leave=False, disable=True if len(paths) < 64 else None)]
    x = torch.stack(out)
    return (x.transpose(2, 3) if t["transpose"] else x).numpy().astype(np.float32)


def video_frames(path: Path, meta: dict, count: int) -> np.ndarray:
    """``count`` evenly spaced frames of a video, cropped/resized/normalised by the runtime."""
    import av

    from stream.frame import Frame
    from stream.preprocess import Preprocessor
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        total = stream.frames or sum(1 for _ in c.decode(video=0))
    keep = set(np.linspace(0, max(total - 1, 0), min(count, max(total, 1))).round().astype(int).tolist())
    pre = Preprocessor.for_model(meta, device="cpu")  # the runtime's input: normalisation, transpose
    out = []
    with av.open(str(path)) as c:
        for i, vf in enumerate(c.decode(video=0)):
            f = Frame(index=i, pts=None, arrival=0.0, rgb=vf.to_ndarray(format="rgb24"))
            pre.area(f)  # every frame feeds the content tracker, as in the live pipeline
            if i in keep:
                out.append(pre(f))
    return np.stack(out).astype(np.float32)


def split_lesions(splits: str | Path, fold: int, part: str) -> set[str]:
    """Split units (patients, else lesions) of one part (train/val/test) of a training run's splits.json."""
    data = json.loads(Path(splits).read_text())
    try:
        return set(data["folds"][fold][part])
    except (KeyError, IndexError):
        raise ValueError(f"{splits}: no fold {fold} part {part!r}") from None


def pick_samples(samples: list[Sample], half: int | None = None, units: set[str] | None = None) -> list[Sample]:
    """Keep the images of the given split units (a split), else of one stable half of the lesions."""
    if units is not None:
        kept = select(samples, list(units))
        if not kept:
            raise ValueError("no image of the split's lesions found; do --splits and the image root match?")
        return kept
    if half is not None:
        return [s for s in samples if lesion_half(s.patient) == half] or samples
    return samples


def calibration_frames(path: str | Path, meta: dict, count: int = 256, seed: int = 0,
                       half: int | None = None, lesions: set[str] | None = None,
                       modality: str = "WLI") -> np.ndarray:
    path = Path(path)
    if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
        return video_frames(path, meta, count)
    samples = pick_samples(labelled_images(path, list(meta["class_names"]), modality), half, lesions)
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(samples), size=min(count, len(samples)), replace=False).tolist())
    return read_images([samples[i].path for i in pick], meta)


# -- quantise -----------------------------------------------------------------------------
_FORMATS = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
_TYPES = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}


@dataclass(frozen=True)
class QuantOptions:
    """How the int8 graph is made. Defaults, measured on the bundled ResNet-10t on the 2-core dev
    machine (AVX-512 VNNI), docs/engines.md: the fast u8 x s8 pair, per-channel weights (same
    speed, a third of the logit error), QDQ (as fast as QOperator once fused), MinMax."""

    method: str = "minmax"      # calibration: minmax | entropy | percentile
    fmt: str = "qdq"            # qdq (ONNX Runtime fuses it into QLinearConv at load) | qoperator
    activations: str = "u8"     # u8 | s8; u8 activations x s8 weights is the VNNI-native pair
    weights: str = "s8"         # s8 | u8
    per_channel: bool = True    # one weight scale per output channel: same speed, smaller error

    def __post_init__(self):
        for name, value, allowed in (("method", self.method, _METHODS), ("fmt", self.fmt, _FORMATS),
                                     ("activations", self.activations, _TYPES), ("weights", self.weights, _TYPES)):
            if value not in allowed:
                raise ValueError(f"int8 {name} must be one of {list(allowed)}, got {value!r}")

    def describe(self) -> dict:
        return dataclasses.asdict(self)


def quantize(source: ModelSource, frames: np.ndarray, out: Path | None = None,
             options: QuantOptions | None = None) -> Path:
    """Write the calibrated int8 graph of ``source`` at its ``input_size``; returns its path."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    options = options or QuantOptions()
    if len(frames) == 0:
        raise ValueError("no calibration frames")
    out = Path(out) if out else source.default_int8_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference and ONNX Runtime's basic graph optimisation first: BatchNorm is folded
        # into the convolutions, so the quantiser sees Conv+ReLU and drops the ReLU (the uint8
        # range after it starts at zero); at load the runtime fuses each DQ-Conv-Q group into
        # one QLinearConv.
        quant_pre_process(str(source.onnx_path()), str(prepared), skip_symbolic_shape=True)
        # The histogram calibrators (entropy, percentile) stack every batch's activations and fail
        # on a short last batch: they get one frame at a time.
        reader = FrameBatches(frames, batch=8 if options.method == "minmax" else 1)
        quantize_static(str(prepared), str(out) + ".tmp", reader,
                        quant_format=_FORMATS[options.fmt], activation_type=_TYPES[options.activations],
                        weight_type=_TYPES[options.weights], per_channel=options.per_channel,
                        calibrate_method=_METHODS[options.method])
    Path(str(out) + ".tmp").replace(out)
    source.int8_onnx = out
    return out


# -- measure ------------------------------------------------------------------------------
def _throughput(engine, x: np.ndarray, batch: int, seconds: float) -> float:
    """Images per second of ``engine`` on batches of ``batch`` of ``x`` (repeated to fill one)."""
    xb = x[:batch] if len(x) >= batch else np.resize(x, (batch, *x.shape[1:]))
    times = repeat(partial(engine.infer, xb), seconds=seconds, warmup=1, min_iters=1)
    return batch * len(times) / sum(times)


def auc(logits: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of the softmax scores, as the training core reports it (pagkd_core.metrics)."""
    from pagkd_core.metrics import auc_score
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return auc_score(labels, p)


def compare(source: ModelSource, images: np.ndarray, labels: np.ndarray | None = None, threads: int | None = None,
            batches=(1, 8), seconds: float = 2.0, **session) -> dict:
    """int8 vs fp32 ONNX Runtime on the same images: agreement, logit error, AUC and (unless
    ``batches`` is empty) speed. ``session``: further ONNX Runtime engine options (spinning, graph_opt)."""
    from stream.engines import build_engine
    engines = {p: build_engine("onnxruntime", source, device="cpu", precision=p, max_batch=max(batches, default=8),
                               threads=threads, **session) for p in ("fp32", "int8")}
    fp32, int8 = engines["fp32"], engines["int8"]
    a, b = fp32.infer(images), int8.infer(images)
    res: dict = {"images": len(images), "top1_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
                 "max_abs_logit_diff": float(np.abs(a - b).max()),
                 "rel_logit_diff": float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))}
    if labels is not None and len(set(labels.tolist())) > 1:
        res.update(auc_fp32=auc(a, labels), auc_int8=auc(b, labels), accuracy_fp32=float((a.argmax(1) == labels).mean()),
                   accuracy_int8=float((b.argmax(1) == labels).mean()))
        res["auc_drop"] = res["auc_fp32"] - res["auc_int8"]
    for bs in batches:  # interleaved in one run, so the ratio is fair on a shared machine
        f, q = _throughput(fp32, images, bs, seconds), _throughput(int8, images, bs, seconds)
        res[f"fps_fp32_b{bs}"], res[f"fps_int8_b{bs}"] = round(f, 1), round(q, 1)
        res[f"speedup_b{bs}"] = round(q / f, 2)
    fp32.close()
    int8.close()
    return res


@dataclass
class HeldOut:
    """Which images calibrate and which measure the accuracy cost."""

    calib: str                   # image set root (manifest.csv or <modality>/<class>/) or a video
    eval: str | None = None      # labelled image set to measure on; None: calib's other lesions
    splits: str | None = None    # a training run's splits.json: calibrate on the fold's train lesions,
    fold: int = 0                # measure on its test lesions (default: two stable halves of the lesions)
    modality: str = "WLI"        # WLI for students, NBI for a teacher
    count: int = 256             # calibration images
    eval_count: int = 512        # evaluation images at most


def calibrate_and_measure(source: ModelSource, data: HeldOut, options: QuantOptions | None = None,
                          out: Path | None = None, threads: int | None = None, batches=(1, 8),
                          seconds: float = 2.0, **session) -> dict:
    """Calibrate the int8 graph of ``source`` (at its input size) and measure its accuracy cost on
    held-out images: the one code path of the command below and of ``python -m benchmarks.fps``."""
    options = options or QuantOptions()
    meta = source.meta
    calib_is_images = not Path(data.calib).is_file()
    train = split_lesions(data.splits, data.fold, "train") if data.splits else None
    test = split_lesions(data.splits, data.fold, "test") if data.splits else None
    frames = calibration_frames(data.calib, meta, data.count, lesions=train, modality=data.modality,
                                half=0 if calib_is_images and not data.eval else None)
    t0 = time.perf_counter()
    graph = quantize(source, frames, out, options)
    res: dict = {"int8": str(graph), "calib": str(data.calib), "calib_frames": len(frames),
                 "quantise_s": round(time.perf_counter() - t0, 1), **options.describe(),
                 "input_size": list(meta["input_size"]), "splits": data.splits,
                 "fold": data.fold if data.splits else None, "modality": data.modality}
    eval_root = Path(data.eval or data.calib)
    if eval_root.is_file():
        return {**res, "note": "no labelled images to measure on (give --eval IMAGE_ROOT)"}
    class_names = list(meta["class_names"])
    samples = pick_samples(labelled_images(eval_root, class_names, data.modality),
                           half=None if data.eval else 1, units=test)
    picked = [samples[i] for i in np.random.default_rng(1).permutation(len(samples))[:data.eval_count]]
    images = read_images([s.path for s in picked], meta)
    labels = np.array([class_names.index(s.cls) for s in picked])
    return {**res, **compare(source, images, labels, threads, batches, seconds, **session), "eval": str(eval_root),
            "eval_lesions": len({s.patient for s in picked})}


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
    ap.add_argument("--out", help="int8 graph path (default <stem>.int8.onnx)")
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
        options = QuantOptions(args.method, args.format, args.activations, args.weights, not args.per_tensor)
        data = HeldOut(args.calib, args.eval, args.splits, args.fold, args.modality, args.count, args.eval_count)
        res = calibrate_and_measure(source, data, options, Path(args.out) if args.out else None, args.threads,
                                    seconds=args.seconds, spinning=args.spinning, graph_opt=args.graph_opt)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res.update(model=str(args.model), weights_hash=source.weights_hash(), threads=args.threads,
               spinning=args.spinning, graph_opt=args.graph_opt)
    print(json.dumps(res, indent=2))
    if "note" in res:
        print(res["note"], file=sys.stderr)
        return 0
    # next to the graph: build_engine("auto") uses int8 only where this shows it pays off
    Path(res["int8"]).with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

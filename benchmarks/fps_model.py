"""Which student the fps benchmark runs: the bundled one, a given export, or a random-init
backbone (speed does not depend on the weights, so GPU sweeps need no trained ResNet-50);
and its int8 graphs, calibrated on the student's training images."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

BUNDLED = Path(__file__).resolve().parent.parent / "stream" / "assets" / "student.json"
CLASS_NAMES = ["hyperplastic", "adenoma"]
# The bundled student's training frames (configs/video_student.yaml, SYNTHETIC), with the
# trainer's patient folds over them (data.folds=5, val_fraction=0.2, split_seed=0): both
# regenerate byte-identically (a few minutes on 2 cores), so int8 calibration (fold 0's training
# patients) and the AUC drop (its test patients) need no training run on disk. The quick form
# makes a small fresh set (another seed, never trained on) and splits it in two stable halves.
BUNDLED_DATA = {
    "full": ["frames", "--size", "256", "--lesions-per-class", "120", "--frames-per-lesion", "6",
             "--no-lesion-frames", "480", "--seed", "0", "--workers", "2"],
    "quick": ["frames", "--size", "192", "--lesions-per-class", "4", "--frames-per-lesion", "2",
              "--no-lesion-frames", "8", "--seed", "77"],
}
BUNDLED_FOLDS = {"k": 5, "val_fraction": 0.2, "seed": 0}


@dataclass
class BenchModel:
    path: Path          # the exported student's .json
    meta: dict
    input_size: tuple[int, int]
    label: str          # for tables: "resnet50@448 (random init)"
    int8_onnx: Path | None = None  # calibrated int8 graph at input_size (prepare_int8)

    def source(self):
        """A fresh ModelSource at the benchmark's input size (engines take it directly)."""
        from stream.engines import ModelSource

        src = ModelSource.from_path(self.path).at_input_size(self.input_size)
        if self.int8_onnx is not None:
            src.use_int8(self.int8_onnx)  # the benchmark's own graph, not a variant beside the student
        return src

    def torch_module(self):
        from pagkd_core.student import load_student

        model, _ = load_student(self.path)
        return model.eval()


def random_student(backbone: str, input_size: int, cache: str | Path, seed: int = 0) -> Path:
    """Export a random-init student once per (backbone, size, seed) and reuse it."""
    import torch

    from pagkd_core.export import export_student
    from pagkd_core.models import build_model
    from pagkd_core.student import sibling

    stem = Path(cache) / f"{backbone}-{input_size}-random-s{seed}"
    if sibling(stem, ".json").is_file() and sibling(stem, ".safetensors").is_file():
        return sibling(stem, ".json")
    torch.manual_seed(seed)
    try:
        model = build_model(backbone, len(CLASS_NAMES))
    except Exception as e:  # noqa: BLE001 - timm raises several types for unknown names
        raise SystemExit(f"--backbone {backbone!r}: timm cannot build it ({e}); use a timm model name "
                         f"such as resnet50 or mobilenetv3_large_100") from None
    # No ONNX here: the ONNX engine exports one into its cache only if it is actually used.
    export_student(model, stem, class_names=CLASS_NAMES, input_size=input_size, onnx=False,
                   train_command=f"random init for benchmarks (seed {seed})")
    return sibling(stem, ".json")


def resolve_model(model: str | None, backbone: str | None, input_size: int | None,
                  cache: str | Path) -> BenchModel:
    from pagkd_core.student import sibling, student_stem

    if backbone:
        size = input_size or 224
        path = random_student(backbone, size, cache)
        label = f"{backbone}@{size} (random init)"
    else:
        path = sibling(student_stem(model or BUNDLED), ".json")  # any of its files, or the stem
        if not path.is_file():
            where = "the bundled student is missing (stream/assets/student.json); pass --model or --backbone" \
                if model is None else f"no exported student at {path}; pass its .json or use --backbone"
            raise SystemExit(where)
    meta = json.loads(path.read_text())
    size = (input_size, input_size) if input_size else tuple(meta["input_size"])
    if not backbone:
        label = f"{meta.get('backbone', '?')}@{size[0]} ({path.stem})"
    return BenchModel(path, meta, tuple(int(s) for s in size), label)


def bundled_training_data(cache: str | Path, quick: bool = False) -> tuple[Path, Path | None]:
    """(image root, splits.json or None) of the bundled student's training frames, made once in
    ``cache``; quick: a small fresh set and no splits (the int8 tool then uses lesion halves)."""
    from pagkd_core.data.layouts import read_manifest
    from pagkd_core.data.splits import make_folds
    from pagkd_core.synth.cli import main as synth

    args = BUNDLED_DATA["quick" if quick else "full"]
    # Named by the generator's arguments: a cache made for an earlier bundled student is not reused.
    tag = hashlib.sha1(" ".join(args).encode()).hexdigest()[:8]
    root = Path(cache) / f"bundled_student_data-{tag}"
    if not (root / "manifest.csv").is_file() and synth([*args, "--out", str(root), "--no-progress"]):
        raise FileNotFoundError(f"could not generate the synthetic training frames in {root}")
    if quick:
        return root, None
    splits = root.with_name(root.name + ".splits.json")
    if not splits.is_file():
        folds = make_folds(read_manifest(root / "manifest.csv"), **BUNDLED_FOLDS)
        splits.write_text(json.dumps(folds, indent=1) + "\n")
    return root, splits


def prepare_int8(bench: BenchModel, data_root: str, splits: str, cache: str | Path, quick: bool) -> dict:
    """Calibrate the int8 graphs the benchmark needs, with the int8 tool (benchmarks.int8):
    one at the student's trained size, measured on the held-out (test) lesions of its fold -> the
    AUC drop; one at the benchmark's input size for the inference rows (``bench.int8_onnx``).
    Both are calibrated on the fold's training lesions. Returns the accuracy measurement."""
    from benchmarks.int8 import (
        HeldOut,
        QuantOptions,
        calibrate_and_measure,
        calibration_frames,
        quantize,
        split_lesions,
    )
    from stream.engines import ModelSource

    if not data_root:
        root, split_file = bundled_training_data(cache, quick)
    else:
        root, split_file = Path(data_root), Path(splits) if splits else None
    trained = ModelSource.from_path(bench.path)
    fold = int(trained.meta.get("fold") or 0)
    data = HeldOut(str(root), splits=str(split_file) if split_file else None, fold=fold,
                   count=32 if quick else 256)
    options = QuantOptions()
    out_dir = Path(cache) / "int8"

    def graph_path(src: ModelSource) -> Path:
        size = src.meta["input_size"][0]
        return out_dir / f"{src.name}-{src.weights_hash()}-{size}.int8.onnx"

    acc = calibrate_and_measure(trained, data, options, graph_path(trained), batches=())
    bench.int8_onnx = None
    if tuple(trained.meta["input_size"]) == bench.input_size:
        bench.int8_onnx = Path(acc["int8"])
    else:
        at_size = bench.source()
        train = split_lesions(data.splits, fold, "train") if data.splits else None
        frames = calibration_frames(root, at_size.meta, data.count, lesions=train, half=None if train else 0)
        bench.int8_onnx = quantize(at_size, frames, graph_path(at_size), options)
    return {**acc, "benchmark_graph": str(bench.int8_onnx), "benchmark_input_size": list(bench.input_size)}

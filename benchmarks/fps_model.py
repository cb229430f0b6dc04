"""Which student the fps benchmark runs: the bundled one, a given export, or a random-init
backbone (speed does not depend on the weights, so GPU sweeps need no trained ResNet-50)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

BUNDLED = Path(__file__).resolve().parent.parent / "stream" / "assets" / "student.json"
CLASS_NAMES = ["hyperplastic", "adenoma"]


@dataclass
class BenchModel:
    path: Path          # the exported student's .json
    meta: dict
    input_size: tuple[int, int]
    label: str          # for tables: "resnet50@448 (random init)"

    def source(self):
        """A fresh ModelSource at the benchmark's input size (engines take it directly)."""
        from stream.engines import ModelSource

        src = ModelSource.from_path(self.path)
        if tuple(src.meta["input_size"]) != self.input_size:
            # A CNN with global pooling runs at any size, but its exported graphs have the
            # exported size baked in: drop them so the ONNX engine exports one at this size.
            src.meta = {**src.meta, "input_size": list(self.input_size)}
            src.onnx = src.int8_onnx = None
        return src

    def torch_module(self):
        from pagkd_core.export import load_student

        model, _ = load_student(self.path)
        return model.eval()


def random_student(backbone: str, input_size: int, cache: str | Path, seed: int = 0) -> Path:
    """Export a random-init student once per (backbone, size, seed) and reuse it."""
    import torch

    from pagkd_core.export import export_student
    from pagkd_core.models import build_model

    stem = Path(cache) / f"{backbone}-{input_size}-random-s{seed}"
    if stem.with_suffix(".json").is_file() and stem.with_suffix(".safetensors").is_file():
        return stem.with_suffix(".json")
    torch.manual_seed(seed)
    try:
        model = build_model(backbone, len(CLASS_NAMES))
    except Exception as e:  # noqa: BLE001 - timm raises several types for unknown names
        raise SystemExit(f"--backbone {backbone!r}: timm cannot build it ({e}); use a timm model name "
                         f"such as resnet50 or mobilenetv3_large_100") from None
    # No ONNX here: the ONNX engine exports one into its cache only if it is actually used.
    export_student(model, stem, class_names=CLASS_NAMES, input_size=input_size, onnx=False,
                   train_command=f"random init for benchmarks (seed {seed})")
    return stem.with_suffix(".json")


def resolve_model(model: str | None, backbone: str | None, input_size: int | None,
                  cache: str | Path) -> BenchModel:
    if backbone:
        size = input_size or 224
        path = random_student(backbone, size, cache)
        label = f"{backbone}@{size} (random init)"
    else:
        path = Path(model) if model else BUNDLED
        if path.suffix not in (".json", ".safetensors"):
            path = path.with_suffix(".json") if path.with_suffix(".json").is_file() else path
        path = path.with_suffix(".json")
        if not path.is_file():
            where = "the bundled student is missing (stream/assets/student.json); pass --model or --backbone" \
                if model is None else f"no exported student at {path}; pass its .json or use --backbone"
            raise SystemExit(where)
    meta = json.loads(path.read_text())
    size = (input_size, input_size) if input_size else tuple(meta["input_size"])
    if not backbone:
        label = f"{meta.get('backbone', '?')}@{size[0]} ({path.stem})"
    return BenchModel(path, meta, tuple(int(s) for s in size), label)

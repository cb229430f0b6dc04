"""Exported student: `<stem>.safetensors` (weights) + `<stem>.json` (metadata) [+ `<stem>.onnx`].

Format `pagkd-student/1` (docs/architecture.md). Loading never unpickles: weights come from
safetensors, metadata from JSON. fp16 storage halves the file; loading casts back to fp32.

The JSON records the output set (``"outputs"``: the background class, if any, and the lesion
classes; pagkd_core.outputs) and the modality the model reads (``"modality"``: WLI for a
student). A fold's NBI teacher is exported the same way beside its student, as
``<stem>.nbi.{safetensors,json}`` (``teacher_stem``), where the runtime finds it. Files written
before these keys existed load as before: readers take WLI and no background class then.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from pagkd_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from pagkd_core.models import LesionNet, build_model
from pagkd_core.outputs import NO_LESION, output_set

__all__ = ["FORMAT", "NO_LESION", "export_student", "load_student", "teacher_stem"]

FORMAT = "pagkd-student/1"
_META_KEYS = (
    "format",
    "backbone",
    "num_classes",
    "class_names",
    "input_size",
    "mean",
    "std",
    "embed_dim",
    "config_hash",
    "metrics",
    "train_command",
    "synthetic",
)


def _stem(path: str | Path) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".json", ".safetensors", ".onnx") else p


def _file(stem: Path, ext: str) -> Path:
    # Not with_suffix: a stem may hold a dot of its own (the teacher's "<stem>.nbi").
    return stem.with_name(stem.name + ext)


def teacher_stem(student: str | Path) -> Path:
    """Where the NBI teacher of the student at ``student`` (.json/.safetensors/stem) is exported:
    ``<stem>.nbi``. One rule for the writer (export --teacher) and the runtime that loads it."""
    stem = _stem(student)
    return stem.with_name(stem.name + ".nbi")


def export_student(
    model: LesionNet,
    stem: str | Path,
    *,
    class_names: list[str],
    input_size: int,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    config_hash: str = "",
    metrics: dict | None = None,
    train_command: str = "",
    synthetic: bool = True,
    fp16: bool = False,
    onnx: bool = True,
    extra: dict | None = None,
    modality: str = "WLI",
) -> dict:
    """Write the student alone (or, with ``modality="NBI"``, a teacher in the same format);
    returns the metadata (with the written file names)."""
    if len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names for a {model.num_classes}-class model")
    if modality not in ("WLI", "NBI"):
        raise ValueError(f"modality must be WLI or NBI, got {modality!r}")
    outputs = output_set(class_names)  # checks that no_lesion, if there, comes first
    stem = _stem(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if fp16 else torch.float32
    state = {
        k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    save_file(state, str(_file(stem, ".safetensors")), metadata={"format": FORMAT})
    os.chmod(_file(stem, ".safetensors"), 0o644)  # safetensors creates 0600; the file is shipped
    meta = {
        "format": FORMAT,
        "backbone": model.backbone_name,
        "num_classes": model.num_classes,
        "class_names": list(class_names),
        "outputs": outputs,
        "modality": modality,
        "input_size": [int(input_size), int(input_size)],
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "embed_dim": model.embed_dim,
        "config_hash": config_hash,
        "metrics": metrics or {},
        "train_command": train_command,
        "synthetic": bool(synthetic),
        "weights_dtype": str(dtype).removeprefix("torch."),
        "output_stride": model.output_stride,
        **(extra or {}),
    }
    if onnx:
        # The graph is traced from the fp32 model as the file stores it (fp16-rounded if asked),
        # so ONNX and safetensors give the same logits.
        rounded, _ = load_student(_file(stem, ".safetensors"), meta=meta)
        export_onnx(rounded, _file(stem, ".onnx"), input_size)
        meta["onnx"] = _file(stem, ".onnx").name
    _file(stem, ".json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def load_student(
    path: str | Path, device: str | torch.device = "cpu", meta: dict | None = None
) -> tuple[LesionNet, dict]:
    """`path`: the .json, the .safetensors or the stem. Returns (model in eval mode, metadata)."""
    stem = _stem(path)
    if meta is None:
        js = _file(stem, ".json")
        if not js.is_file():
            raise FileNotFoundError(
                f"student metadata not found: {js} (export writes <stem>.json next to the weights)"
            )
        meta = json.loads(js.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{stem}.json: format {meta.get('format')!r} is not {FORMAT!r}")
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"{stem}.json lacks keys: {', '.join(missing)}")
    if "outputs" in meta and meta["outputs"] != output_set(meta["class_names"]):
        raise ValueError(f"{stem}.json: outputs {meta['outputs']} do not match class_names {meta['class_names']}")
    weights = _file(stem, ".safetensors")
    if not weights.is_file():
        raise FileNotFoundError(f"student weights not found: {weights}")
    model = build_model(
        meta["backbone"],
        meta["num_classes"],
        meta["embed_dim"],
        output_stride=int(meta.get("output_stride", 32)),
    )
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(weights)).items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(
            f"{weights} does not match backbone '{meta['backbone']}': {str(e).splitlines()[0]}"
        ) from None
    return model.to(device).eval(), meta


def export_onnx(model: LesionNet, path: str | Path, input_size: int, opset: int = 18) -> Path:
    """ONNX graph with input `input` (N,3,H,W float32, normalised), output `logits`, dynamic N."""
    path = Path(path)
    model = model.eval().cpu()
    x = torch.randn(2, 3, input_size, input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return path


def check_onnx(
    model: LesionNet, path: str | Path, input_size: int, batch_sizes=(1, 3), atol: float = 1e-4
) -> float:
    """Run the ONNX file in onnxruntime at several batch sizes; return the max |diff| to torch."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    gen = torch.Generator().manual_seed(0)
    for n in batch_sizes:
        x = torch.randn(n, 3, input_size, input_size, generator=gen)
        with torch.no_grad():
            ref = model.eval().cpu()(x).numpy()
        out = sess.run(["logits"], {"input": x.numpy()})[0]
        worst = max(worst, float(np.abs(out - ref).max()))
    if worst > atol:
        raise AssertionError(f"{path}: ONNX logits differ from torch by {worst:.2e} (> {atol})")
    return worst

"""Writing an exported student (the format: pagkd_core.student) and checking its ONNX graph.

fp16 storage halves the weights file; loading casts back to fp32. The JSON records the output
set (``"outputs"``: the background class, if any, and the lesion classes; pagkd_core.outputs) and
the modality the model reads (``"modality"``: WLI for a student, NBI for the fold's teacher that
``export --teacher`` writes beside it at ``teacher_stem``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from pagkd_core.models import LesionNet
from pagkd_core.outputs import output_set
from pagkd_core.student import (
    FORMAT,
    IMAGENET_MEAN,
    IMAGENET_STD,
    export_onnx,
    load_student,
    sibling,
    student_stem,
)

__all__ = ["check_onnx", "export_student"]


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
    transpose: bool = False,
) -> dict:
    """Write the student alone (or, with ``modality="NBI"``, a teacher in the same format);
    returns the metadata (with the written file names). ``transpose``: the network was trained
    on pictures with rows and columns swapped (``transpose_hw``, pagkd_core.student); the
    runtime's preprocessor then swaps them too."""
    if len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names for a {model.num_classes}-class model")
    if modality not in ("WLI", "NBI"):
        raise ValueError(f"modality must be WLI or NBI, got {modality!r}")
    outputs = output_set(class_names)  # checks that no_lesion, if there, comes first
    stem = student_stem(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if fp16 else torch.float32
    state = {
        k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    save_file(state, str(sibling(stem, ".safetensors")), metadata={"format": FORMAT})
    os.chmod(sibling(stem, ".safetensors"), 0o644)  # safetensors creates 0600; the file is shipped
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
        "transpose_hw": bool(transpose),
        "embed_dim": model.embed_dim,
        "config_hash": config_hash,
        "metrics": metrics or {},
        "train_command": train_command,
        "synthetic": bool(synthetic),
        "weights_dtype": str(dtype).removeprefix("torch."),
        "output_stride": model.output_stride,
        **({"pool": model.pool} if model.pool != "mean" else {}),  # absent: "mean", as every file before it
        **(extra or {}),
    }
    if onnx:
        # The graph is traced from the fp32 model as the file stores it (fp16-rounded if asked),
        # so ONNX and safetensors give the same logits.
        rounded, _ = load_student(sibling(stem, ".safetensors"), meta=meta)
        export_onnx(rounded, sibling(stem, ".onnx"), input_size)
        meta["onnx"] = sibling(stem, ".onnx").name
    sibling(stem, ".json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def check_onnx(
    model: LesionNet, path: str | Path, input_size: int, batch_sizes=(1, 3), atol: float = 1e-4, rtol: float = 0.0
) -> float:
    """Run the ONNX file in onnxruntime at several batch sizes; return the max |diff| to torch.
    A difference above ``atol + rtol * max|torch logit|`` is a ValueError (one line in the CLI):
    ``rtol`` for networks whose logits are large (a float32 difference scales with them)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = scale = 0.0
    gen = torch.Generator().manual_seed(0)
    for n in batch_sizes:
        x = torch.randn(n, 3, input_size, input_size, generator=gen)
        with torch.no_grad():
            ref = model.eval().cpu()(x).numpy()
        out = sess.run(["logits"], {"input": x.numpy()})[0]
        worst, scale = max(worst, float(np.abs(out - ref).max())), max(scale, float(np.abs(ref).max()))
    if worst > atol + rtol * scale:
        raise ValueError(f"{path}: ONNX logits differ from torch by {worst:.2e} (> {atol:.0e} + {rtol:.0e} x "
                         f"{scale:.2g}); the graph is not usable")
    return worst

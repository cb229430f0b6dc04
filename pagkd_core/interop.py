"""Checkpoints trained elsewhere, imported as exported students (format: pagkd_core.student).

    python -m pagkd_core import-checkpoint poly_student_model-16.pth --format pagkd-authors --out authors_f0

``pagkd-authors``: the student checkpoints published by the PaGKD authors (github.com/Huster-Hq/PaGKD;
their weights, under their terms, for research use; nothing of theirs is in this repository). Such
a file is a PyTorch state dict of their distillation model: ``student.*`` is a torchvision-layout
ResNet-50 (conv1, bn1, layer1-4, fc) plus ``student.conv_embedd`` (1x1 conv 2048 -> 128 without
bias); everything else (``lb_token1``, ``CA``, ``cls``) serves the distillation only and is dropped.
timm's ``resnet50`` names its parameters as torchvision does, so the backbone maps key for key;
``fc`` becomes our ``head`` and ``conv_embedd`` our ``proj`` (with a zero bias: the same map).

Their test-time input differs from ours, and the metadata says so, for the runtime to follow: RGB
resized to 448x448 and scaled to [0, 1] (skimage ``resize``), no mean/std normalisation (mean 0,
std 1), and ``np.swapaxes(image, 0, -1)``: the network sees the picture transposed, (C, W, H)
(``transpose_hw``). The file is read with ``torch.load(weights_only=True)``: tensors and plain
containers only, no code runs; a file that needs more is refused.
"""

from __future__ import annotations

import pickle
import re
import shlex
from collections import Counter
from pathlib import Path

import torch

from pagkd_core.data.layouts import canonical_class
from pagkd_core.digest import file_sha256
from pagkd_core.models import LesionNet, build_model

__all__ = ["AUTHORS", "FORMATS", "authors_student", "import_checkpoint", "read_state_dict", "torchvision_check"]

FORMATS = ("pagkd-authors",)

# What the authors' code says of their students (github.com/Huster-Hq/PaGKD, test.py and the loader).
AUTHORS = {
    "repository": "https://github.com/Huster-Hq/PaGKD",
    "terms": "the PaGKD authors' weights, under their terms, for research use; not part of this repository",
    "backbone": "resnet50",
    "class_names": ["Hyperplasia", "Adenoma", "Adenocarcinoma"],  # their label order
    "input_size": 448,
    "preprocessing": "skimage.transform.resize(rgb, (448, 448)) -> float in [0, 1]; no mean/std; "
    "np.swapaxes(image, 0, -1), so the network sees (C, W, H)",
}


# -- reading -------------------------------------------------------------------------------
def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a PyTorch checkpoint holding a state dict (a mapping of names to tensors;
    entries that are not tensors, such as an epoch count, are left out). Loaded with
    ``weights_only=True``: nothing in the file is executed; one that needs more is refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is many lines of advice; the one fact is the global it would have to import
        needs = re.search(r"GLOBAL (\S+)", str(e))
        if needs:
            raise ValueError(f"{path}: refused: loading it would run code ({needs.group(1)}), not just read "
                             f"tensors; only state dicts are read (torch.load with weights_only=True)") from None
        why = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(e))
        raise ValueError(f"{path}: not a PyTorch checkpoint torch.load can read "
                         f"({why.group(1).strip() if why else 'unreadable pickle'})") from None
    except Exception as e:  # noqa: BLE001 - a damaged or foreign file: KeyError, RuntimeError, EOFError...
        raise ValueError(f"{path}: not a PyTorch checkpoint torch.load can read "
                         f"({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: holds a {type(obj).__name__} without tensors, not a state dict")
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


# -- pagkd-authors -------------------------------------------------------------------------
def authors_student(state: dict[str, torch.Tensor]) -> tuple[LesionNet, dict[str, int]]:
    """(our LesionNet with the authors' student weights, {dropped top-level name: tensor count})."""
    student = {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")}
    if not student:
        tops = sorted({k.split(".", 1)[0] for k in state})
        raise ValueError(f"no 'student.*' tensors, so not a pagkd-authors checkpoint (it holds: {', '.join(tops)})")
    for key in ("fc.weight", "conv_embedd.weight"):
        if key not in student:
            raise ValueError(f"not a pagkd-authors checkpoint: 'student.{key}' is missing")
    num_classes, embed_dim = int(student["fc.weight"].shape[0]), int(student["conv_embedd.weight"].shape[0])
    mapped = {}
    for k, v in student.items():
        if k.startswith("fc."):
            mapped["head." + k.removeprefix("fc.")] = v
        elif k.startswith("conv_embedd."):
            mapped["proj." + k.removeprefix("conv_embedd.")] = v
        else:  # timm's resnet50 names its parameters as torchvision does
            mapped["backbone." + k] = v
    # their embedding has no bias; a zero one computes the same map
    mapped.setdefault("proj.bias", torch.zeros(embed_dim, dtype=student["conv_embedd.weight"].dtype))
    model = build_model(AUTHORS["backbone"], num_classes, embed_dim)
    try:
        model.load_state_dict(mapped)
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
        raise ValueError(f"the checkpoint's student is not the authors' ResNet-50: {first[:200]}") from None
    dropped = Counter(k.split(".", 1)[0] for k in state if not k.startswith("student."))
    return model.eval(), dict(sorted(dropped.items()))


def torchvision_check(model: LesionNet, state: dict[str, torch.Tensor], input_size: int) -> float:
    """Max |logit difference| between ``model`` and torchvision's ResNet-50 (the layout the
    authors' student is built from) holding the checkpoint's student weights, on random input:
    shows that every tensor went where that network reads it."""
    import torchvision

    student = {k.removeprefix("student."): v for k, v in state.items()
               if k.startswith("student.") and not k.startswith("student.conv_embedd.")}
    ref = torchvision.models.resnet50(num_classes=model.num_classes)
    ref.load_state_dict(student)
    x = torch.randn(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return float((model.eval()(x) - ref.eval()(x)).abs().max())


def import_checkpoint(
    path: str | Path,
    out: str | Path,
    fmt: str = "pagkd-authors",
    input_size: int | None = None,
    class_names: list[str] | None = None,
    onnx: bool = True,
    command: str = "",
) -> dict:
    """Convert ``path`` and write it as the exported student ``out``; returns the metadata, with
    ``imported_from`` saying where it came from, what was dropped and what was checked.
    ``input_size``: the input the student runs at (default: the authors' 448)."""
    from pagkd_core.export import export_student

    if fmt not in FORMATS:
        raise ValueError(f"unknown checkpoint format {fmt!r}; known: {', '.join(FORMATS)}")
    path, input_size = Path(path), int(input_size or AUTHORS["input_size"])
    if input_size < 32:  # ResNet-50 downsamples 32x
        raise ValueError(f"input size {input_size} is below ResNet-50's 32 px")
    state = read_state_dict(path)
    model, dropped = authors_student(state)
    theirs = class_names or AUTHORS["class_names"]
    if len(theirs) != model.num_classes:
        raise ValueError(f"the checkpoint has {model.num_classes} classes but {len(theirs)} class names "
                         f"({', '.join(theirs)}); give --class-names in its label order")
    diff = torchvision_check(model, state, input_size)
    if diff > 1e-4:  # the same operations in the same order: equal to the last bit on one machine
        raise ValueError(f"converted logits differ from torchvision's ResNet-50 by {diff:.2e}; not converted")
    digest = file_sha256(path)
    source = {
        "format": fmt, "file": path.name, "sha256": digest, **{k: AUTHORS[k] for k in ("repository", "terms")},
        "class_names": list(theirs), "trained_input_size": AUTHORS["input_size"],
        "preprocessing": AUTHORS["preprocessing"],
        # ours: area averaging of the uint8 frame, then /255 (docs/engines.md compares the two)
        "resize_here": "area averaging (OpenCV/swscale), not skimage's Gaussian-smoothed bilinear",
        "dropped": dropped, "checked": {"against": "torchvision resnet50", "max_abs_logit_diff": diff},
    }
    return export_student(
        model, out,
        # our names for their classes (pagkd_core.data.layouts), in their label order: metrics and
        # alerts know which classes are neoplastic by these names
        class_names=[canonical_class(c) for c in theirs],
        input_size=input_size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), transpose=True,
        config_hash="", metrics={}, synthetic=False, onnx=onnx, extra={"imported_from": source},
        train_command=f"trained by the PaGKD authors ({AUTHORS['repository']}); imported with: "
        + (command or "python -m pagkd_core import-checkpoint " + shlex.join([str(path), "--format", fmt])),
    )

"""The exported student: its file format, owned here for the training core and the runtime alike.

An exported student is ``<stem>.safetensors`` (weights) + ``<stem>.json`` (metadata), format
``pagkd-student/1`` (docs/architecture.md), with optional siblings ``<stem>.onnx`` (the fp32
graph) and ``<stem>.int8.onnx`` (calibrated by benchmarks.int8). A fold's NBI teacher is
exported the same way beside its student, as ``<stem>.nbi.*`` (``teacher_stem``). Loading never
unpickles: weights come from safetensors, metadata from JSON.

pagkd_core.export writes students; ``load_student`` reads one back as a torch module and
stream.engines.model_source reads the same files for the runtime. Nothing heavy is imported at
module level (torch, safetensors and the model factory are imported where weights are touched):
the runtime reads metadata and runs ONNX graphs without them, and never imports pagkd_core.data.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from pagkd_core.outputs import background_index, output_set

if TYPE_CHECKING:
    import torch

    from pagkd_core.models import LesionNet

__all__ = [
    "FORMAT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "META_KEYS",
    "OPTIONAL_RUN_KEYS",
    "RUN_KEYS",
    "cache_meta",
    "check_meta",
    "check_run_meta",
    "export_onnx",
    "input_transform",
    "load_student",
    "meta_path",
    "read_meta",
    "sibling",
    "student_stem",
    "teacher_stem",
]

FORMAT = "pagkd-student/1"

# What a runtime needs to run a model: its outputs and the input it expects. A model held in
# memory (stream's ModelSource.from_module) carries no more. The runtime's cache key hashes these
# keys' values (cache_meta, ModelSource.weights_hash), so changing the list invalidates every
# cached graph.
RUN_KEYS = ("num_classes", "class_names", "input_size", "mean", "std")
# Run keys a file may omit, with the value its absence means: students written before a key
# existed keep loading, and keep their cache key (ModelSource.weights_hash hashes one of these
# only where it differs from the default, so no cached graph or int8 report goes stale).
# transpose_hw: the network's input is the resized picture with rows and columns swapped,
# x[c, i, j] = picture[j, i, c] (students trained on np.swapaxes(image, 0, -1) input, such as the
# PaGKD authors' that pagkd_core.interop imports); input_size stays the network's input shape.
OPTIONAL_RUN_KEYS = {"transpose_hw": False}
# What every exported file carries besides: the format, what rebuilds the network, its provenance.
# Optional keys (docs/architecture.md): output_stride, pool, weights_dtype, outputs, modality, onnx, ...;
# alert_setting: the runtime's smoothing + alert setting for this student, in the grammar of
# ``python -m stream evaluate --setting`` (e.g. "window:size=8,threshold=0.7,presence=0.9"; read by
# stream.config, under the runtime's files and flags, because the best setting depends on the model),
# and alert_setting_chosen_on: where it came from (the command and videos; ``python -m stream tune``
# writes both). Neither is a run key: writing them changes no cache key.
META_KEYS = (
    "format", "backbone", *RUN_KEYS, "embed_dim", "config_hash", "metrics", "train_command", "synthetic"
)

# The statistics the backbones were pretrained with: training normalises with them, export records
# them in the metadata, and the runtime normalises with what the metadata says.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The files of one student; ".int8.onnx" comes before ".onnx" so that both name the same stem.
_SUFFIXES = (".int8.onnx", ".safetensors", ".json", ".onnx")
# int8 graphs made for an instruction set, <stem>.int8.<tag>.onnx (named by stream.engines.model_source)
_INT8_VARIANT = re.compile(r"\.int8\.[a-z0-9_]+\.onnx$")


# -- where the files are -------------------------------------------------------------------
def student_stem(path: str | os.PathLike) -> Path:
    """The stem of the student that ``path`` names: any of its files, or the stem itself."""
    p = Path(path)
    variant = _INT8_VARIANT.search(p.name)
    if variant:
        return p.with_name(p.name[: variant.start()])
    for suffix in _SUFFIXES:
        if p.name.endswith(suffix):
            return p.with_name(p.name[: -len(suffix)])
    return p


def sibling(stem: Path, suffix: str) -> Path:
    """``<stem><suffix>``. Not with_suffix: a stem may hold a dot of its own (``<stem>.nbi``)."""
    return stem.with_name(stem.name + suffix)


def teacher_stem(student: str | os.PathLike) -> Path:
    """Where the NBI teacher of the student at ``student`` (any of its files, or the stem) is
    exported: ``<stem>.nbi``. One rule for the writer (export --teacher) and the runtime."""
    return sibling(student_stem(student), ".nbi")


# -- metadata ------------------------------------------------------------------------------
def check_run_meta(meta: dict, where: object) -> dict:
    """``meta`` if it holds what a runtime needs (RUN_KEYS, one name per class); else ValueError."""
    missing = [k for k in RUN_KEYS if k not in meta]
    if missing:
        raise ValueError(f"student metadata {where} lacks {', '.join(missing)}; re-export the student")
    if len(meta["class_names"]) != int(meta["num_classes"]):
        raise ValueError(f"student metadata {where}: {len(meta['class_names'])} class names for "
                         f"num_classes={meta['num_classes']}")
    flag = meta.get("transpose_hw", OPTIONAL_RUN_KEYS["transpose_hw"])
    if not isinstance(flag, bool):  # a file's content, not a caller's bug: ValueError, one line in the CLIs
        raise ValueError(f"student metadata {where}: transpose_hw must be true or false, got {flag!r}")  # noqa: TRY004
    return meta


def input_transform(meta: dict) -> dict:
    """What the runtime does to a resized RGB frame before the network, from the metadata:
    ``{"mean", "std", "transpose"}`` (``stream.preprocess.Preprocessor``'s keywords). One reader
    of these keys, so every user of the runtime's preprocessing (the pipeline's lanes, int8
    calibration) honours the optional ones alike."""
    return {"mean": tuple(float(m) for m in meta["mean"]), "std": tuple(float(s) for s in meta["std"]),
            "transpose": bool(meta.get("transpose_hw", OPTIONAL_RUN_KEYS["transpose_hw"]))}


def cache_meta(meta: dict) -> dict:
    """The metadata values a derived graph or engine depends on: RUN_KEYS, and each optional
    run key that differs from its default (so a student's key is the same as before the
    optional key existed). stream.engines.model_source hashes this with the weights."""
    out = {k: meta[k] for k in RUN_KEYS}
    out.update({k: meta[k] for k, default in OPTIONAL_RUN_KEYS.items() if meta.get(k, default) != default})
    return out


def check_meta(meta: dict, where: object) -> dict:
    """``meta`` if it is an exported student's metadata: this format exactly (a reader of format 1
    cannot vouch for another), every META_KEYS key, and an output set that matches the class list.
    Files written before ``outputs`` and ``modality`` existed pass: readers take a lesion-only WLI
    student then (pagkd_core.outputs)."""
    if meta.get("format") != FORMAT:
        raise ValueError(f"{where}: format {meta.get('format')!r} is not {FORMAT!r}")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"{where} lacks keys: {', '.join(missing)}; re-export the student")
    if "outputs" in meta and meta["outputs"] != output_set(meta["class_names"]):
        raise ValueError(f"{where}: outputs {meta['outputs']} do not match class_names {meta['class_names']}")
    return check_run_meta(meta, where)


def meta_path(path: str | os.PathLike) -> Path:
    """The metadata file (``<stem>.json``) of the student that ``path`` names."""
    return sibling(student_stem(path), ".json")


def read_meta(path: str | os.PathLike) -> tuple[Path, dict]:
    """(stem, checked metadata) of the student that ``path`` names (any of its files, or the stem)."""
    stem, js = student_stem(path), meta_path(path)
    if not js.is_file():
        raise FileNotFoundError(f"student metadata not found: {js} (no student metadata, no student: "
                                f"python -m pagkd_core export writes <stem>.json next to the weights)")
    return stem, check_meta(json.loads(js.read_text()), js)


# -- weights -------------------------------------------------------------------------------
def load_student(
    path: str | os.PathLike, device: str | torch.device = "cpu", meta: dict | None = None
) -> tuple[LesionNet, dict]:
    """(model in eval mode, metadata) of the student that ``path`` names. ``meta``: metadata not
    on disk yet (export_student traces the ONNX graph from the stored weights before it writes
    the JSON)."""
    from safetensors.torch import load_file

    from pagkd_core.models import build_model

    if meta is None:
        stem, meta = read_meta(path)
    else:
        stem = student_stem(path)
        check_meta(meta, sibling(stem, ".json"))
    weights = sibling(stem, ".safetensors")
    if not weights.is_file():
        raise FileNotFoundError(f"student weights not found: {weights}")
    stride = int(meta.get("output_stride", 32))
    model = build_model(meta["backbone"], meta["num_classes"], meta["embed_dim"], output_stride=stride,
                        pool=meta.get("pool", "mean"), background=background_index(meta["class_names"]))
    # fp16 storage halves the file; the model computes in fp32
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(weights)).items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(
            f"{weights} does not match backbone '{meta['backbone']}': {str(e).splitlines()[0]}"
        ) from None
    return model.to(device).eval(), meta


def load_student_head(model, path: str | Path, class_names: list[str]) -> None:
    """The classifier and embedding of the student exported as ``path`` (its .safetensors, with its
    metadata beside), which must be this network with ``class_names`` as its outputs, in order."""
    from pagkd_core.models import file_state

    try:
        _, meta = read_meta(path)
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"model.pretrained_head: {path} is not an exported student ({e})") from None
    ours = {"class_names": list(class_names), "backbone": model.backbone_name, "output_stride": model.output_stride}
    for key, value in ours.items():
        if meta.get(key, value) != value:
            raise ValueError(f"model.pretrained_head: {path} has {key} {meta.get(key)}, this network {value}")
    state = file_state(Path(path))
    own = {k: v for k, v in model.state_dict().items() if k.startswith(("head.", "proj."))}
    bad = [k for k in own if k not in state or state[k].shape != own[k].shape]
    if bad:
        raise ValueError(f"model.pretrained_head: {path} has no '{bad[0]}' of shape {tuple(own[bad[0]].shape)}")
    model.load_state_dict({k: state[k] for k in own}, strict=False)


# -- ONNX ----------------------------------------------------------------------------------
def export_onnx(
    model: torch.nn.Module, path: str | os.PathLike, input_size: int | tuple[int, int], opset: int = 18
) -> Path:
    """The ONNX graph of ``model``: input ``input`` (N,3,H,W float32, normalised), output ``logits``,
    dynamic N; written atomically (write, then rename), so a concurrent reader never sees half a file.

    One exporter for the training core and the runtime: torch's dynamo exporter. Its graph has
    static spatial shapes (36 nodes for the bundled ResNet-10t, where the TorchScript exporter's
    118 recompute pooling and padding shapes at run time with Shape/Gather/Ceil ops); the bundled
    int8 graphs were calibrated from it (opset 18), and ONNX Runtime runs and quantises it at any
    input size, square or not. The TorchScript exporter, faster to run, is deprecated. The cost:
    seconds per export, and onnxscript (a dependency; where it is missing, the ImportError makes
    ``build_engine("auto")`` fall back to the torch engine)."""
    import torch

    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.onnx")
    x = torch.randn(2, 3, int(h), int(w))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model.eval().cpu(),
                (x,),
                str(tmp),
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path

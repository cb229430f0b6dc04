"""``python -m pagkd_core soup STUDENT... --out STEM``: one student whose weights are the mean of
several exported students (a uniform "model soup", Wortsman et al. 2022).

Why: students fine-tuned from one starting point with different seeds or small changes of recipe
land in one basin, and their mean is at least about as good as a typical one of them, without the
luck of one seed (docs/training.md, "A soup of the four": four fine-tunes of ``wli_gate15b``'s
backbone). Students from different starting points are not in one basin; their mean is a
broken network, and nothing here can tell: soup only siblings.

The ingredients must agree on everything the runtime reads besides the weights (backbone, classes,
input, normalisation, stride, modality). Integer buffers (BatchNorm's batch counts) come from the
first. The soup has no test metrics and no alert setting of its own: evaluate it and run
``python -m stream tune`` on it like any new student. Its NBI teacher is copied from the
ingredients when they all carry the same one (byte for byte), and left out otherwise.
"""
from __future__ import annotations

import glob
import shutil
from pathlib import Path

import torch

from pagkd_core.digest import file_sha256
from pagkd_core.export import export_student
from pagkd_core.student import load_student, sibling, student_stem, teacher_stem

# What the runtime reads besides the weights: ingredients must agree on every one.
MUST_AGREE = ("backbone", "num_classes", "class_names", "modality", "input_size", "mean", "std", "transpose_hw",
              "embed_dim", "output_stride", "pool")


def mean_state(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The key-wise mean of ``states`` (float tensors, in float32); other tensors from the first."""
    first = states[0]
    return {k: torch.stack([s[k].float() for s in states]).mean(0) if v.is_floating_point() else v.clone()
            for k, v in first.items()}


def shared_teacher(students: list[Path]) -> Path | None:
    """The teacher stem of the first ingredient when every ingredient has that teacher, byte for byte."""
    stems = [teacher_stem(s) for s in students]
    weights = [sibling(t, ".safetensors") for t in stems]
    if not all(w.is_file() for w in weights) or len({file_sha256(w) for w in weights}) != 1:
        return None
    return stems[0]


def soup(students: list[str | Path], out: str | Path, *, fp16: bool = False, command: str = "") -> dict:
    """Write the soup of ``students`` at ``out`` (safetensors + JSON, no ONNX graph: int8 and ONNX
    come after, from benchmarks.int8); returns its metadata. ValueError on a mismatch."""
    if len(students) < 2:
        raise ValueError(f"a soup needs at least two students, got {len(students)}")
    stems = [student_stem(s) for s in students]
    if len({s.resolve() for s in stems}) != len(stems):
        raise ValueError("the same student is listed twice: it would weigh double")
    loaded = [load_student(s) for s in stems]
    first_meta = loaded[0][1]
    for stem, (_, meta) in zip(stems[1:], loaded[1:]):
        for key in MUST_AGREE:
            if meta.get(key) != first_meta.get(key):
                raise ValueError(f"{stem}: {key} {meta.get(key)!r} differs from {stems[0]}'s {first_meta.get(key)!r}; "
                                 "a soup mixes only students of one architecture and output set")
    model = loaded[0][0]
    model.load_state_dict(mean_state([m.state_dict() for m, _ in loaded]))
    meta = export_student(
        model, out, class_names=list(first_meta["class_names"]), input_size=int(first_meta["input_size"][0]),
        mean=first_meta["mean"], std=first_meta["std"], train_command=command,
        synthetic=any(bool(m.get("synthetic", True)) for _, m in loaded), fp16=fp16, onnx=False,
        modality=first_meta.get("modality", "WLI"), transpose=bool(first_meta.get("transpose_hw", False)),
        extra={"soup_of": [str(s) for s in stems],
               "soup_train_commands": [m.get("train_command", "") for _, m in loaded]})
    teacher = shared_teacher(stems)
    if teacher is not None:  # every file of it (<stem>.nbi.*: weights, JSON, its graphs and their reports)
        dest = teacher_stem(out)
        for f in teacher.parent.glob(glob.escape(teacher.name) + ".*"):
            shutil.copyfile(f, sibling(dest, f.name[len(teacher.name):]))
    meta["teacher_copied"] = teacher is not None
    return meta

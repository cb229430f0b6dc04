"""A small exported student that has learnt something, for engine and evaluation tests.

A random network's logits are all near zero, so any precision change flips its argmax; a few
SGD steps on an easy synthetic task (bright blob vs stripes; all data synthetic) give it real
decision margins, which makes top-1 agreement between engines a meaningful check.

Tests of engine selection that need a valid graph but no trained weights use ``mean_graph``:
two ONNX nodes, no torch (imported only where a student is trained).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pagkd_core.student import IMAGENET_MEAN, IMAGENET_STD

SIZE = 64
CLASSES = ["hyperplastic", "adenoma"]


def toy_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n,3,SIZE,SIZE) uint8 pictures and labels: class 1 has a dark blob, class 0 stripes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    imgs, labels = [], rng.integers(0, 2, n)
    for lab in labels:
        base = 150 + 30 * np.sin(xx / rng.uniform(3, 9) + rng.uniform(0, 6)) * np.cos(yy / rng.uniform(3, 9))
        rgb = np.stack([base + 50, base * 0.7, base * 0.6], 0) + rng.normal(0, 12, (3, SIZE, SIZE))
        cx, cy, r = rng.uniform(16, 48, 2).tolist() + [rng.uniform(6, 14)]
        blob = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        if lab:
            rgb[:, blob] *= 0.45
        else:
            rgb[:, blob] += 35 * np.sin(xx[blob] / 1.5)
        imgs.append(np.clip(rgb, 0, 255).astype(np.uint8))
    return np.stack(imgs), labels


def normalise(u8: np.ndarray) -> np.ndarray:
    mean = np.array(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)
    std = np.array(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)
    return ((u8.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)


def mean_graph(path, size: int, name: str = "tiny") -> None:
    """(N,3,size,size) -> (N,3) logits = per-channel mean: a valid student graph in two nodes
    (``name`` tells two such files apart by content)."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["logits"])]
    g = helper.make_graph(nodes, name,
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def train_toy_student(out_dir: Path, backbone: str = "test_resnet", steps: int = 30, onnx: bool = True) -> Path:
    """Train briefly and export with the training core's exporter; returns the .json path."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the 2-core CI box is shared: one thread avoids spin-wait collapse
    try:
        return _train(out_dir, backbone, steps, onnx)
    finally:
        torch.set_num_threads(threads)


def _train(out_dir: Path, backbone: str, steps: int, onnx: bool) -> Path:
    import torch

    from pagkd_core.export import export_student
    from pagkd_core.models import build_model

    torch.manual_seed(0)
    model = build_model(backbone, len(CLASSES), embed_dim=16)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    imgs, labels = toy_images(16 * steps, seed=1)
    x_all, y_all = torch.from_numpy(normalise(imgs)), torch.from_numpy(labels)
    model.train()
    for i in range(steps):
        x, y = x_all[i * 16:(i + 1) * 16], y_all[i * 16:(i + 1) * 16]
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    export_student(model, out_dir / "toy", class_names=CLASSES, input_size=SIZE, onnx=onnx,
                   train_command="tests/engine_fixtures.py (synthetic toy task)")
    return out_dir / "toy.json"


_CACHE: dict[str, Path] = {}


def shared_student() -> Path:
    """One trained toy student per test session, shared by every test module that needs one."""
    if "student" not in _CACHE:
        import atexit
        import shutil
        import tempfile
        root = Path(tempfile.mkdtemp(prefix="pagkd-toy-"))
        atexit.register(shutil.rmtree, root, True)
        _CACHE["student"] = train_toy_student(root)
    return _CACHE["student"]

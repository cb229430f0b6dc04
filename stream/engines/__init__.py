"""Inference engines behind one interface, built by name (timm-like factory).

    engine = build_engine("auto", "runs/student.json", device="auto", max_batch=8)
    logits = engine.infer(batch)          # batch: (N,3,H,W) float32, normalised; numpy or torch
    engine.close()

An engine runs the network on the input as given: normalisation and the optional transposed
layout a student's metadata asks for (``transpose_hw``) are the preprocessor's
(``stream.preprocess.Preprocessor.for_model``), the same for every kind.

Kinds: ``tensorrt`` (torch-tensorrt, CUDA), ``onnxruntime`` (CPU fp32/int8, CUDA provider),
``torch`` (eager / torch.compile, CPU or CUDA) and ``auto`` (best available first; on CPU, whether
the int8 graph pays off is measured on this host: ``auto_choice``).
"""
from __future__ import annotations

import abc
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from .model_source import ModelSource

__all__ = [
    "CPU_ENGINE_THREADS",
    "Engine",
    "EngineError",
    "ModelSource",
    "auto_candidates",
    "build_engine",
    "list_engines",
    "register_engine",
    "resolve_device",
    "usable_cores",
]


def usable_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's core count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# A pipeline's CPU engine threads unless it names a number: half the cores. Decoding and
# preprocessing run beside the engine, and more intra-op threads only spin-wait against them
# (measured: docs/stream.md). An engine built directly keeps its library's default (threads=None).
CPU_ENGINE_THREADS = max(1, usable_cores() // 2)


class EngineError(RuntimeError):
    """An engine cannot be built or run here; the message says what to do instead."""


class Engine(abc.ABC):
    """One model ready to run. Subclasses implement ``_run`` on at most ``max_batch`` items."""

    name: str = "engine"

    def __init__(self, source: ModelSource, device: str, precision: str, max_batch: int):
        if max_batch < 1:
            raise EngineError(f"max_batch must be >= 1, got {max_batch}")
        self.source = source
        self.device = device
        self.precision = precision
        self.max_batch = int(max_batch)
        self.input_size: tuple[int, int] = tuple(source.meta["input_size"])  # type: ignore[assignment]
        self.class_names: list[str] = list(source.meta["class_names"])
        self.num_classes = int(source.meta["num_classes"])

    @abc.abstractmethod
    def _run(self, batch: Any) -> np.ndarray:
        """Logits (n, K) float32 for n <= max_batch inputs (numpy or torch, already checked)."""

    def infer(self, batch: Any) -> np.ndarray:
        """Logits (N, K) float32 numpy; batches larger than ``max_batch`` are run in chunks."""
        shape = tuple(batch.shape)
        h, w = self.input_size
        if len(shape) != 4 or shape[1] != 3 or shape[2:] != (h, w):
            raise EngineError(f"{self.name}: expected a (N,3,{h},{w}) float32 batch, got {shape}; "
                              f"resize frames to the model input size first (stream.preprocess)")
        if shape[0] == 0:
            return np.zeros((0, self.num_classes), np.float32)
        outs = [self._run(batch[i:i + self.max_batch]) for i in range(0, shape[0], self.max_batch)]
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def warmup(self, iters: int = 2, batch: int | None = None) -> None:
        x = np.zeros((batch or self.max_batch, 3, *self.input_size), np.float32)
        for _ in range(iters):
            self.infer(x)

    def describe(self) -> dict:
        return {"engine": self.name, "device": self.device, "precision": self.precision,
                "max_batch": self.max_batch, "input_size": list(self.input_size),
                "class_names": self.class_names, "model": self.source.name}

    def close(self) -> None:
        """Release device memory and sessions; the engine must not be used afterwards."""

    def __enter__(self) -> Engine:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.precision} on {self.device}, max_batch={self.max_batch})"


# kind -> (module, class name, python packages it needs); modules are imported lazily so that a
# missing optional backend (torch-tensorrt) never breaks the others.
_REGISTRY: dict[str, tuple[str, str, tuple[str, ...]]] = {}


def register_engine(kind: str, module: str, cls: str, needs: tuple[str, ...] = ()) -> None:
    _REGISTRY[kind] = (module, cls, needs)


register_engine("torch", "stream.engines.torch_engine", "TorchEngine", ("torch",))
register_engine("onnxruntime", "stream.engines.onnxruntime_engine", "OnnxRuntimeEngine", ("onnxruntime",))
register_engine("tensorrt", "stream.engines.tensorrt_engine", "TensorRTEngine", ("torch_tensorrt",))


def list_engines(available_only: bool = False) -> list[str]:
    kinds = list(_REGISTRY)
    if available_only:
        kinds = [k for k in kinds if all(importlib.util.find_spec(p) for p in _REGISTRY[k][2])]
    return kinds


def _engine_class(kind: str) -> type[Engine]:
    if kind not in _REGISTRY:
        raise EngineError(f"unknown engine {kind!r}; choose one of: auto, {', '.join(_REGISTRY)}")
    module, cls, needs = _REGISTRY[kind]
    missing = [p for p in needs if importlib.util.find_spec(p) is None]
    if missing:
        hint = "install the GPU extra: pip install -e '.[gpu]'" if kind == "tensorrt" else \
            f"pip install {' '.join(missing)}"
        raise EngineError(f"engine {kind!r} needs {', '.join(missing)} which is not installed; {hint} "
                          f"or use --engine auto")
    return getattr(importlib.import_module(module), cls)


def cuda_available() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False


def resolve_device(device: str) -> str:
    if device in ("auto", None):
        return "cuda" if cuda_available() else "cpu"
    if device.startswith("cuda") and not cuda_available():
        raise EngineError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise EngineError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    return device


def ort_has_cuda() -> bool:
    try:
        import onnxruntime as ort
        return "CUDAExecutionProvider" in ort.get_available_providers()
    except ImportError:
        return False


def auto_candidates(device: str, source: ModelSource | None = None,
                    precision: str = "auto") -> list[tuple[str, dict]]:
    """Engines to try for ``auto``, best guess first, as (kind, extra options). On CPU with a
    calibrated int8 graph (the one made for this host: ``ModelSource.int8_graph``),
    ``build_engine`` reorders them by this host's probe (auto_choice)."""
    if device.startswith("cuda"):
        cands: list[tuple[str, dict]] = []
        if importlib.util.find_spec("torch_tensorrt") is not None:
            cands.append(("tensorrt", {}))
        if ort_has_cuda():
            cands.append(("onnxruntime", {}))
        return cands + [("torch", {})]
    if precision not in ("auto", "fp32", "int8"):  # bf16 (fp16): only the torch engine runs them on CPU
        return [("torch", {})]
    cands = []
    int8 = source.int8_onnx_path() if source is not None else None
    if precision == "int8" or (precision == "auto" and int8 is not None):
        cands.append(("onnxruntime", {"precision": "int8"}))
    cands += [("onnxruntime", {"precision": "fp32"}), ("torch", {"precision": "fp32"})]
    return cands


_SAID: set[str] = set()


def _print_line(line: str) -> None:
    # Once per process: a process that builds a model's engine again (the UI for each replay, a
    # Ray worker per setting) would otherwise say the same cached decision each time.
    if line not in _SAID:
        _SAID.add(line)
        print(line, file=sys.stderr, flush=True)


def build_engine(kind: str, model_path: Any, device: str = "auto", max_batch: int = 8,
                 precision: str = "auto", on_fallback: Callable[[str], None] | None = None,
                 on_choice: Callable[[str], None] | None = None, **opts) -> Engine:
    """Build an engine by name. ``model_path`` is an exported student (.json/.safetensors/stem) or
    a :class:`ModelSource`. ``auto`` tries the best available engine first and reports each
    fallback through ``on_fallback`` (default: a warning). On CPU, with an int8 graph beside the
    student and ``precision="auto"``, "best" is measured on this host (``auto_choice``: probed on
    first use, then cached) and its one line goes to ``on_choice`` (default: stderr)."""
    source = model_path if isinstance(model_path, ModelSource) else ModelSource.from_path(model_path)
    device = resolve_device(device)
    if kind != "auto":
        return _engine_class(kind)(source, device=device, max_batch=max_batch, precision=precision, **opts)

    def build(cand: str, extra: dict) -> Engine:
        return _engine_class(cand)(source, device=device, max_batch=max_batch, **{**opts, "precision": precision, **extra})

    cands = auto_candidates(device, source, precision)
    if precision == "auto" and ("onnxruntime", {"precision": "int8"}) in cands:  # a forced precision skips it
        from .auto_choice import choose
        cands = choose(source, source.int8_graph(), cands, build, opts, on_choice or _print_line)
    errors = []
    for cand, extra in cands:
        kw = {**opts, "precision": precision, **extra}
        try:
            return build(cand, extra)
        except (EngineError, ImportError, RuntimeError, OSError) as e:
            msg = f"engine {cand!r} ({kw['precision']}) unavailable: {str(e).splitlines()[0]}"
            errors.append(msg)
            if on_fallback is not None:
                on_fallback(msg)
            else:
                import warnings
                warnings.warn(msg + "; trying the next engine", RuntimeWarning, stacklevel=2)
    raise EngineError("no engine could be built: " + " | ".join(errors))

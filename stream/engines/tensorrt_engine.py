"""TensorRT engine through torch-tensorrt (the ``gpu`` extra): fp16, dynamic batch, disk cache.

Building a TensorRT engine takes minutes, so built engines are cached on disk under a key made
of everything that makes an engine invalid: the weights, the shape profile, the precision, the
GPU model and the library versions. The profile's ``opt`` batch is the batch actually run (the
engine's kernels are tuned for it); ``min`` is 1 so a partial batch still runs.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import Engine, EngineError
from .model_source import ModelSource, cache_dir

Shape = tuple[int, int, int, int]


@dataclass(frozen=True)
class ShapeProfile:
    """A TensorRT optimisation profile for an NCHW input with a dynamic batch dimension."""

    min: Shape
    opt: Shape
    max: Shape

    @classmethod
    def for_batch(cls, input_size: tuple[int, int], opt_batch: int, max_batch: int) -> ShapeProfile:
        if not 1 <= opt_batch <= max_batch:
            raise EngineError(f"need 1 <= opt_batch <= max_batch, got opt={opt_batch} max={max_batch}")
        h, w = input_size
        return cls((1, 3, h, w), (opt_batch, 3, h, w), (max_batch, 3, h, w))

    def accepts(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == 4 and all(lo <= s <= hi for s, lo, hi in zip(shape, self.min, self.max))


def runtime_versions() -> dict[str, str]:
    """Versions that change what a serialized engine means (missing packages read 'none')."""
    out = {}
    for mod in ("torch", "torch_tensorrt", "tensorrt"):
        try:
            out[mod] = str(importlib.import_module(mod).__version__)
        except ImportError:
            out[mod] = "none"
    try:
        import torch
        out["cuda"] = str(torch.version.cuda)
        out["cudnn"] = str(torch.backends.cudnn.version())
    except ImportError:  # pragma: no cover
        pass
    return out


def gpu_name(device: str = "cuda") -> str:
    import torch
    if not torch.cuda.is_available():
        return "no-gpu"
    props = torch.cuda.get_device_properties(torch.device(device))
    return f"{props.name} sm{props.major}{props.minor}"


def cache_key(model_hash: str, profile: ShapeProfile, precision: str, gpu: str,
              versions: dict[str, str]) -> str:
    """Stable 20-hex key; any change of model, shapes, precision, GPU or versions changes it."""
    blob = json.dumps({"model": model_hash, "profile": asdict(profile), "precision": precision,
                       "gpu": gpu, "versions": versions}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def engine_cache_path(key: str, root: Path | None = None) -> Path:
    return (root or cache_dir() / "tensorrt") / f"{key}.ep"


class TensorRTEngine(Engine):
    name = "tensorrt"

    def __init__(self, source: ModelSource, device: str = "cuda", max_batch: int = 8,
                 precision: str = "auto", opt_batch: int | None = None, cuda_graphs: bool = False,
                 cache_root: str | Path | None = None, workspace_gb: float = 1.0):
        try:
            import torch_tensorrt
        except ImportError as e:
            raise EngineError("torch-tensorrt is not installed (pip install -e '.[gpu]' on a CUDA host); "
                              "falling back to onnxruntime/torch is automatic with --engine auto") from e
        import torch
        if not device.startswith("cuda") or not torch.cuda.is_available():
            raise EngineError("the TensorRT engine needs a CUDA device; use --engine onnxruntime on CPU")
        precision = "fp16" if precision == "auto" else precision
        if precision not in ("fp16", "fp32"):
            raise EngineError(f"tensorrt precision must be fp16 or fp32, got {precision!r}")
        super().__init__(source, device, precision, max_batch)
        self.profile = ShapeProfile.for_batch(self.input_size, opt_batch or max_batch, max_batch)
        self.key = cache_key(source.weights_hash(), self.profile, precision, gpu_name(device),
                             runtime_versions())
        self.cache_path = engine_cache_path(self.key, Path(cache_root) if cache_root else None)
        self.from_cache = self.cache_path.is_file()
        module = self._load() if self.from_cache else self._build(torch_tensorrt, workspace_gb)
        self.module = module
        self._graphs_ctx = None
        if cuda_graphs:
            runtime = getattr(torch_tensorrt, "runtime", None)
            if runtime is None or not hasattr(runtime, "enable_cudagraphs"):
                raise EngineError("this torch-tensorrt has no runtime.enable_cudagraphs; drop cuda_graphs")
            # torch-tensorrt re-records its graph when the input shape changes
            self._graphs_ctx = runtime.enable_cudagraphs(module)
            self.module = self._graphs_ctx.__enter__()
            self.precision = f"{precision}+cudagraphs"

    def _build(self, torch_tensorrt: Any, workspace_gb: float):
        import torch
        model = self.source.load_torch().to(self.device)
        inputs = [torch_tensorrt.Input(min_shape=self.profile.min, opt_shape=self.profile.opt,
                                       max_shape=self.profile.max, dtype=torch.float32)]
        precisions = {torch.float16, torch.float32} if self.precision == "fp16" else {torch.float32}
        trt = torch_tensorrt.compile(model, ir="dynamo", inputs=inputs, enabled_precisions=precisions,
                                     workspace_size=int(workspace_gb * (1 << 30)), min_block_size=1)
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_name(self.cache_path.name + f".{os.getpid()}.tmp")
        try:
            # the Input specs (not an example tensor) keep the saved program's batch dynamic;
            # torch-tensorrt renamed `inputs` to `arg_inputs` along the way
            try:
                torch_tensorrt.save(trt, str(tmp), arg_inputs=inputs)
            except TypeError:
                torch_tensorrt.save(trt, str(tmp), inputs=inputs)
            os.replace(tmp, self.cache_path)
        except Exception as e:  # noqa: BLE001 - an unsavable engine still runs; it is rebuilt next time
            import warnings
            warnings.warn(f"TensorRT engine not cached ({str(e).splitlines()[0]})", RuntimeWarning)
        return trt

    def _load(self):
        import torch
        return torch.export.load(str(self.cache_path)).module()

    def _run(self, batch: Any) -> np.ndarray:
        import torch
        x = torch.from_numpy(np.ascontiguousarray(batch)) if isinstance(batch, np.ndarray) else batch
        x = x.to(self.device, dtype=torch.float32, non_blocking=True)
        with torch.inference_mode():
            out = self.module(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        return out.float().cpu().numpy()

    def describe(self) -> dict:
        return {**super().describe(), "profile": asdict(self.profile), "cache": str(self.cache_path),
                "from_cache": self.from_cache}

    def close(self) -> None:
        if self._graphs_ctx is not None:
            self._graphs_ctx.__exit__(None, None, None)
            self._graphs_ctx = None
        self.module = None

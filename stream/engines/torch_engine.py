"""PyTorch engine: eager or torch.compile, CPU or CUDA, channels_last, fp16/bf16, CUDA graphs.

CUDA graphs replay a captured kernel sequence and remove per-launch CPU overhead, which for a
small CNN at batch 1-8 is most of the GPU time; they need static shapes, so one graph is
captured per batch size actually seen (at most ``max_batch`` of them).
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch

from . import Engine, EngineError
from .model_source import ModelSource

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchEngine(Engine):
    name = "torch"

    def __init__(self, source: ModelSource, device: str = "cpu", max_batch: int = 8,
                 precision: str = "auto", compile: bool = False, channels_last: bool = True,
                 cuda_graphs: bool = False, compile_mode: str | None = None, threads: int | None = None):
        if precision == "auto":
            precision = "fp16" if device.startswith("cuda") else "fp32"
        if precision not in _DTYPES:
            raise EngineError(f"torch engine precision must be one of {list(_DTYPES)}, got {precision!r}")
        if precision == "fp16" and device == "cpu":
            raise EngineError("fp16 on CPU is slow and poorly supported; use --precision bf16 or fp32")
        if cuda_graphs and not device.startswith("cuda"):
            raise EngineError("CUDA graphs need a CUDA device; drop cuda_graphs or use --device cuda")
        if cuda_graphs and compile:
            raise EngineError("use either cuda_graphs or compile (compile_mode='reduce-overhead' "
                              "captures its own graphs), not both")
        super().__init__(source, device, precision, max_batch)
        if threads:
            torch.set_num_threads(int(threads))
        if device.startswith("cuda"):
            # shapes are static per batch size: let cuDNN time its algorithms once per shape
            torch.backends.cudnn.benchmark = True
        self.dtype = _DTYPES[precision]
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model = source.load_torch()
        # a private copy: converting dtype/layout in place would change a caller's module
        if source.module is not None:
            import copy
            model = copy.deepcopy(model)
        self.model = model.eval().to(device=device, dtype=self.dtype, memory_format=self.memory_format)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.compiled = bool(compile)
        self.forward = torch.compile(self.model, mode=compile_mode, dynamic=False) if compile else self.model
        self.cuda_graphs = bool(cuda_graphs)
        self._graphs: dict[int, tuple[Any, torch.Tensor, torch.Tensor]] = {}
        self._pinned: dict[tuple, torch.Tensor] = {}
        self._lock = threading.Lock()
        if compile:
            self.precision = f"{precision}+compile"
        if cuda_graphs:
            self.precision = f"{precision}+cudagraphs"

    def _to_input(self, batch: Any) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch)) if isinstance(batch, np.ndarray) else batch
        if x.device.type == "cpu" and self.device.startswith("cuda"):
            # a reused pinned staging buffer per shape: pinning on every call costs more than the copy;
            # reuse is safe because _run synchronises (output .cpu()) before the next call
            staging = self._pinned.get(tuple(x.shape))
            if staging is None or staging.dtype != x.dtype:
                staging = self._pinned[tuple(x.shape)] = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
            x = staging.copy_(x)
        return x.to(self.device, non_blocking=True).to(dtype=self.dtype, memory_format=self.memory_format)

    def _run(self, batch: Any) -> np.ndarray:
        # the pinned staging buffers and captured graphs are shared state: one call at a time
        # (several pipelines may share one engine; the batcher alone never calls concurrently)
        with self._lock:
            x = self._to_input(batch)
            if self.cuda_graphs:
                out = self._replay(x)
            else:
                with torch.inference_mode():
                    out = self.forward(x)
            return out.float().cpu().numpy()

    # -- CUDA graphs -----------------------------------------------------------------------
    def _replay(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if n not in self._graphs:
            self._graphs[n] = self._capture(x)
        graph, static_in, static_out = self._graphs[n]
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()  # the next replay overwrites static_out

    def _capture(self, x: torch.Tensor):
        static_in = torch.empty_like(x).copy_(x)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(3):  # warm-up on a side stream: cuDNN picks algorithms outside capture
                self.model(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            static_out = self.model(static_in)
        return graph, static_in, static_out

    def close(self) -> None:
        self._graphs.clear()
        self._pinned.clear()
        self.model = self.forward = None  # type: ignore[assignment]
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

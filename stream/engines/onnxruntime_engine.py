"""ONNX Runtime engine: CPU fp32, CPU int8 (static QDQ, see ``int8.py``), CUDA provider.

The fp32 graph is the student's ``.onnx`` (exported on first use if absent); the int8 graph is
the one made for this host's instruction set (``ModelSource.int8_graph``: ``<stem>.int8.onnx``,
or a variant ``<stem>.int8.<tag>.onnx``), written by ``python -m benchmarks.int8``.

CPU sessions run one intra-op thread per usable core and, by default, without spin-waiting
(``spinning=False``): a spinning worker keeps its core busy between operators, which the
live pipeline's decoder and preprocessing threads need (docs/engines.md has the measurement).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from . import Engine, EngineError, usable_cores
from .model_source import ModelSource

_GRAPH_OPT = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def session_options(threads: int | None = None, graph_opt: str = "all", spinning: bool = False) -> ort.SessionOptions:
    """``threads``: intra-op threads (None: one per usable core). ``spinning``: let idle intra-op
    threads spin-wait for the next operator (lower latency on an otherwise idle machine, but the
    spinning burns the cores other threads of the process need)."""
    if graph_opt not in _GRAPH_OPT:
        raise EngineError(f"graph_opt must be one of {list(_GRAPH_OPT)}, got {graph_opt!r}")
    if threads is not None and int(threads) < 1:
        raise EngineError(f"threads must be >= 1, got {threads}")
    so = ort.SessionOptions()
    so.graph_optimization_level = _GRAPH_OPT[graph_opt]
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = int(threads) if threads else usable_cores()
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return so


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"

    def __init__(self, source: ModelSource, device: str = "cpu", max_batch: int = 8,
                 precision: str = "auto", threads: int | None = None, graph_opt: str = "all",
                 spinning: bool = False, onnx_path: str | Path | None = None):
        cuda = device.startswith("cuda")
        if precision == "auto":
            precision = "fp32"
        if precision not in ("fp32", "int8"):
            raise EngineError(f"onnxruntime precision must be fp32 or int8, got {precision!r}")
        if cuda and precision == "int8":
            raise EngineError("int8 QDQ graphs are for the CPU provider; on CUDA use tensorrt or fp32")
        if cuda and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise EngineError("onnxruntime has no CUDAExecutionProvider here; pip install "
                              "onnxruntime-gpu, or use --engine torch on CUDA")
        super().__init__(source, device, precision, max_batch)
        if onnx_path is not None:
            path = Path(onnx_path)
        elif precision == "int8":
            path = source.int8_onnx_path()
            if path is None:
                raise EngineError(f"no calibrated int8 graph for {source.name}; run: python -m "
                                  f"benchmarks.int8 --model <student.json> --calib <synthetic image root or video>")
        else:
            path = source.onnx_path()
        if not Path(path).is_file():
            raise EngineError(f"ONNX graph {path} not found")
        self.onnx_path = Path(path)
        self.spinning = bool(spinning)
        if cuda:
            index = int(device.split(":")[1]) if ":" in device else 0
            providers: list[Any] = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(self.onnx_path), sess_options=session_options(threads, graph_opt, spinning),
                                            providers=providers)
        if cuda and "CUDAExecutionProvider" not in self.session.get_providers():
            # onnxruntime silently falls back to the CPU when its CUDA/cuDNN libraries do not load
            raise EngineError("onnxruntime's CUDA provider failed to load (CUDA/cuDNN version mismatch?); "
                              "use --engine torch on this GPU")
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def _run(self, batch: Any) -> np.ndarray:
        if not isinstance(batch, np.ndarray):  # torch tensor, possibly on a GPU
            batch = batch.detach().float().cpu().numpy()
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run([self.output_name], {self.input_name: x})[0].astype(np.float32, copy=False)

    def describe(self) -> dict:
        opts = self.session.get_session_options() if self.session else None
        return {**super().describe(), "onnx": str(self.onnx_path),
                "providers": self.session.get_providers() if self.session else [],
                "threads": opts.intra_op_num_threads if opts else None, "spinning": self.spinning}

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]

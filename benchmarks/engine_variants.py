"""The engine variants the benchmarks build, registered once: the fps sweep
(benchmarks.fps_stages) and the GPU engine self-check (benchmarks.gpu_selfcheck) both iterate
this list, so a new variant is timed and checked from one line.

A variant is a ``stream.engines.build_engine`` kind with its options, under one name.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field

CPU, CUDA, BOTH = ("cpu",), ("cuda",), ("cpu", "cuda")


@dataclass(frozen=True)
class EngineVariant:
    id: str                                  # the name on the command line and in the JSON
    kind: str                                # build_engine kind
    opts: dict = field(default_factory=dict)  # build_engine options
    devices: tuple[str, ...] = BOTH          # where it runs at all
    sweep: tuple[str, ...] = ()              # devices whose fps sweep times it
    # the self-check's bound on max |logit difference| to CPU fp32 eager, relative to the largest
    # logit; None: not self-checked (int8 is judged by its accuracy check, benchmarks.int8)
    tolerance: float | None = None
    batches: tuple[int, ...] | None = None   # only these of a sweep's batch sizes (None: all)
    slow_build: bool = False                 # builds for tens of seconds per batch size


# id, kind, options, runs on, swept on, self-check tolerance. cuDNN may use TF32 for fp32
# convolutions, hence 1e-2 for fp32 on the GPU.
VARIANTS: tuple[EngineVariant, ...] = (
    EngineVariant("torch-fp32", "torch", {"precision": "fp32"}, BOTH, BOTH, 1e-2),
    EngineVariant("torch-fp16", "torch", {"precision": "fp16"}, CUDA, CUDA, 3e-2),
    EngineVariant("torch-bf16", "torch", {"precision": "bf16"}, BOTH, CPU, 8e-2),
    EngineVariant("torch-fp16-cudagraphs", "torch", {"precision": "fp16", "cuda_graphs": True}, CUDA, CUDA,
                  3e-2),
    # torch.compile's default mode: max-autotune would spend minutes benchmarking kernels per batch size
    EngineVariant("compile-fp16", "torch", {"precision": "fp16", "compile": True}, CUDA, CUDA, 3e-2,
                  slow_build=True),
    EngineVariant("compile-fp32", "torch", {"precision": "fp32", "compile": True}, CPU, CPU, slow_build=True),
    EngineVariant("tensorrt-fp16", "tensorrt", {"precision": "fp16"}, CUDA, CUDA, 3e-2),
    # self-checked only: the sweep times TensorRT without CUDA graphs
    EngineVariant("tensorrt-fp16-cudagraphs", "tensorrt", {"precision": "fp16", "cuda_graphs": True}, CUDA,
                  tolerance=3e-2),
    EngineVariant("onnxruntime-cuda-fp32", "onnxruntime", {"precision": "fp32"}, CUDA, CUDA, 1e-2),
    EngineVariant("onnxruntime-fp32", "onnxruntime", {"precision": "fp32"}, CPU, CPU, 1e-2),
    EngineVariant("onnxruntime-int8", "onnxruntime", {"precision": "int8"}, CPU, CPU),
    # the engine's default does not spin (live, the decoder needs the cores); spinning beside it
    EngineVariant("onnxruntime-int8-spin", "onnxruntime", {"precision": "int8", "spinning": True}, CPU, CPU,
                  batches=(1, 8)),
)


def _family(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def swept(device: str, compile_batches: tuple[int, ...]) -> list[EngineVariant]:
    """The fps sweep's variants on ``device``, whether or not they build here (those that do not
    are reported as skipped with the reason); slow builds are timed at ``compile_batches`` only."""
    on = _family(device)
    return [dataclasses.replace(v, batches=tuple(compile_batches)) if v.slow_build else v
            for v in VARIANTS if on in v.sweep]


def self_checked(device: str) -> list[EngineVariant]:
    """The self-check's variants on ``device``; slow builds last, so a step timeout loses only them."""
    on = _family(device)
    checked = [v for v in VARIANTS if v.tolerance is not None and on in v.devices]
    return sorted(checked, key=lambda v: v.slow_build)


def skip_reason(kind: str, device: str = "cuda") -> str | None:
    """Why an engine kind cannot be built on ``device`` here (a missing library), else None."""
    from stream.engines import ort_has_cuda

    if kind == "tensorrt" and importlib.util.find_spec("torch_tensorrt") is None:
        return "torch-tensorrt not installed (pip install -e '.[gpu]')"
    if kind == "onnxruntime" and device.startswith("cuda") and not ort_has_cuda():
        return "onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)"
    return None

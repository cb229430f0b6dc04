"""What machine and libraries a benchmark ran on, recorded next to its figures."""
from __future__ import annotations

import importlib
import os
import platform
import shutil
import subprocess
from datetime import datetime, timezone

from stream.engines import usable_cores
from stream.host import cpu_model, isa_flags

LIBRARIES = ("numpy", "torch", "torchvision", "timm", "onnx", "onnxruntime", "av", "cv2", "numba",
             "tensorrt", "torch_tensorrt", "safetensors")


def _version(name: str) -> str | None:
    try:
        mod = importlib.import_module(name)
    except Exception:  # noqa: BLE001 - absent or broken (a GPU-only package on a CPU host): recorded as missing
        return None
    return str(getattr(mod, "__version__", "present"))


def _nvidia_smi() -> dict | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = [s.strip() for s in out.strip().splitlines()[0].split(",")] if out.strip() else []
    keys = ("name", "driver", "memory", "max_sm_clock")
    return dict(zip(keys, first)) if first else None


def environment(device: str = "cpu") -> dict:
    """A JSON-ready description of this host; `loadavg` shows whether others were busy."""
    env = {
        "utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "isa": isa_flags(),  # int8 / bf16 speed depends on these (AVX2-only vs AVX-512 VNNI hosts)
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "device": device,
        "versions": {name: _version(name) for name in LIBRARIES},
    }
    try:
        import torch

        env["torch_threads"] = torch.get_num_threads()
        env["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
            env["cuda"] = torch.version.cuda
            env["cudnn"] = torch.backends.cudnn.version()
    except ImportError:
        pass
    try:
        import onnxruntime

        env["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        pass
    smi = _nvidia_smi()
    if smi:
        env["nvidia_smi"] = smi
        env.setdefault("gpu", smi["name"])
        env["driver"] = smi["driver"]
    return env


def describe(env: dict) -> str:
    """One line for the top of the printed table."""
    gpu = f", GPU {env['gpu']} (driver {env.get('driver', '?')})" if env.get("gpu") else ", no GPU"
    load = env.get("loadavg")
    load_s = f", load {load[0]:.2f}" if load else ""
    libs = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v and k in ("torch", "onnxruntime", "av", "cv2"))
    isa = " ".join(env.get("isa") or []) or "ISA unknown"
    return f"{env['cpu']} ({isa}), {env['usable_cores']} cores{gpu}{load_s}; {libs}"

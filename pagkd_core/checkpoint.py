"""Checkpoints without pickles: tensors (modules, optimizer moments, torch RNG) in safetensors,
everything else (epoch, history, optimizer hyper-parameters, numpy/python RNG) in JSON.

A checkpoint is written at the end of every epoch, atomically (write then rename), so a run
killed at any moment resumes from its last finished epoch and reproduces the uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """This process's RNG state: (tensors for safetensors, JSON-able rest)."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["cuda"] = torch.cuda.get_rng_state()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, pystate, pygauss = random.getstate()
    return tensors, {
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "python": [version, list(pystate), pygauss],
    }


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    kind, keys, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, pystate, pygauss = meta["python"]
    random.setstate((version, tuple(pystate), pygauss))


def save_weights(path: str | Path, modules: dict[str, nn.Module]) -> None:
    path = Path(path)
    tensors = {
        f"{name}.{k}": v.detach().cpu().contiguous()
        for name, m in modules.items()
        for k, v in m.state_dict().items()
    }
    _atomic_write(path, lambda p: save_file(tensors, str(p)))


def load_weights(path: str | Path, modules: dict[str, nn.Module], tensors: dict | None = None) -> None:
    path = Path(path)
    if tensors is None:
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        tensors = load_file(str(path))
    for name, m in modules.items():
        prefix = name + "."
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            m.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(
                f"{path}: '{name}' does not match the configured model ({str(e).splitlines()[0]})"
            ) from None


def save_checkpoint(
    path_stem: str | Path,
    modules: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    state: dict,
    rngs: list[tuple[dict, dict]] | None = None,
) -> None:
    """<stem>.safetensors + <stem>.json; `state` is JSON-able (epoch, history, config, ...).
    `rngs`: every rank's `rng_state()` (default: this process's), so that each rank of a
    distributed run resumes its own random stream."""
    stem = Path(path_stem)
    tensors = {
        f"{name}.{k}": v.detach().cpu().contiguous()
        for name, m in modules.items()
        for k, v in m.state_dict().items()
    }
    opt = optimizer.state_dict()
    for pid, st in opt["state"].items():
        for k, v in st.items():
            tensors[f"optim.{pid}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu()
    rngs = rngs or [rng_state()]
    for rank, (rng_tensors, _) in enumerate(rngs):
        tensors.update({f"rng.{rank}.{k}": v for k, v in rng_tensors.items()})
    meta = dict(state, optimizer={"param_groups": opt["param_groups"]}, rng=[m for _, m in rngs])
    _atomic_write(stem.with_suffix(".safetensors"), lambda p: save_file(tensors, str(p)))
    _atomic_write(stem.with_suffix(".json"), lambda p: p.write_text(json.dumps(meta, indent=1) + "\n"))


def load_checkpoint(
    path_stem: str | Path, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer, rank: int = 0
) -> dict:
    """Restores modules, optimizer and this rank's RNG in place; returns the JSON state.
    A rank the checkpoint has no RNG for (the world grew) keeps its freshly seeded stream."""
    stem = Path(path_stem)
    meta = json.loads(stem.with_suffix(".json").read_text())
    tensors = load_file(str(stem.with_suffix(".safetensors")))
    load_weights(stem.with_suffix(".safetensors"), modules, tensors)
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    if rank < len(meta["rng"]):
        prefix = f"rng.{rank}."
        set_rng_state({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, meta["rng"][rank])
    return meta

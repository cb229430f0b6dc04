"""torch.distributed for multi-GPU / multi-node training, launched by torchrun.

    torchrun --nproc_per_node=8 -m pagkd_core train --config configs/paper.yaml

Without torchrun's environment everything is single-process. Each rank draws its own
class-balanced batches (every class in every local batch, which the group losses need) and
the objective (student + distiller) is wrapped in DistributedDataParallel. Rank 0 validates
and writes checkpoints; NCCL on CUDA, gloo on CPU (how the tests run it: 2 CPU processes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def pick_device(pref: str, local_rank: int = 0) -> torch.device:
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("run.device=cuda but no CUDA device is visible; use run.device=cpu")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init(device_pref: str = "cpu") -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device=pick_device(device_pref))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_pref, local_rank)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local_rank, device)


def wrap(module: nn.Module, d: Dist) -> nn.Module:
    if not d.enabled:
        return module
    # Distillation parts are idle during warm-up and unused by some methods.
    return DistributedDataParallel(
        module, device_ids=[d.device.index] if d.device.type == "cuda" else None, find_unused_parameters=True
    )


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def gather(obj, d: Dist) -> list:
    """Every rank's `obj` (picklable, exchanged between our own processes), in rank order."""
    if not d.enabled:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def check_in_sync(module: nn.Module, d: Dist) -> None:
    """Raise if the ranks' copies of `module` diverged (DDP keeps them bit-identical)."""
    if not d.enabled:
        return
    total = (
        torch.stack([p.detach().double().sum() for p in module.parameters()]).sum().reshape(1).to(d.device)
    )
    gathered = [torch.zeros_like(total) for _ in range(d.world)]
    dist.all_gather(gathered, total)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise RuntimeError(f"rank weights diverged: {[float(g) for g in gathered]}")


def cleanup(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()

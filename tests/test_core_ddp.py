"""torch.distributed: the same trainer under torchrun with 2 CPU processes on gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_core_fixtures import TINY, make_generic


@pytest.mark.slow  # two torchrun launches: ~40 s idle, minutes on a loaded 2-core machine
def test_two_process_gloo_training(tmp_path):
    root = make_generic(tmp_path / "data")
    out = tmp_path / "run"
    sets = [
        a
        for kv in [*TINY, f"data.root={root}", f"run.out_dir={out}", "optim.epochs=1"]
        for a in ("--set", kv)
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    base = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "pagkd_core",
    ]
    for cmd in ("train-teacher", "train"):
        r = subprocess.run(
            [*base, cmd, *sets], env=env, capture_output=True, text=True, timeout=600, check=False
        )
        assert r.returncode == 0, r.stderr[-3000:]
    for stage in ("teacher", "student"):
        state = json.loads((out / "fold0" / stage / "last.json").read_text())
        assert state["world_size"] == 2 and state["epoch"] == 1
        rng = load_file(str(out / "fold0" / stage / "last.safetensors"))
        assert len(state["rng"]) == 2 and not torch.equal(rng["rng.0.torch"], rng["rng.1.torch"])
        assert (out / "fold0" / stage / "best.safetensors").is_file()

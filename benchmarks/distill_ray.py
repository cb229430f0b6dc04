"""``python -m benchmarks.distill ... --ray [ADDRESS]``: the grid's training runs as Ray tasks.

One task per (seed, fold) NBI teacher and one per (seed, fold, regime, row) student, each asking
Ray for ``--ray-cpus`` CPUs and ``--ray-gpus`` GPUs. A student that reads the teacher gets the
teacher's task as an argument, so Ray starts it once the teacher's checkpoint is written: the
teacher of a fold is trained once and every row of that fold loads it from disk. The runs go to
the same folders as the local grid (benchmarks.distill_runs), so ``--out`` must be storage that
every node shares. Stages already finished (with their test predictions cached) are not
submitted, so a re-launch runs only what is missing, and an interrupted stage resumes from its
last epoch as it does locally. The prepared data set is put into Ray's object store once and
read by every task (the nodes need not see the images). A run that fails is reported and the
others go on (its students fail with it when it is a teacher); the tables are then built from the
finished runs, as locally. Without an address a local Ray is started on this host's cores
(loopback only: stream.ray_eval.connect).
"""
from __future__ import annotations

from tqdm import tqdm

from benchmarks.distill_runs import Plan, done, needs_teacher, run_stage, stage_name
from stream.ray_eval import MAX_RETRIES, connect, one_line


def train_task(cfg, stage: str, data, *teacher) -> str:
    """One stage on a Ray worker. ``teacher``: the fold teacher's task, which Ray waits for."""
    run_stage(cfg, stage, data)
    return stage


def execute_on_ray(plan: Plan, regimes: list[str], rows: list[str], data, address: str = "local",
                   cpus: float = 1, gpus: float = 0, log=print) -> list[str]:
    """distill_runs.execute's grid as Ray tasks; returns the failed runs' one-line errors."""
    ray, started = connect(address, object_store=None)  # the data set lives in the object store
    try:
        # max_calls=0: a worker keeps its imports for the next run (Ray's default for GPU tasks
        # is a fresh process each); max_retries: a run whose worker died resumes from its checkpoint
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_calls=0, max_retries=MAX_RETRIES)(train_task)
        shared = ray.put(data)
        pending: dict = {}
        for seed in plan.seeds:
            for fold in plan.folds:
                teacher = []
                cfg = plan.config(seed, fold)
                if needs_teacher(rows) and not done(cfg, "teacher"):
                    teacher = [task.remote(cfg, "teacher", shared)]
                    pending[teacher[0]] = f"seed {seed} fold {fold}: teacher"
                for regime in regimes:
                    for row in rows:
                        cfg, stage = plan.config(seed, fold, regime, row), stage_name(regime, row)
                        if not done(cfg, stage):
                            pending[task.remote(cfg, stage, shared, *teacher)] = f"seed {seed} fold {fold}: {stage}"
        log(f"{len(pending)} run(s) to do on Ray ({ray.cluster_resources().get('CPU', 0):g} CPUs, "
            f"{ray.cluster_resources().get('GPU', 0):g} GPUs; each asks for {cpus:g} CPUs, {gpus:g} GPUs)")
        failed = []
        with tqdm(total=len(pending), desc="runs", unit="run", disable=not pending) as bar:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                name = pending.pop(ready[0])
                try:
                    ray.get(ready[0])
                except ray.exceptions.RayError as e:  # the run's own error (or its teacher's), or a lost worker
                    failed.append(f"{name}: {one_line(e.cause if getattr(e, 'cause', None) else e)}")
                    log(f"failed: {failed[-1]}")
                bar.update(1)
        return failed
    finally:
        if started:
            ray.shutdown()

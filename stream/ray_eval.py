"""``python -m stream evaluate VIDEOS --ray [ADDRESS]``: one Ray task per video.

Each task reads one video by its path (every worker must see the same paths: a local folder on
one host, NFS or another shared mount on a cluster), runs it through the local run's own code
(``stream.video_infer.video_raw``) with an engine built once per worker process and kept for that
worker's next videos, and sends back the raw per-frame probabilities. The driver scores them
exactly as the local run does (``score_videos``), so the report's numbers are the same. A video
that fails is reported with its one-line error and the others go on; a task whose worker or node
is lost is run again, up to ``MAX_RETRIES`` times, and the report counts those re-runs.

``ADDRESS``: ``local`` (the flag alone) starts a Ray on this host's cores that listens on the
loopback interface only, without a dashboard, and stops it at the end; ``auto`` or ``HOST:PORT``
(or ``ray://HOST:PORT``) joins a running cluster (docs/ray.md). Ray is imported only here.
"""
from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

from tqdm import tqdm

from stream.video_infer import Inferred, cached_engine, teacher_for, video_raw, video_truth

MAX_RETRIES = 2  # re-runs of a task whose worker process or node died (a video that fails is not re-run)
NEED_RAY = "--ray needs Ray: pip install -e '.[ray]'"
LOCAL_OBJECT_STORE = 256 * 2**20  # results are small (frames x classes); Ray's default takes 30% of RAM

_ENGINES: dict[tuple, object] = {}  # in each worker process: engine settings -> (student, NBI teacher), built by its first video


def connect(address: str = "local", num_cpus: int | None = None, object_store: int | None = LOCAL_OBJECT_STORE):
    """Ray, started or joined -> (ray module, whether this call started it: then the caller shuts
    it down). ``local``: a new Ray on this host with ``num_cpus`` (default: the cores this process
    may use) and ``object_store`` bytes (None: Ray's default), bound to 127.0.0.1; anything else
    is ``ray.init``'s address (benchmarks.distill_ray joins or starts one here too). A Ray this process
    already runs (a test's, a notebook's) is used as it is. Raises ValueError, one line, when Ray
    is missing or cannot be started or reached."""
    if address == "local":
        # Ray takes its node address from this switch (read when ray is imported, and inherited by
        # the processes it starts): left alone on Linux, a local Ray listens on every interface.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        import ray
    except ImportError:
        raise ValueError(NEED_RAY) from None
    if ray.is_initialized():
        return ray, False
    try:
        if address == "local":
            from ray._private import ray_constants

            from stream.engines import usable_cores
            ray_constants.ENABLE_RAY_CLUSTER = False  # the switch above, for a ray imported before it was set
            ray.init(address="local", num_cpus=num_cpus or usable_cores(), include_dashboard=False,
                     object_store_memory=object_store, logging_level=logging.WARNING)
            if ray.util.get_node_ip_address() != "127.0.0.1":  # never leave an open Ray behind
                ray.shutdown()
                raise RuntimeError("the local Ray did not bind to 127.0.0.1; start one yourself and pass its address")
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ValueError(f"--ray {address}: {one_line(e)}") from None
    return ray, True


def one_line(e: BaseException) -> str:
    lines = [s.strip() for s in str(e).splitlines() if s.strip()]
    return lines[0] if lines else type(e).__name__


def _engine(model: str, args, threads: int):
    """This worker's engines for these settings, (student, NBI teacher or None): built by its
    first video, reused by the next ones."""
    from stream.engines import build_engine, resolve_device
    device = resolve_device(args.device)
    key = (model, args.engine, device, args.precision, args.batch, threads)
    if key not in _ENGINES:
        # a CPU task runs on the cores it asked for, not on every core of the node beside its neighbours
        opts = {"threads": threads} if device == "cpu" else {}
        engine = build_engine(args.engine, model, device=device, max_batch=args.batch,
                              precision=args.precision, **opts)
        _ENGINES[key] = engine, teacher_for(args, engine)
    return _ENGINES[key]


def one_video(video: str, truth, args, model: str, class_names: list[str], threads: int) -> dict:
    """The Ray task: one video's raw probabilities, or its one-line error (so the others go on)."""
    before = len(_ENGINES)
    here = {"worker": (os.uname().nodename, os.getpid())}
    try:
        raw, problems, seconds = video_raw(Path(video), truth, args, lambda: _engine(model, args, threads),
                                           class_names)
    except Exception as e:  # noqa: BLE001 - anything this video raises (file, decoder, engine) is its failure alone
        return {"error": one_line(e), "built": len(_ENGINES) - before, **here}
    engine = _engine(model, args, threads)[0].describe() if seconds is not None else None
    return {"raw": raw, "problems": problems, "seconds": seconds, "engine": engine,
            "built": len(_ENGINES) - before, **here}


def infer_on_ray(paths: list[Path], args, model: str, class_names: list[str]) -> Inferred:
    """stream.video_eval's local loop, as Ray tasks: the same Inferred, in the order of ``paths``,
    plus the report's ``ray`` section. Raises ValueError when no video could be evaluated."""
    ray, started = connect(args.ray)
    try:
        return _gather(ray, paths, args, model, class_names)
    finally:
        if started:
            ray.shutdown()


def _gather(ray, paths: list[Path], args, model: str, class_names: list[str]) -> Inferred:
    truths = {v: video_truth(v, args.max_frames) for v in paths}  # a bad truth file fails now, as locally
    wargs = copy.copy(args)
    wargs.quiet = True  # the workers' per-frame bars would garble the driver's one bar over the videos
    if not args.ray_gpus and args.device == "auto":
        wargs.device = "cpu"  # a task that asked Ray for no GPU must not take one unaccounted for
    if args.predictions_dir:
        wargs.predictions_dir = os.path.abspath(args.predictions_dir)
    # max_calls=0: keep the worker (and its engine) for the next video; Ray's default for GPU tasks
    # is a fresh process per task. max_retries=0: this loop re-runs lost tasks itself, to count them.
    task = ray.remote(num_cpus=args.ray_cpus, num_gpus=args.ray_gpus, max_calls=0, max_retries=0)(one_video)
    threads = max(1, int(args.ray_cpus))

    def submit(video: Path):
        return task.remote(str(video.resolve()), truths[video], wargs, os.path.abspath(model), class_names, threads)

    pending = {submit(v): v for v in paths}
    results, retries = {}, 0
    tries = dict.fromkeys(paths, 0)
    with tqdm(total=len(paths), desc="videos", unit="video", disable=args.quiet) as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            video = pending.pop(done[0])
            try:
                results[video] = ray.get(done[0])
            except ray.exceptions.RayError as e:  # the task's worker or node was lost, not the video's fault
                if tries[video] < MAX_RETRIES:
                    tries[video] += 1
                    retries += 1
                    pending[submit(video)] = video
                    continue
                results[video] = {"error": f"lost {MAX_RETRIES + 1} times: {one_line(e)}"}
            bar.update(1)
    out = Inferred([], cached_engine(args))
    failed = {}
    for video in paths:  # the order the videos were given: the local run's order
        r = results[video]
        if "error" in r:
            failed[video.name] = r["error"]
            out.problems.append(f"{video.name}: not evaluated: {r['error']}")
            continue
        out.add(video.name, truths[video], r["raw"], r["problems"], r["seconds"])
        out.engine = r["engine"] or out.engine
    if not out.videos:
        raise ValueError(f"no video could be evaluated; {out.problems[0]}")
    if retries:
        out.problems.append(f"{retries} task(s) run again after their Ray worker or node was lost")
    resources = ray.cluster_resources()
    out.extra["ray"] = {
        "address": args.ray, "nodes": sum(n["Alive"] for n in ray.nodes()), "cpus": resources.get("CPU", 0),
        "gpus": resources.get("GPU", 0), "cpus_per_task": args.ray_cpus, "gpus_per_task": args.ray_gpus,
        "workers": len({r["worker"] for r in results.values() if "worker" in r}),
        "engines_built": sum(r.get("built", 0) for r in results.values()),
        "max_retries": MAX_RETRIES, "retries": retries, "failed": failed}
    return out

"""``python -m stream evaluate --ray`` against the sequential run on this host (issue 18).

    python -m benchmarks.ray_eval                  # 8 x 10 s of 640x360 synthetic procedure video
    python -m benchmarks.ray_eval --videos 16 --seconds 5 --workers 4

Times the same evaluation twice over one folder of short videos (made once by the synthetic
generator and cached under ``--cache``, like benchmarks.video's): one video after another in
this process, then one Ray task per video on a local Ray with ``--workers`` CPUs (default: this
host's cores), and checks that both reports have the same numbers. Prints the speed-up and the
model of a bigger host: the per-video cost ``c`` (sequential time / videos), the one-off cost of
starting Ray ``s``, and the per-task overhead ``o`` (the Ray run's worker time beyond the
sequential run's, per video: worker start-up, one engine per worker, task dispatch, results
back), so that N videos on W cores take about ``s + ceil(N / W) * (c + o)``. The Ray start-up is
timed apart from the evaluation. Nothing here asserts a time; run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from benchmarks.env import environment
from benchmarks.video import VideoSet, make_videos

FIRST_SEED = 2000  # outside the held-out set's seeds (1000-1013) and the training seeds (< 1000)
# the report's figures; the rest says how and where it was made
FIGURES = ("settings", "evidence_split", "pooled", "targets", "breakdowns", "videos", "problems")


def timed_evaluate(argv: list[str]) -> tuple[dict, float]:
    from stream.video_eval import evaluate_videos
    t0 = time.perf_counter()
    report = evaluate_videos(argv)
    return report, time.perf_counter() - t0


def model_of(n: int, workers: int, sequential: float, start: float, on_ray: float) -> dict:
    c = sequential / n
    o = (workers * on_ray - sequential) / n
    return {"per_video_s": round(c, 3), "ray_start_s": round(start, 3), "per_task_overhead_s": round(o, 3),
            "predicted": {w: round(start + math.ceil(n / w) * (c + o), 1) for w in (workers, 4, 8, 16, 32)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ray_eval", description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--workers", type=int, help="CPUs of the local Ray (default: this host's cores)")
    ap.add_argument("--engine", default="auto", help="passed to stream evaluate (both runs)")
    ap.add_argument("--cache", default="out/ray_eval/videos")
    ap.add_argument("--out", default="out/ray_eval")
    args = ap.parse_args(argv)
    from stream import ray_eval
    from stream.engines import usable_cores
    workers = args.workers or usable_cores()
    vs = VideoSet(args.size, args.seconds, tuple(range(FIRST_SEED, FIRST_SEED + args.videos)))
    videos = make_videos([vs], Path(args.cache), quiet=True)
    folder, out = str(videos[0].parent), Path(args.out)
    common = [folder, "--engine", args.engine, "--no-plots", "-q"]
    env = environment()
    print(f"{len(videos)} videos of {args.seconds:g} s at {args.size} in {folder}; load average {env['loadavg']}",
          file=sys.stderr)
    local, sequential = timed_evaluate([*common, "--out", str(out / "sequential")])
    t0 = time.perf_counter()
    ray, started = ray_eval.connect("local", num_cpus=workers)
    start = time.perf_counter() - t0
    try:
        on_ray, ray_s = timed_evaluate([*common, "--out", str(out / "ray"), "--ray"])
    finally:
        if started:
            ray.shutdown()
    same = all(on_ray[k] == local[k] for k in FIGURES)
    result = {"videos": len(videos), "seconds_each": args.seconds, "size": args.size, "workers": workers,
              "engine": local["engine"], "sequential_s": round(sequential, 2), "ray_s": round(ray_s, 2),
              "speedup": round(sequential / ray_s, 3), "speedup_with_start": round(sequential / (ray_s + start), 3),
              "same_numbers": same, "ray": on_ray["ray"], "model": model_of(len(videos), workers, sequential,
                                                                            start, ray_s),
              "environment": env, "command": "python -m benchmarks.ray_eval " + " ".join(argv or sys.argv[1:])}
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    m = result["model"]
    print(f"sequential {sequential:.1f} s, Ray on {workers} CPUs {ray_s:.1f} s (+ {start:.1f} s to start Ray): "
          f"{result['speedup']:.2f}x ({result['speedup_with_start']:.2f}x counting the start); "
          f"same numbers: {same}")
    print(f"model: per video {m['per_video_s']} s, per-task overhead {m['per_task_overhead_s']} s, Ray start "
          f"{m['ray_start_s']} s -> predicted s for {len(videos)} videos on W cores: {m['predicted']}")
    print(f"wrote {out / 'result.json'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

"""Speed of the SYNTHETIC data generator: images/s at 448x448 and video frames/s at 720p.

`python -m benchmarks.synth [--images N] [--frames N] [--threads T] [--json PATH]`

Both wall-clock and process CPU time are reported: on a shared machine the wall clock
includes waiting for a core, while CPU-seconds per item is what a dedicated core costs.
Compilation (numba) and the one-off wall-texture bake are excluded by warm-up.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from benchmarks.timing import wall_and_cpu


def bench_images(n: int, size: int = 448) -> dict:
    from pagkd_core.synth.config import ImageConfig
    from pagkd_core.synth.dataset import Job, lesion_views

    cfg = ImageConfig(views=1, size=size, seed=0)
    jobs = [Job(k, cfg.classes[k % 2], ("WLI", "NBI")) for k in range((n + 1) // 2)]
    list(lesion_views(cfg, Job(10_000, "adenoma", ("WLI",))))  # warm-up: numba compile / cache load
    _, wall, cpu = wall_and_cpu(lambda: [list(lesion_views(cfg, j)) for j in jobs])
    count = 2 * len(jobs)
    return {
        "what": f"images {size}x{size}",
        "count": count,
        "per_s_wall": count / wall,
        "per_s_cpu": count / cpu,
    }


def _render(n: int, width: int, height: int, fps: int, scale: float) -> tuple[dict, list]:
    from pagkd_core.synth.config import VideoConfig
    from pagkd_core.synth.video import iter_procedure_frames

    it = iter_procedure_frames(
        VideoConfig(width=width, height=height, fps=fps, seconds=0, seed=0, render_scale=scale)
    )
    for _ in range(30):  # skip the one-off wall-texture bake and the first second
        next(it)
    frames = []
    _, wall, cpu = wall_and_cpu(lambda: frames.extend(next(it)[0] for _ in range(n)))
    return {
        "what": f"video {width}x{height} render, scale {scale}",
        "count": n,
        "per_s_wall": n / wall,
        "per_s_cpu": n / cpu,
    }, frames


def bench_video(n: int, width: int = 1280, height: int = 720, fps: int = 30) -> list[dict]:
    from pagkd_core.synth.video import h264_writer

    row, frames = _render(n, width, height, fps, 0.5)
    rows = [row, _render(n, width, height, fps, 0.35)[0]]
    with tempfile.TemporaryDirectory() as tmp, h264_writer(Path(tmp) / "b.mp4", width, height, fps) as out:
        _, wall, cpu = wall_and_cpu(lambda: [out.write(f) for f in frames])
    rows.append(
        {
            "what": f"video {width}x{height} H.264 encode",
            "count": n,
            "per_s_wall": n / wall,
            "per_s_cpu": n / cpu,
        }
    )
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.synth", description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20, help="images to render at 448x448")
    ap.add_argument("--frames", type=int, default=90, help="720p frames to render")
    ap.add_argument("--threads", type=int, default=1, help="numba threads (1 = the one-core figure)")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    if a.images < 1 or a.frames < 1 or a.threads < 1:
        print(
            "python -m benchmarks.synth: error: --images, --frames and --threads must be positive",
            file=sys.stderr,
        )
        return 2
    import numba

    numba.set_num_threads(min(a.threads, numba.config.NUMBA_NUM_THREADS))
    rows = [bench_images(a.images), *bench_video(a.frames)]
    print(f"SYNTHETIC generator speed, numba threads={a.threads}")
    print(f"{'what':40s} {'n':>5s} {'per s (wall)':>13s} {'per CPU-s':>10s}")
    for r in rows:
        print(f"{r['what']:40s} {r['count']:5d} {r['per_s_wall']:13.1f} {r['per_s_cpu']:10.1f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"threads": a.threads, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

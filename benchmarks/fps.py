"""Throughput and latency of every runtime stage, engine and batch size, and end to end,
side by side with a naive baseline, in one run.

    python -m benchmarks.fps --quick                     # < 2 min on 2 CPU cores (shape check)
    python -m benchmarks.fps --json out/fps.json         # full CPU run, < 15 min
    python -m benchmarks.fps --device cuda --backbone resnet50 --input-size 448 --sections inference

Everything measured is the runtime's own code (stream.sources, stream.preprocess,
stream.engines, stream.smoothing, stream.alerts, stream.pipeline) on synthetic test videos
(benchmarks.media). Prints markdown tables; ``--json`` writes every figure.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pagkd_core.config import ConfigError, read_yaml_mapping

SECTIONS = ("decode", "preprocess", "inference", "smoothing", "e2e")


@dataclass
class FpsConfig:
    device: str = "auto"                  # auto | cpu | cuda | cuda:N
    model: str = ""                       # exported student; "" = the bundled one
    backbone: str = ""                    # timm name: a random-init student instead of --model
    input_size: int = 224                 # the size for the CPU targets; 0: the model's own
    seconds: float = 1.0                  # per measurement
    torch_threads: int = 0                # torch intra-op threads for every torch stage; 0: torch's default
    quick: bool = False                   # every section and key on tiny budgets (< 2 min on 2 cores)
    sections: list[str] = field(default_factory=lambda: list(SECTIONS))  # decode,preprocess,inference,smoothing,e2e
    resolutions: list[str] = field(default_factory=lambda: ["720p", "1080p"])  # test videos
    codecs: list[str] = field(default_factory=lambda: ["h264", "hevc"])  # test videos
    clip_frames: int = 150                # frames per synthetic test clip (30 fps)
    decode_frames: int = 60               # frames per decode pass; 0: the whole clip
    batches: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])  # inference sweep
    engines: list[str] = field(default_factory=list)   # engine ids; empty: every one for the device
    compile_batches: list[int] = field(default_factory=lambda: [1, 8])  # torch.compile is slow to build
    e2e_engine: str = "auto"              # engine id for end to end; auto: best available
    e2e_clips: list[str] = field(default_factory=list)  # e.g. 720p-h264; empty: 720p (CPU) / 1080p (GPU)
    replay_batch: int = 8                 # the pipeline's batch when replaying a file
    replay_frames: int = 300              # frames per replay run (the clip is looped)
    e2e_seconds: float = 4.0              # measurement window of each paced run (after 1 s warm-up)
    paced_fps: list[int] = field(default_factory=lambda: [30, 60])  # live feed rates; the first for N streams
    max_streams: int = 16                 # concurrent streams: N = 1, 2, 4, ... up to this
    e2e_max_batch: int = 16               # the shared engine's largest batch (CUDA graphs: one per size)
    max_drop: float = 0.02                # keeps up: at most this fraction of frames missed ...
    max_p99_ms: float = 120.0             # ... and p99 latency at most this
    media_dir: str = "out/bench_media"    # cache of the synthetic test videos
    model_cache: str = "out/bench_models"  # cache: random-init students, int8 graphs, calibration images
    int8_target_batch: int = 8            # int8 / torch eager fp32 ratio: alternating rounds at this batch
    int8_data: str = ""                   # int8 calibration/held-out images; "": the bundled student's (regenerated)
    int8_splits: str = ""                 # splits.json of int8_data (train lesions calibrate, test lesions measure)
    json: str = ""                        # every figure; rewritten after each section, so a timeout keeps them
    markdown: str = ""                    # the printed tables

    def apply_quick(self) -> None:
        """--quick: every section and key, on tiny budgets."""
        self.seconds = min(self.seconds, 0.3)
        self.clip_frames = min(self.clip_frames, 30)
        self.replay_frames = min(self.replay_frames, 60)
        self.e2e_seconds = min(self.e2e_seconds, 1.0)
        self.resolutions, self.codecs = self.resolutions[:2], self.codecs[:2]
        self.batches = [b for b in self.batches if b in (1, 8)] or self.batches[:1]
        self.compile_batches = []
        self.paced_fps = self.paced_fps[:2]
        self.max_streams = min(self.max_streams, 2)


def _field_comments() -> dict[str, str]:
    """Each FpsConfig field's trailing comment: the option's --help text, kept in one place."""
    import inspect
    import re

    src = inspect.getsource(FpsConfig)
    return {m[1]: m[2].strip() for m in re.finditer(r"^\s+(\w+): [^#\n]+#(.*)$", src, re.MULTILINE)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fps", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="YAML file of FpsConfig keys; command-line options override it")
    helps = _field_comments()
    for f in dataclasses.fields(FpsConfig):
        flag, text = "--" + f.name.replace("_", "-"), helps.get(f.name)
        if f.type == "bool":
            p.add_argument(flag, action="store_const", const=True, default=None, help=text)
        elif f.type.startswith("list"):
            p.add_argument(flag, default=None, help=f"{text or ''} (comma-separated)".strip())
        else:
            p.add_argument(flag, default=None, type={"int": int, "float": float}.get(f.type, str), help=text)
    return p


def load_config(argv: list[str] | None = None) -> FpsConfig:
    args = build_parser().parse_args(argv)
    cfg = FpsConfig()
    values = {}
    if args.config:
        try:
            values.update(read_yaml_mapping(args.config, "FpsConfig keys"))
        except ConfigError as e:
            raise SystemExit(str(e)) from None
    values.update({k: v for k, v in vars(args).items() if v is not None and k != "config"})
    names = {f.name: f for f in dataclasses.fields(cfg)}
    for k, v in values.items():
        if k not in names:
            raise SystemExit(f"unknown option {k!r}; see python -m benchmarks.fps --help")
        if names[k].type.startswith("list") and isinstance(v, str):
            cast = int if "int" in names[k].type else str
            v = [cast(x) for x in v.split(",") if x.strip()]
        setattr(cfg, k, v)
    bad = set(cfg.sections) - set(SECTIONS)
    if bad:
        raise SystemExit(f"unknown section(s) {sorted(bad)}; choose from {', '.join(SECTIONS)}")
    if cfg.quick:
        cfg.apply_quick()
    return cfg


def _first_frames(clip, n: int = 8) -> list:
    """A few RGB frames of a clip, via OpenCV so this works without PyAV too."""
    import cv2

    cap, out = cv2.VideoCapture(str(clip.path)), []
    while len(out) < n:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return out


def _int8(cfg: FpsConfig, result: dict, bench_model) -> None:
    """Calibrate the int8 graphs (benchmarks.int8) before the inference rows need them."""
    from benchmarks.fps_model import prepare_int8

    try:
        result["int8_accuracy"] = prepare_int8(bench_model, cfg.int8_data, cfg.int8_splits, cfg.model_cache,
                                               cfg.quick)
    except (FileNotFoundError, ValueError) as e:
        result["notes"].append(f"int8 calibration failed, int8 rows skipped: {' '.join(str(e).split())[:200]}")


def _fastest_for_pipeline(variants, measured: list[dict], batch: int) -> list[str]:
    """Ids of the engines timed at ``batch`` in this run's sweep, fastest first, among those a
    pipeline can run: torch.compile is left out (the dynamic batcher's varying batch sizes would
    recompile it), and so are spinning ONNX Runtime sessions (live, the decoder needs the cores
    they keep busy)."""
    fit = {v.id for v in variants if not v.slow_build and not v.opts.get("spinning")}
    speed = {r["engine"]: r["img_s"] for r in measured if r.get("batch") == batch and "img_s" in r
             and r["engine"] in fit}
    return sorted(speed, key=speed.get, reverse=True)


def _auto_choice(cfg: FpsConfig, result: dict, bench_model, variants) -> dict:
    """What ``--engine auto`` runs on this CPU host against the sweep's fastest engine at the replay
    batch and against torch eager fp32, in alternating rounds (fair under a changing load). The
    choice is the runtime's (build_engine -> auto_choice.choose, probed once, then cached) with a
    pipeline's engine threads (as stream.lanes.open_engine gives them)."""
    from benchmarks import fps_stages
    from stream import host
    from stream.engines import CPU_ENGINE_THREADS, build_engine

    lines: list[str] = []
    engine = build_engine("auto", bench_model.source(), device="cpu", max_batch=cfg.replay_batch,
                          threads=CPU_ENGINE_THREADS, on_choice=lines.append)
    d = engine.describe()
    engine.close()
    chosen = f"{d['engine']}-{d['precision']}"
    out: dict = {"host": host.machine_line(), "isa": host.isa_flags(), "chosen": chosen,
                 "line": lines[0] if lines else None, "batch": cfg.replay_batch}
    by_id = {v.id: v for v in variants}
    ranked = _fastest_for_pipeline(variants, result["stages"].get("inference", []), cfg.replay_batch)
    if chosen not in by_id or not ranked:
        return out
    out["fastest"] = ranked[0]

    def pair(base: str, batch: int) -> dict:
        return fps_stages.bench_pair(by_id[base], by_id[chosen], bench_model.source, "cpu", batch, 4 * cfg.seconds)

    out["vs_fastest"] = {"ratio": 1.0, "batch": cfg.replay_batch} if ranked[0] == chosen else pair(
        ranked[0], cfg.replay_batch)
    earlier = result["stages"].get("int8_vs_eager") or {}
    if chosen == "torch-fp32":
        out["vs_eager"] = {"ratio": 1.0, "batch": cfg.int8_target_batch}
    elif earlier.get("other") == chosen and "ratio" in earlier:
        out["vs_eager"] = earlier  # the int8 target's pair already timed the chosen engine
    elif "torch-fp32" in by_id:
        out["vs_eager"] = pair("torch-fp32", cfg.int8_target_batch)
    return out


def _e2e_engine(cfg: FpsConfig, variants, source_fn, device: str, max_batch: int, measured: list[dict]):
    """The engine end to end runs on: the named variant, else the fastest one measured in this
    run at the replay batch size, else the best that builds here."""
    from stream.engines import EngineError, build_engine

    by_id = {v.id: v for v in variants}
    if cfg.e2e_engine != "auto":
        if cfg.e2e_engine not in by_id:
            raise SystemExit(f"--e2e-engine {cfg.e2e_engine!r} unknown here; choose from {', '.join(by_id)}")
        order = [cfg.e2e_engine]
    elif device.startswith("cuda"):
        order = ["tensorrt-fp16", "torch-fp16-cudagraphs", "torch-fp16"]
    else:
        order = ["onnxruntime-int8", "onnxruntime-fp32", "torch-fp32"]
    if cfg.e2e_engine == "auto":
        ranked = _fastest_for_pipeline(variants, measured, cfg.replay_batch)
        order = ranked + [e for e in order if e not in ranked]
    notes = []
    for sid in order:
        variant = by_id[sid]
        try:
            engine = build_engine(variant.kind, source_fn(), device=device, max_batch=max_batch, **variant.opts)
            # Capture/compile every batch size the dynamic batcher may form, before timing.
            for b in range(1, max_batch + 1) if "cuda_graphs" in variant.opts else (1, max_batch):
                engine.warmup(iters=1, batch=b)
            return engine, sid, notes
        except (EngineError, ImportError, FileNotFoundError, RuntimeError) as e:
            notes.append(f"{sid} unavailable: {' '.join(str(e).split())[:160]}")
    raise SystemExit("no engine for end to end: " + "; ".join(notes))


def _save(cfg: FpsConfig, result: dict) -> None:
    """Write what is measured so far: a run cut short by a timeout still leaves its figures."""
    from benchmarks.fps_report import report, targets

    result["targets"] = targets(result)
    result["elapsed_s"] = round(time.perf_counter() - result["_t0"], 1)
    clean = {k: v for k, v in result.items() if not k.startswith("_")}
    if cfg.json:
        Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(cfg.json + ".tmp")
        tmp.write_text(json.dumps(clean, indent=1, default=str) + "\n")
        tmp.replace(cfg.json)
    if cfg.markdown:
        Path(cfg.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.markdown).write_text(report(clean) + "\n")


def _stages(cfg: FpsConfig, result: dict, clips, bench_model, device: str, variants) -> None:
    from tqdm import tqdm

    from benchmarks import fps_decode, fps_stages

    if "decode" in cfg.sections:
        cases = len(clips) * len(fps_decode.decode_cases(cfg.quick))
        with tqdm(total=cases, desc="decode", leave=False) as bar:
            result["stages"]["decode"] = fps_decode.bench_decode(clips, cfg.seconds, cfg.quick, bar.update,
                                                                cfg.decode_frames)
        _save(cfg, result)
    if "preprocess" in cfg.sections:
        one_per_size = {c.resolution: c for c in reversed(clips)}.values()  # the first codec of each
        frames = {c.name: _first_frames(c) for c in one_per_size}
        result["stages"]["preprocess"] = fps_stages.bench_preprocess(
            frames, bench_model.meta, bench_model.input_size, device, cfg.seconds)
        _save(cfg, result)
    if "inference" in cfg.sections:
        chosen = [v for v in variants if not cfg.engines or v.id in cfg.engines]
        if any(v.opts.get("precision") == "int8" for v in chosen):
            _int8(cfg, result, bench_model)
            _save(cfg, result)
        total = sum(len([b for b in cfg.batches if v.batches is None or b in v.batches]) for v in chosen)
        rows = result["stages"]["inference"] = []
        with tqdm(total=total, desc="inference", leave=False) as bar:
            for variant in chosen:  # saved engine by engine: torch.compile may outlast a timeout
                rows += fps_stages.bench_inference([variant], bench_model.source, device, cfg.batches,
                                                   cfg.seconds, bar.update)
                _save(cfg, result)
        by_id = {v.id: v for v in chosen}
        if not device.startswith("cuda") and {"torch-fp32", "onnxruntime-int8"} <= set(by_id):
            # the int8 target's ratio, from alternating rounds (fair under a changing load)
            result["stages"]["int8_vs_eager"] = fps_stages.bench_pair(
                by_id["torch-fp32"], by_id["onnxruntime-int8"], bench_model.source, device, cfg.int8_target_batch,
                4 * cfg.seconds)
            _save(cfg, result)
        if not device.startswith("cuda"):  # issue 17: the probe decides on CPU hosts only
            result["stages"]["auto_choice"] = _auto_choice(cfg, result, bench_model, variants)
            _save(cfg, result)
    if "smoothing" in cfg.sections:
        result["stages"]["smoothing"] = fps_stages.bench_smoothing(len(bench_model.meta["class_names"]), cfg.seconds)
        _save(cfg, result)


def _pick_clips(clips, wanted: list[str], device: str) -> list:
    """Clips by name (720p-h264); a name whose codec the host could not write matches by size."""
    wanted = wanted or [("1080p" if device.startswith("cuda") else "720p") + "-h264"]
    out = []
    for name in wanted:
        match = [c for c in clips if c.name == name] or [c for c in clips if c.resolution == name.split("-")[0]]
        out += match[:1]
    return out or clips[:1]


def _end_to_end(cfg: FpsConfig, result: dict, clips, bench_model, device: str, variants) -> None:
    from tqdm import tqdm

    from benchmarks import fps_breakdown, fps_decode, fps_e2e
    from benchmarks.naive import NaiveClassifier

    if not fps_decode.have_pyav():
        result["notes"].append("PyAV (av) not installed: the runtime's sources need it, end to end skipped")
        return
    max_batch = max(cfg.replay_batch, min(cfg.max_streams, cfg.e2e_max_batch))
    engine, engine_id, notes = _e2e_engine(cfg, variants, bench_model.source, device, max_batch,
                                           result["stages"].get("inference", []))
    result["notes"] += notes
    naive = NaiveClassifier(bench_model.torch_module(), bench_model.input_size, bench_model.meta["mean"],
                            bench_model.meta["std"], device=device, views=bench_model.meta.get("views", ["whole"]))
    keeps_up = fps_e2e.KeepUp(cfg.max_drop, cfg.max_p99_ms)
    try:
        for clip in _pick_clips(clips, cfg.e2e_clips, device):
            ceiling = fps_decode.decode_ceiling(result["stages"].get("decode", []), clip.name)
            with tqdm(desc=f"end to end {clip.name}", leave=False) as bar:
                row = fps_e2e.bench_e2e(
                    engine, naive, clip, ceiling["fps"] if ceiling else None,
                    replay_frames=cfg.replay_frames, replay_batch=cfg.replay_batch,
                    paced_fps=tuple(cfg.paced_fps), seconds=cfg.e2e_seconds,
                    max_streams=cfg.max_streams, keeps_up=keeps_up, progress=bar.update)
            arrays = fps_decode.decode_ceiling(result["stages"].get("decode", []), clip.name,
                                               fps_decode.ARRAY_OUTPUTS)
            row.update(engine_id=engine_id, decode_ceiling=ceiling, decode_to_arrays=arrays)
            row["breakdown"] = fps_breakdown.breakdown(engine, clip, cfg.replay_frames,
                                                       min(cfg.replay_batch, engine.max_batch))
            result["end_to_end"].append(row)
            _save(cfg, result)
    finally:
        engine.close()


def run(cfg: FpsConfig, argv: list[str]) -> dict:
    from tqdm import tqdm

    from benchmarks import engine_variants
    from benchmarks.env import environment
    from benchmarks.fps_model import resolve_model
    from benchmarks.media import make_clips
    from stream.engines import EngineError, resolve_device

    if cfg.torch_threads:
        import torch

        # OpenMP workers spin-wait: on cores shared with other processes fewer threads can be faster.
        torch.set_num_threads(cfg.torch_threads)
    try:
        device = resolve_device(cfg.device)
    except EngineError as e:
        raise SystemExit(str(e)) from None
    bench_model = resolve_model(cfg.model or None, cfg.backbone or None, cfg.input_size or None, cfg.model_cache)
    variants = engine_variants.swept(device, tuple(cfg.compile_batches))
    unknown = set(cfg.engines) - {v.id for v in variants}
    if unknown:
        raise SystemExit(f"unknown engine(s) {sorted(unknown)} on {device}; choose from "
                         f"{', '.join(v.id for v in variants)}")
    result: dict = {"benchmark": "benchmarks.fps", "command": "python -m benchmarks.fps " + shlex.join(argv),
                    "config": dataclasses.asdict(cfg), "environment": environment(device),
                    "model": {"label": bench_model.label, "path": str(bench_model.path),
                              "backbone": bench_model.meta.get("backbone"), "input_size": list(bench_model.input_size),
                              "synthetic": bench_model.meta.get("synthetic")},
                    "stages": {}, "end_to_end": [], "notes": [], "_t0": time.perf_counter()}
    clips = []
    if {"decode", "preprocess", "e2e"} & set(cfg.sections):
        with tqdm(total=1, desc="test videos", leave=False) as bar:
            clips = make_clips(cfg.media_dir, cfg.resolutions, cfg.codecs, fps=30, frames=cfg.clip_frames)
            bar.update()
        result["clips"] = [{"name": c.name, "codec": c.codec, "writer": c.writer, "frames": c.frames,
                            "path": str(c.path)} for c in clips]
        if any(c.writer == "opencv" for c in clips):
            result["notes"].append("no PyAV/ffmpeg: test videos written by OpenCV (see clips[].codec)")
    _stages(cfg, result, clips, bench_model, device, variants)
    if "e2e" in cfg.sections:
        _end_to_end(cfg, result, clips, bench_model, device, variants)
    result["environment"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    _save(cfg, result)
    return {k: v for k, v in result.items() if not k.startswith("_")}


def main(argv: list[str] | None = None) -> int:
    from benchmarks.fps_report import report

    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = load_config(argv)
    try:
        result = run(cfg, argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(report(result))
    if cfg.json:
        print(f"wrote {cfg.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``python -m stream run|evaluate|tune|ui|frames``.

    python -m stream run demo                                   # bundled synthetic video + student
    python -m stream run clip.mp4 --fast --predictions p.jsonl  # every frame, as fast as possible
    python -m stream run udp://127.0.0.1:5000 --record live.mp4 --max-frames 900
    python -m stream run /dev/video0 --size 1920x1080 --fps 60 --pixel-format mjpeg

Exit codes, one meaning each:
  0  the run went to its end (the source's end, --duration, --max-frames, Ctrl-C or SIGTERM);
     trouble it recovered from (live outages it reconnected after, damaged data the decoder
     stepped over) is reported as ``warning:`` lines, and outages as gap records in the log;
  2  bad input (a source that cannot be opened, a model, an option, an output path), one line;
  3  the run ended on an error it could not recover from (a file undecodable past some point, a
     live input gone for good with --give-up-after, an engine or recorder failure); the frames
     before it are analysed and logged.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

EXIT_OK, EXIT_USAGE, EXIT_SOURCE = 0, 2, 3


def _run_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="'demo', a video file, an image folder, /dev/videoN, a URL (rtsp/udp/srt/http), "
        "or 'synthetic'; several sources run as concurrent streams on one engine",
    )
    p.add_argument("--config", help="YAML file of pipeline options (stream.config.PipelineConfig keys)")
    p.add_argument("--model", help="exported student (.json/.safetensors/stem); default: the bundled student")
    p.add_argument("--engine", choices=["auto", "tensorrt", "onnxruntime", "torch"])
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", help="engine precision: auto | fp32 | fp16 | bf16 | int8")
    p.add_argument("--batch", type=int, help="most frames per engine call")
    p.add_argument("--max-wait-ms", type=float, help="longest a frame waits for a batch to fill")
    live = p.add_mutually_exclusive_group()
    live.add_argument(
        "--live",
        "--realtime",  # the flag's earlier name: commands written with it keep working
        dest="live",
        action="store_const",
        const=True,
        help="read files as a live feed: paced at their own frame rate, newest frame only",
    )
    live.add_argument(
        "--fast",
        dest="live",
        action="store_const",
        const=False,
        help="analyse every frame as fast as possible (default for files)",
    )
    p.add_argument("--smoothing", help="none | ema:alpha=0.3 | window:size=8 | hmm:stay=0.98")
    p.add_argument("--threshold", type=float, help="alert threshold on the smoothed confidence")
    p.add_argument("--hysteresis", type=float, help="a held call is kept down to threshold - hysteresis")
    p.add_argument("--uncertain-low", type=float, help="confidence in [this, threshold) is 'uncertain'")
    p.add_argument("--min-frames", type=int, help="frames a call must hold before it is shown")
    p.add_argument("--min-duration", dest="min_duration_s", type=float, help="seconds a call must hold")
    p.add_argument(
        "--no-detect-area",
        dest="detect_area",
        action="store_const",
        const=False,
        help="feed the whole frame instead of the detected endoscope field",
    )
    p.add_argument(
        "--no-detect-modality",
        dest="detect_modality",
        action="store_const",
        const=False,
        help="treat every frame as WLI (default: NBI frames are told apart and kept from the student)",
    )
    p.add_argument("--nbi-teacher", help="NBI model for NBI frames: auto (<student>.nbi.json), none, or a path")
    p.add_argument("--views", help="what the student reads of each frame: auto (its own setting), whole, or "
                   "whole,centre (a second look at the field's central square; stream.views)")
    p.add_argument("--record", help="annotated video (.mp4 fragmented, .ts, .mkv): survives a kill")
    p.add_argument("--record-raw", help="raw video, same formats")
    p.add_argument("--predictions", help="per-frame JSONL log")
    p.add_argument("--max-frames", type=int, help="stop after this many analysed frames per stream")
    p.add_argument("--threads", type=int, help="CPU engine intra-op threads (default: half the cores)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--loop", action="store_true", help="replay files in a loop")
    p.add_argument("--size", help="capture size, e.g. 1920x1080 (devices)")
    p.add_argument("--fps", type=float, help="capture rate (devices) or image-folder rate")
    p.add_argument("--pixel-format", help="capture pixel format, e.g. mjpeg, yuyv422 (devices)")
    p.add_argument(
        "--give-up-after",
        type=float,
        help="end the run when a live input has sent nothing for this many seconds "
        "(default: keep reconnecting)",
    )
    p.add_argument(
        "--decode-threading",
        default="auto",
        choices=["auto", "slice", "frame"],
        help="live decoding: slice threads (auto, no delay) or frame threads (more throughput, "
        "threads-1 frames of delay)",
    )
    p.add_argument("--stats", help="write the run summary (latency percentiles, drops) to this JSON file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary table")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stream", description="Real-time endoscopy video runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub.add_parser("run", help="analyse a video source live or as fast as possible"))
    sub.add_parser(
        "evaluate", help="video-level evaluation (see: python -m stream evaluate -h)", add_help=False
    )
    sub.add_parser("tune", help="a student's alert setting from validation videos (see: python -m stream tune -h)",
                   add_help=False)
    sub.add_parser("ui", help="the Gradio live UI (see: python -m stream ui -h)", add_help=False)
    sub.add_parser("frames", help="training frames cut from videos as the runtime reads them "
                   "(see: python -m stream frames -h)", add_help=False)
    return parser


# Options for stream.config.load_pipeline_config, named flat like a YAML file's keys.
_CFG_KEYS = (
    "model",
    "engine",
    "device",
    "precision",
    "batch",
    "max_wait_ms",
    "live",
    "smoothing",
    "threshold",
    "hysteresis",
    "uncertain_low",
    "min_frames",
    "min_duration_s",
    "detect_area",
    "detect_modality",
    "nbi_teacher",
    "views",
    "record",
    "record_raw",
    "predictions",
    "max_frames",
    "threads",
)


def _progress(total: int | None, quiet: bool):
    if quiet:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", dynamic_ncols=True, file=sys.stderr, mininterval=0.5)


def cmd_run(args: argparse.Namespace) -> int:
    from pagkd_core.config import ConfigError
    from stream.config import load_pipeline_config
    from stream.engines import EngineError
    from stream.sources import SourceError, open_source

    sources = []
    try:
        cfg = load_pipeline_config(args.config, {k: getattr(args, k) for k in _CFG_KEYS})
        # Sources first: a wrong path fails in a second, before the engine is built.
        for spec in args.sources:
            sources.append(
                open_source(
                    spec,
                    live=cfg.live,
                    loop=args.loop,
                    size=args.size,
                    fps=args.fps,
                    pixel_format=args.pixel_format,
                    threading=args.decode_threading,
                    give_up_after=args.give_up_after,
                )
            )
        from stream.pipeline import Pipeline  # torch loads here, once the sources are known to open

        pipe = Pipeline(cfg)
        for src in sources:
            pipe.add_stream(src)  # streams "0", "1", ... in the order given
    except (SourceError, EngineError, ConfigError, OSError, ValueError) as e:
        for src in sources:
            src.close()
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    first = next(iter(pipe.streams.values())).source.info
    total = None if first.live or args.loop or len(args.sources) > 1 else first.frames
    if total and cfg.max_frames:
        total = min(total, cfg.max_frames)
    bar = _progress(total, args.quiet)
    if bar is not None:
        from stream.sinks import Callback

        pipe.add_sink(Callback(lambda r: bar.update(1)))

    stopping, signalled = [], []

    def _terminate(*_):
        # SIGTERM ends the run like Ctrl-C: sinks are flushed and closed. Only the first one
        # interrupts; a second one during the shutdown would cut the summary and the log short.
        signalled.append(True)
        if not stopping:
            stopping.append(True)
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        try:
            summary = pipe.run(timeout=args.duration)
        except KeyboardInterrupt:  # it came while starting: stop() still flushes and closes
            summary = pipe.stop()
        stopping.append(True)  # from here on a SIGTERM must not cut the report short
        return _report(args, cfg, pipe, summary, bar)
    finally:
        # Once told to terminate, the process is ending: a further SIGTERM while it exits must not
        # kill it with 143 after a clean run; otherwise the caller's handler comes back.
        signal.signal(signal.SIGTERM, signal.SIG_IGN if signalled else previous)


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None:  # e.g. --predictions naming a directory
        return f"cannot write or read {e.filename!r}: {e.strerror}; give a file path you may write to"
    return " ".join(str(e).split())


def _report(args, cfg, pipe, summary: dict, bar) -> int:
    if bar is not None:
        bar.close()
    if args.stats:
        # the smoothing and alerts in effect: defaults < the student's alert_setting < --config < flags
        settings = {"smoothing": pipe.cfg.smoothing.spec, "alerts": pipe.cfg.alerts.to_dict()}
        with open(args.stats, "w") as f:
            json.dump({**summary, **settings}, f, indent=2)
    if not args.quiet:
        print(
            f"{summary['frames']} frames in {summary['wall_s']:.1f} s ({summary['fps']:.1f} fps) on "
            f"{summary['engine']['engine']}/{summary['engine']['device']}",
            file=sys.stderr,
        )
        print(pipe.stats.table(), file=sys.stderr)
        for sid, s in summary["streams"].items():
            print(
                f"stream {sid}: analysed {s['analysed']}, dropped {s['dropped']}, "
                f"decode errors {s['decode_errors']}, reconnects {s['reconnects']}",
                file=sys.stderr,
            )
    logged = f" and logged to {cfg.predictions}" if cfg.predictions else ""
    for w in pipe.warnings():  # went on past it: the frames after it were analysed too
        print(f"warning: {w}; the run went on ({summary['frames']} frames analysed{logged})", file=sys.stderr)
    errors = pipe.errors()
    if errors:
        print(f"error: {errors[0]}; the {summary['frames']} frames before it were analysed{logged}", file=sys.stderr)
        return EXIT_SOURCE
    return EXIT_OK


def _delegate(module: str, argv: list[str]) -> int:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        print(f"error: {module} is not available ({e})", file=sys.stderr)
        return EXIT_USAGE
    return int(mod.main(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # evaluate, tune and ui own their options; hand them the rest of the line untouched.
    delegated = {"evaluate": "stream.video_eval", "tune": "stream.tune", "ui": "stream.ui.app",
                 "frames": "stream.training_frames"}
    if argv and argv[0] in delegated:
        return _delegate(delegated[argv[0]], argv[1:])
    args = build_parser().parse_args(argv)
    return cmd_run(args)

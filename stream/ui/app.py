"""`python -m stream ui`: the Gradio overlay app on the bundled model and the demo video.

    python -m stream ui                              # http://127.0.0.1:7860, demo video, bundled model
    python -m stream ui --source /dev/video0 --model runs/student.json
    python -m stream ui --host 0.0.0.0 --auth alice:secret   # reachable from the network: add a login

Safe by default: binds 127.0.0.1, no public share link unless --share, uploads limited in
size and type and deleted when the page closes.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from stream.ui.controls import Controls
from stream.ui.session import VIDEO_EXTS, SessionFiles, parse_size

ASSETS = Path(__file__).resolve().parent.parent / "assets"


@dataclass
class UIConfig:
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    auth: str = ""  # "user:password"; empty: no login
    model: str = ""  # exported student (.json/.safetensors/stem); empty: the bundled one
    source: str = "demo"
    engine: str = "auto"
    device: str = "cpu"
    threads: int = 0  # intra-op threads for the engine; 0: library default
    max_upload: str = "500MB"
    jpeg_quality: int = 80
    frame_marker: bool = False  # stamp a frame counter into each picture (display-latency measurement)
    threshold: float = 0.7
    uncertain: float = 0.2
    smoothing: str = "ema"
    strength: float = 0.5
    min_alert_s: float = 0.2

    @property
    def max_upload_bytes(self) -> int:
        return parse_size(self.max_upload)


def parse_args(argv: list[str] | None) -> UIConfig:
    cfg = UIConfig()
    p = argparse.ArgumentParser(prog="python -m stream ui", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="YAML file with any of the options below (flags override it)")
    for f in fields(UIConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            typ = {"int": int, "float": float}.get(str(f.type), str)
            p.add_argument(flag, type=typ, default=None, metavar=f.name.upper())
    a = p.parse_args(argv)
    if a.config:
        data = yaml.safe_load(Path(a.config).read_text()) or {}
        unknown = set(data) - {f.name for f in fields(UIConfig)}
        if unknown:
            p.error(f"{a.config}: unknown keys {sorted(unknown)}")
        for k, v in data.items():
            setattr(cfg, k, v)
    for f in fields(UIConfig):
        v = getattr(a, f.name)
        if v is not None:
            setattr(cfg, f.name, v)
    try:
        cfg.max_upload_bytes
    except ValueError as e:
        p.error(str(e))
    if cfg.auth and ":" not in cfg.auth:
        p.error("--auth takes user:password")
    if cfg.host not in ("127.0.0.1", "localhost", "::1") and not cfg.auth:
        print(f"warning: serving on {cfg.host} without --auth: anyone who can reach this port sees the video",
              file=sys.stderr)
    return cfg


def default_model() -> Path:
    for name in ("student.json", "student.safetensors"):
        if (ASSETS / name).is_file():
            return ASSETS / name
    raise SystemExit(f"error: the bundled model {ASSETS / 'student.json'} is missing; pass --model PATH")


class AppContext:
    """Everything the page's handlers share: config, engine, live runner, session files."""

    def __init__(self, cfg: UIConfig):
        from stream.config import PipelineConfig
        from stream.engines import build_engine
        from stream.sources import open_source
        from stream.ui.live import FrameHub
        from stream.ui.runner import LiveRunner

        self.cfg = cfg
        self.video_exts = VIDEO_EXTS
        model = cfg.model or str(default_model())
        opts = {"threads": cfg.threads} if cfg.threads and cfg.engine == "torch" else {}
        # One engine for the live stream (batch 1) and replays (batch 4); max_batch is an upper bound.
        self.engine = build_engine(cfg.engine, model, device=cfg.device, max_batch=4, **opts)
        self.engine.warmup(iters=2, batch=1)
        self.base = PipelineConfig(model=model, engine=cfg.engine, device=cfg.device, batch=1, max_wait_ms=0.0,
                                   realtime=True, threads=cfg.threads)
        self.hub = FrameHub(cfg.jpeg_quality, marker=cfg.frame_marker)
        controls = Controls(cfg.threshold, cfg.uncertain, cfg.smoothing, cfg.strength, cfg.min_alert_s)

        def open_live(spec: str):
            # Files replay paced at their own rate and loop, so the demo keeps running.
            return open_source(spec, realtime=True, loop=True, stream_id="live")

        self.runner = LiveRunner(self.hub, self.engine, self.base, controls, open_live)
        self.files = SessionFiles()
        self.source_choices = ["demo", "synthetic", "webcam", "/dev/video0", "udp://127.0.0.1:5000"]

    @property
    def class_names(self) -> list[str]:
        return list(self.engine.class_names)

    def replay(self, probe, labels, out_dir, progress=None):
        from stream.ui.replay import run_replay

        return run_replay(self.engine, self.base, self.runner.controls, probe, labels, out_dir, progress)

    def close(self) -> None:
        self.runner.close()
        self.engine.close()
        self.files.close()


def build_app(cfg: UIConfig):
    """(gr.Blocks, AppContext, launch kwargs) - also used by tests."""
    from stream.ui.layout import CSS, build_blocks
    from stream.ui.live import live_routes

    ctx = AppContext(cfg)
    ctx.runner.switch(cfg.source)
    demo = build_blocks(ctx)
    user, _, pw = cfg.auth.partition(":")
    kwargs = dict(
        server_name=cfg.host,
        server_port=cfg.port,
        share=cfg.share,
        auth=(user, pw) if cfg.auth else None,
        max_file_size=cfg.max_upload_bytes,
        allowed_paths=[str(ctx.files.root)],
        app_kwargs={"routes": live_routes(ctx.hub)},  # MJPEG on Gradio's own FastAPI app
        css=CSS,
        footer_links=["gradio"],
        show_error=True,
    )
    return demo, ctx, kwargs


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    try:
        demo, ctx, kwargs = build_app(cfg)
    except Exception as e:  # bad model/source: one line and a non-zero exit
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        demo.queue(default_concurrency_limit=4).launch(**kwargs)
    except KeyboardInterrupt:
        pass
    finally:
        ctx.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

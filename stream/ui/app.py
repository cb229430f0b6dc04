"""`python -m stream ui`: the Gradio overlay app on the bundled model and the demo video.

    python -m stream ui                              # http://127.0.0.1:7860, demo video, bundled model
    python -m stream ui --source /dev/video0 --model runs/student.json
    python -m stream ui --host 0.0.0.0 --auth alice:secret   # reachable from the network: add a login

Safe by default: binds 127.0.0.1, no public share link unless --share, uploads limited in
size and type and deleted when the page closes.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from stream.ui.controls import Controls
from stream.ui.session import VIDEO_EXTS, SessionFiles, parse_size


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class UIConfig:
    host: str = _opt("127.0.0.1", "address to listen on; anything but loopback should come with --auth")
    port: int = _opt(7860, "port of the page and the live-view routes")
    share: bool = _opt(False, "also open a public Gradio share link (off unless asked for)")
    auth: str = _opt("", "user:password login for the page and the live-view routes")
    model: str = _opt("", "exported student (.json/.safetensors/stem); default: the bundled one")
    source: str = _opt("demo", "first live source: demo, a file, /dev/videoN, a URL, synthetic, webcam")
    engine: str = _opt("auto", "auto | onnxruntime | torch | tensorrt")
    device: str = _opt("auto", "auto | cpu | cuda | cuda:N")
    threads: int = _opt(1, "engine intra-op threads on CPU (1: no spinning pool competing with decode)")
    detect_modality: bool = _opt(True, "tell NBI frames from WLI; off: every frame is read by the student")
    views: str = _opt("auto", "what the student reads of each frame: auto (its own views), whole, or whole,centre")
    batch: int = _opt(4, "frames per engine call in a replay (the engine is built for it); live: one at a time")
    max_upload: str = _opt("500MB", "largest accepted upload, e.g. 500MB, 2GB, 800MiB")
    jpeg_quality: int = _opt(80, "live-view JPEG quality (1-100)")
    frame_marker: bool = _opt(False, "stamp frame numbers into the picture (display-latency measurement)")
    threshold: float = _opt(0.7, "initial alert threshold (top-class smoothed confidence)")
    uncertain_band: float = _opt(0.2, "initial width of the uncertain band below the threshold")
    smoothing: str = _opt("ema", "initial smoothing: none | ema | window | hmm")
    strength: float = _opt(0.5, "initial smoothing strength, 0..1")
    min_duration_s: float = _opt(0.2, "initial minimum alert duration (s)")
    # The source box's policy (stream.ui.policy): repeatable, given by the operator at start-up.
    allow_source: list[str] = field(default_factory=list, metadata={"many": True, "help": (
        "also accept sources matching this shell-style pattern in the source box, e.g. 'udp://127.0.0.1:*'")})
    allow_dir: list[str] = field(default_factory=list, metadata={"many": True, "help": (
        "also accept files under this directory in the source box")})
    allowed_host: list[str] = field(default_factory=list, metadata={"many": True, "help": (
        "also answer requests whose Host header is this name; default: the bound address only")})
    # The options the operator gave, in the file or as flags (set by parse_args): a student's own
    # alert_setting sets the sliders' starting values where these do not. No annotation: no option.
    given = frozenset()

    @property
    def max_upload_bytes(self) -> int:
        return parse_size(self.max_upload)


# Earlier names of options (flags and YAML keys), still read: the names now match AlertConfig's.
RENAMED = {"uncertain": "uncertain_band", "min_alert_s": "min_duration_s"}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse_args(argv: list[str] | None) -> UIConfig:
    cfg = UIConfig()
    p = argparse.ArgumentParser(prog="python -m stream ui", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="YAML file with any of the options below (flags override it)")
    for f in fields(UIConfig):
        flags = [_flag(f.name)] + [_flag(old) for old, new in RENAMED.items() if new == f.name]
        if f.metadata.get("many"):
            p.add_argument(*flags, dest=f.name, action="append", default=None, metavar="X", help=f.metadata["help"])
            continue
        own = ", or the student's own alert_setting" if f.name in SLIDERS else ""  # starting_controls
        helptext = f"{f.metadata['help']} (default: {f.default}{own})"
        if f.type in ("bool", bool):
            p.add_argument(*flags, action=argparse.BooleanOptionalAction, default=None, help=helptext)
        else:
            typ = {"int": int, "float": float}.get(str(f.type), str)
            p.add_argument(*flags, dest=f.name, type=typ, default=None, metavar=f.name.upper(), help=helptext)
    a = p.parse_args(argv)
    options = {}
    if a.config:
        # the project's one YAML reader and typed coercion
        from pagkd_core.config import ConfigError, apply_updates, read_yaml_mapping

        try:
            options = read_yaml_mapping(a.config, "UI options")
        except ConfigError as e:
            p.error(str(e))
        try:
            apply_updates(cfg, {RENAMED.get(k, k): v for k, v in options.items()})
        except ConfigError as e:
            p.error(f"{a.config}: {e}")
    flags = {f.name: getattr(a, f.name) for f in fields(UIConfig) if getattr(a, f.name) is not None}
    for name, v in flags.items():
        setattr(cfg, name, v)
    cfg.given = frozenset(flags) | frozenset(RENAMED.get(k, k) for k in options)
    try:
        parse_size(cfg.max_upload)
    except ValueError as e:
        p.error(str(e))
    if cfg.views != "auto":
        from stream.views import parse_views

        try:
            parse_views(cfg.views)
        except ValueError as e:
            p.error(str(e))
    if cfg.auth and ":" not in cfg.auth:
        p.error("--auth takes user:password")
    if cfg.host not in ("127.0.0.1", "localhost", "::1") and not cfg.auth:
        print(
            f"warning: serving on {cfg.host} without --auth: anyone who can reach this port sees the video",
            file=sys.stderr,
        )
    return cfg


def default_model() -> Path:
    from stream.config import bundled_model

    path = bundled_model()
    if not path.is_file():
        raise FileNotFoundError(
            f"the bundled model {path} is missing; reinstall the package or pass --model PATH"
        )
    return path


# The options that are the sliders' starting values (Controls' fields of the same names).
SLIDERS = ("threshold", "uncertain_band", "smoothing", "strength", "min_duration_s")


def starting_controls(cfg: UIConfig, model: str, class_names: list[str]) -> Controls:
    """The sliders' starting values: the options the operator gave, over the student's own
    alert_setting where it has one (the runtime's resolved config: stream.config), over the page's
    defaults. The operator can still move every slider."""
    from stream.config import load_pipeline_config, student_setting

    mine = {k: getattr(cfg, k) for k in SLIDERS}
    if student_setting(model) is None:
        return Controls(**mine)
    resolved = load_pipeline_config(None, {"model": model})
    own = Controls.from_configs(resolved.smoothing, resolved.alerts, len(class_names))
    return replace(own, **{k: v for k, v in mine.items() if k in cfg.given})


class AppContext:
    """Everything the page's handlers share: config, engine, live runner, session files."""

    def __init__(self, cfg: UIConfig):
        from stream.config import PipelineConfig
        from stream.engines import build_engine, resolve_device
        from stream.ui.live import FrameHub
        from stream.ui.runner import LiveRunner

        self.cfg = cfg
        self.video_exts = VIDEO_EXTS
        model = cfg.model or str(default_model())
        device = resolve_device(cfg.device)
        self.replay_cfg = PipelineConfig(
            model=model,
            engine=cfg.engine,
            device=device,
            batch=cfg.batch,
            max_wait_ms=5.0,
            live=False,
            threads=cfg.threads,
            detect_modality=cfg.detect_modality,
            views=cfg.views,
        )
        # The live feed is one stream read one frame at a time: waiting for a batch would only add latency.
        live_cfg = replace(self.replay_cfg, batch=1, max_wait_ms=0.0, live=True)
        opts = {"threads": cfg.threads} if cfg.threads and device == "cpu" else {}
        # One engine for the live stream and replays, built for the replay's batch.
        self.engine = build_engine(cfg.engine, model, device=device, max_batch=cfg.batch, **opts)
        self.engine.warmup(iters=2, batch=1)
        self.hub = FrameHub(cfg.jpeg_quality, marker=cfg.frame_marker)
        controls = starting_controls(cfg, model, self.class_names)
        self.runner = LiveRunner(self.hub, self.engine, live_cfg, controls)
        self.files = SessionFiles(os.environ.get("GRADIO_TEMP_DIR"))
        os.environ["GRADIO_TEMP_DIR"] = str(self.files.root)  # Gradio's cache: see SessionFiles
        from stream.ui.policy import SourcePolicy

        # What the page's source box may open: see stream.ui.policy (and docs/ui.md).
        self.policy = SourcePolicy(list(cfg.allow_source), list(cfg.allow_dir), exact=[cfg.source])
        candidates = [cfg.source, "demo", "synthetic", "webcam", "/dev/video0", *cfg.allow_source]
        self.source_choices = list(dict.fromkeys(c for c in candidates if "*" not in c and "?" not in c))

    @property
    def class_names(self) -> list[str]:
        return list(self.engine.class_names)

    def replay(self, probe, labels, out_dir, progress=None):
        from stream.ui.replay import run_replay

        return run_replay(self.engine, self.replay_cfg, self.runner.controls, probe, labels, out_dir, progress)

    def close(self) -> None:
        self.files.close()  # first: nothing of a session may outlive the app, however the rest ends
        self.runner.close()
        self.engine.close()
        self.files.close()  # again: a handler still running at shutdown may have written since


def build_app(cfg: UIConfig):
    """(gr.Blocks, AppContext, launch kwargs) - also used by tests."""
    from stream.ui.layout import CSS, build_blocks
    from stream.ui.live import live_routes

    ctx = AppContext(cfg)
    ctx.runner.switch(cfg.source)
    demo = build_blocks(ctx)
    user, _, pw = cfg.auth.partition(":")
    kwargs = {
        "server_name": cfg.host,
        "server_port": cfg.port,
        "share": cfg.share,
        "auth": (user, pw) if cfg.auth else None,
        "max_file_size": cfg.max_upload_bytes,
        # MJPEG on Gradio's own FastAPI app; requests under a foreign Host name are refused (400)
        "app_kwargs": {"routes": live_routes(ctx.hub), "middleware": [host_check(cfg)]},
        "css": CSS,
        "footer_links": ["gradio"],
        "show_error": True,
    }
    return demo, ctx, kwargs


def host_check(cfg: UIConfig):
    """Starlette middleware answering only the bound address and ``--allowed-host`` names."""
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from stream.ui.policy import allowed_hosts

    return Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(cfg.host, cfg.allowed_host, cfg.share))


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    try:
        demo, ctx, kwargs = build_app(cfg)
    except Exception as e:  # noqa: BLE001 - bad model/source/engine: one line and a non-zero exit
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"* Live view: {cfg.source} on {ctx.engine!r}; uploads and results go under {ctx.files.root} "
        "(each session's folder is deleted when its page closes)",
        flush=True,
    )
    # The first replay evaluation would otherwise wait seconds for these imports.
    threading.Thread(
        target=lambda: (
            importlib.import_module("stream.video_eval"),
            importlib.import_module("sklearn.metrics"),
        ),
        daemon=True,
    ).start()
    # SIGTERM ends the app like Ctrl-C: sources stopped, the temporary folder removed.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        demo.queue(default_concurrency_limit=4).launch(**kwargs)
    except KeyboardInterrupt:
        pass
    finally:
        ctx.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

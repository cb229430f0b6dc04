"""The runtime's typed configuration: a dataclass that loads from YAML and takes overrides.

The smoother's and the alert machine's settings are their own configs, nested here
(``cfg.smoothing``, ``cfg.alerts``). Files and command lines name options flat - the
pipeline's fields, the alert machine's (``threshold``, ``min_frames``, ...) and ``smoothing``
as a spec string (``"hmm:stay=0.98"``) - and ``load_pipeline_config`` puts each where it belongs.

A *setting* is a smoothing spec with alert overrides, ``"window:size=8,threshold=0.7,presence=0.9"``
(``split_setting``, the one reader of that grammar: ``python -m stream evaluate --setting`` and an
exported student's own ``alert_setting``). Layers, each over the one before: the defaults here <
the student's ``alert_setting`` (chosen on validation videos by ``python -m stream tune``) < the
YAML file < the flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from stream.alerts import AlertConfig
from stream.smoothing import SmoothingConfig, parse_spec

ASSETS = Path(__file__).resolve().parent / "assets"


def bundled_model() -> Path:
    return ASSETS / "student.json"


@dataclass
class PipelineConfig:
    model: str = ""  # exported student (.json/.safetensors/stem); "" = the bundled one
    engine: str = "auto"  # auto | tensorrt | onnxruntime | torch
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # engine precision (fp32, fp16, bf16, int8)
    batch: int = 4  # most frames per engine call (across streams)
    max_wait_ms: float = 5.0  # longest a frame waits for others to fill a batch
    # Read inputs as live feeds: frames on their own clock (files paced at their rate), newest
    # frame only, the video passed through at once. None: devices and network streams only.
    live: bool | None = None
    inflight: int = 0  # frames per stream between source and result; 0: live 2, replay 2*batch
    prefetch: int = 4  # replay: frames decoded ahead in their own thread (0: off)
    smoothing: SmoothingConfig = field(default_factory=lambda: SmoothingConfig("ema", {"alpha": 0.3}))
    # The alert machine's parameters; its class names are the model's, set by the pipeline.
    alerts: AlertConfig = field(default_factory=AlertConfig)
    detect_area: bool = True  # crop to the endoscope's content area
    detect_every: int = 15  # frames between content-area checks
    detect_modality: bool = True  # tell NBI frames from WLI (stream.modality); NBI never reaches the student
    nbi_teacher: str = "auto"  # NBI model: auto (<student>.nbi.json if exported) | none | a path
    # What the student reads of each frame (stream.views): auto (its metadata's "views", else the
    # whole field) | whole | whole,centre
    views: str = "auto"
    preprocess_backend: str = "auto"  # auto (cv2 on CPU, torch on GPU) | cv2 | torch
    annotate: bool = True  # draw overlays for recording / display outputs
    record: str = ""  # annotated video (.mp4 fragmented, .ts, .mkv)
    record_raw: str = ""  # raw video, same formats
    predictions: str = ""  # per-frame JSONL log
    max_frames: int = 0  # per stream; 0 = until the source ends
    threads: int = 0  # CPU engine intra-op threads (torch, onnxruntime); 0 = half the cores


# Alert options a file or command line may set; the class names come from the model.
ALERT_OPTIONS = frozenset(AlertConfig.field_names() - {"class_names"})


def split_setting(spec: str) -> tuple[str, dict, dict]:
    """``"ema:alpha=0.3,min_frames=6"`` -> (mode, smoother params, alert overrides)."""
    mode, params = parse_spec(spec)
    alert = {k: params.pop(k) for k in list(params) if k in AlertConfig.field_names()}
    SmoothingConfig(mode, params)  # fail now, with the smoother's own message, not mid-report
    return mode, params, alert


def student_setting(model: str) -> tuple[str, str] | None:
    """(``alert_setting``, its file) of the student ``model`` names ("" = the bundled one), or None:
    it has none, or it cannot be read - the config load must not fail on that, the engine that
    loads the model says what is wrong with it."""
    from pagkd_core.student import meta_path, read_meta

    path = model or bundled_model()
    try:
        _, meta = read_meta(path)
    except Exception:  # noqa: BLE001 - see above: reported where the model is loaded
        return None
    spec = meta.get("alert_setting")
    return (str(spec), str(meta_path(path))) if spec else None


def _student_layer(model: str, error: type[Exception]) -> dict:
    """The student's own setting as flat options (smoothing as a SmoothingConfig); {} if none."""
    found = student_setting(model)
    if found is None:
        return {}
    spec, where = found
    try:
        mode, params, alert = split_setting(spec)
        unknown = set(alert) - ALERT_OPTIONS
        if unknown:
            raise ValueError(f"{', '.join(sorted(unknown))} cannot be set here")
        dataclasses.replace(AlertConfig(), **alert)  # out-of-range values fail here, naming the file
    except (TypeError, ValueError) as e:
        raise error(f"{where}: alert_setting {spec!r}: {' '.join(str(e).split())}") from None
    return {"smoothing": SmoothingConfig(mode, params), **alert}


def load_pipeline_config(path: str | None = None, overrides: dict | None = None) -> PipelineConfig:
    """A YAML file of flat options, then ``overrides`` (already typed, e.g. from argparse;
    None = not given), both over the model's own ``alert_setting``; a bad key or value raises
    ConfigError."""
    # one typed loader and one YAML reader for every config
    from pagkd_core.config import ConfigError, load_dataclass, read_yaml_mapping

    options = read_yaml_mapping(path, "pipeline options") if path else {}
    options.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if "alerts" in options:
        raise ConfigError(f"alert options are given flat ({', '.join(sorted(ALERT_OPTIONS))}), not as a section")
    options = {**_student_layer(str(options.get("model") or ""), ConfigError), **options}
    alerts = {k: options.pop(k) for k in list(options) if k in ALERT_OPTIONS}
    smoothing = options.pop("smoothing", None)
    cfg = load_dataclass(PipelineConfig, **options)
    try:
        if isinstance(smoothing, SmoothingConfig):
            cfg.smoothing = smoothing
        elif smoothing is not None:
            cfg.smoothing = SmoothingConfig.parse(str(smoothing))
        if alerts:
            cfg.alerts = dataclasses.replace(cfg.alerts, **alerts)
        if cfg.views != "auto":
            from stream.views import parse_views

            parse_views(cfg.views)  # a bad --views fails here, before any engine is built
    except (TypeError, ValueError) as e:  # the configs' own checks, e.g. a threshold out of range
        raise ConfigError(" ".join(str(e).split())) from None
    check_ranges(cfg, ConfigError)
    return cfg


# Numeric options and the least each may be: checked when the config is loaded, so a bad value
# is a one-line error naming the option, never a traceback from deep in the batcher.
_MINIMA = {"batch": 1, "max_wait_ms": 0, "inflight": 0, "prefetch": 0, "detect_every": 1, "max_frames": 0,
           "threads": 0}


def check_ranges(cfg: PipelineConfig, error: type[Exception] = ValueError) -> None:
    for name, least in _MINIMA.items():
        value = getattr(cfg, name)
        if value < least:
            flag = "--" + name.replace("_", "-")
            raise error(f"{name} ({flag}) must be at least {least:g}, got {value:g}")

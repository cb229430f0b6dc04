"""The runtime's typed configuration: a dataclass that loads from YAML and takes overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

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
    realtime: bool | None = None  # pace files at their rate, newest frame only; None: live inputs only
    inflight: int = 0  # frames per stream between source and result; 0: live 2, replay 2*batch
    prefetch: int = 4  # replay: frames decoded ahead in their own thread (0: off)
    smoothing: str = "ema:alpha=0.3"  # none | ema:alpha= | window:size= | hmm:stay=
    threshold: float = 0.7  # alert state machine (stream.alerts.AlertConfig)
    hysteresis: float = 0.1
    uncertain_low: float = 0.5
    min_frames: int = 3
    min_duration_s: float = 0.0
    presence: float = 0.5  # no_lesion students: P(lesion) that enters "lesion in view" (stream.alerts)
    presence_hysteresis: float = 0.15
    detect_area: bool = True  # crop to the endoscope's content area
    detect_every: int = 15  # frames between content-area checks
    detect_modality: bool = True  # tell NBI frames from WLI (stream.modality); NBI never reaches the student
    nbi_teacher: str = "auto"  # NBI model: auto (<student>.nbi.json if exported) | none | a path
    preprocess_backend: str = "auto"  # auto (cv2 on CPU, torch on GPU) | cv2 | torch
    annotate: bool = True  # draw overlays for recording / display callbacks
    record: str = ""  # annotated video (.mp4 fragmented, .ts, .mkv)
    record_raw: str = ""  # raw video, same formats
    predictions: str = ""  # per-frame JSONL log
    max_frames: int = 0  # per stream; 0 = until the source ends
    threads: int = 0  # CPU engine intra-op threads (torch, onnxruntime); 0 = half the cores

    def alert_params(self) -> dict:
        return {
            k: getattr(self, k)
            for k in ("threshold", "hysteresis", "uncertain_low", "min_frames", "min_duration_s", "presence",
                      "presence_hysteresis")
        }


def load_pipeline_config(path: str | None = None, overrides: dict | None = None) -> PipelineConfig:
    """YAML file (flat keys of PipelineConfig), then ``overrides`` (already typed, e.g. from argparse)."""
    from pagkd_core.config import ConfigError, load_dataclass  # one typed loader for every config

    cfg = load_dataclass(PipelineConfig, path)
    for k, v in (overrides or {}).items():
        if v is not None:
            if k not in {f.name for f in dataclasses.fields(cfg)}:
                raise ConfigError(f"unknown pipeline option {k!r}")
            setattr(cfg, k, v)
    return cfg

"""Typed generator configs (YAML + `key=value` overrides, same rules as `pagkd_core.config`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pagkd_core.config import ConfigError, load_dataclass

CLASSES = ("hyperplastic", "adenoma", "adenocarcinoma")  # label order (NICE 1, 2, 3)
DEFAULT_CLASSES = ["hyperplastic", "adenoma"]
MODALITIES = ("WLI", "NBI")
BORDERS = ("round", "octagon", "none", "random")


@dataclass
class Difficulty:
    """Knobs that set how hard each modality is. Defaults: see docs/synthetic_data.md (calibrated)."""

    class_overlap: float = 0.3  # 0 = textbook classes; 1 = class parameters fully mixed
    nbi_pattern: float = 1.0  # contrast of pits and capillaries in NBI
    wli_pattern: float = 0.6  # same pattern in WLI, relative contrast (0 would remove the cue);
    wli_color: float = 0.7  # WLI colour cue (adenoma browner/redder) relative to NBI's tint;
    #                                 each WLI view shows a random fraction U(0, 1) of both
    nbi_blur: float = 0.4  # Gaussian blur sigma, pixels at 448 px
    wli_blur: float = 1.4
    noise: float = 0.015  # sensor noise std on a 0..1 scale
    specular: float = 1.0  # amount of specular highlights (worse in WLI)
    min_scale: float = 0.8  # view zoom range (1 = lesion fills about 60% of the field)
    max_scale: float = 1.3
    max_tilt: float = 0.3  # perspective tilt of the mucosa plane


@dataclass
class ImageConfig:
    out: str = "data/synthetic"
    classes: list[str] = field(default_factory=lambda: list(DEFAULT_CLASSES))
    lesions_per_class: int = 40
    views: int = 4  # views per modality per lesion
    size: int = 448
    paired_fraction: float = 0.5  # lesions rendered in both modalities; the rest in one only
    seed: int = 0
    border: str = "random"  # endoscope field: round | octagon | none | random
    text_prob: float = 0.3  # chance of on-screen text in a view
    workers: int = 1
    difficulty: Difficulty = field(default_factory=Difficulty)


@dataclass
class VideoConfig:
    width: int = 1280
    height: int = 720
    fps: int = 30
    seconds: float = 20.0  # iter_procedure_frames: 0 = endless
    seed: int = 0
    modality: str = "WLI"  # NBI: a pure NBI clip (nbi_fraction is then unused)
    # share of the lesions in close view for which the endoscopist switches to NBI for a few
    # seconds (nbi.py); 0 = a pure WLI clip. Lesions and camera path do not depend on it.
    nbi_fraction: float = 0.3
    classes: list[str] = field(default_factory=lambda: list(DEFAULT_CLASSES))
    render_scale: float = 0.5  # render the lumen at this fraction of the size, then upscale
    speed: float = 0.6  # forward speed, tube radii per second
    lesion_gap: float = 3.0  # mean distance between lesions along the tube, in tube radii
    motion_blur: float = 1.0
    exposure_jitter: float = 1.0
    border: str = "octagon"
    text: bool = True
    crf: int = 23  # H.264 quality (higher = smaller file)
    difficulty: Difficulty = field(default_factory=Difficulty)


@dataclass
class FrameConfig:
    """Training frames rendered like the procedure videos (frames.py, docs/synthetic_data.md)."""

    out: str = "data/synthetic_frames"
    classes: list[str] = field(default_factory=lambda: list(DEFAULT_CLASSES))
    lesions_per_class: int = 60  # per modality: each lesion is rendered in one modality only
    frames_per_lesion: int = 8  # camera poses per lesion
    no_lesion_frames: int = 320  # per modality, spread over the patients of that modality
    lesions_per_patient: int = 6  # lesions sharing one patient's colon (one wall-texture bake)
    size: int = 192  # saved square frame: the content area resized, as the runtime feeds the model
    width: int = 1280  # the video frame the content area is cut from
    height: int = 720
    render_scale: float = 0.5  # as VideoConfig: the lumen is rendered at this fraction, then upscaled
    min_coverage: float = 0.004  # a lesion frame shows at least this share of the field (video: visible)
    max_distance: float = 4.0  # camera-lesion distance range, tube radii (log-uniform)
    min_distance: float = 0.25
    motion_blur: float = 0.5  # chance that a frame is taken while the camera turns
    exposure_swing: float = 0.3  # std of log(gain) around the auto-exposure's target
    text_prob: float = 0.8  # chance of the on-screen text (SYNTHETIC, modality, time)
    border: str = "random"  # endoscope field: round | octagon | random (per frame)
    seed: int = 0
    workers: int = 1
    difficulty: Difficulty = field(default_factory=Difficulty)


def check_classes(classes) -> list[str]:
    for c in classes:
        if c not in CLASSES:
            raise ConfigError(f"unknown class '{c}' (choose from {', '.join(CLASSES)})")
    if len(set(classes)) < 2:
        raise ConfigError("give at least two different classes")
    return [c for c in CLASSES if c in classes]  # canonical label order


def load(cls, path: str | Path | None = None, overrides: list[str] | None = None, **values):
    """Build a config of type `cls` from defaults, then a YAML file, then `values`, then overrides."""
    cfg = load_dataclass(cls, path, overrides, **values)
    cfg.classes = check_classes(cfg.classes)
    if getattr(cfg, "modality", "WLI") not in MODALITIES:
        raise ConfigError(f"modality '{cfg.modality}' is not one of {', '.join(MODALITIES)}")
    if getattr(cfg, "border", "random") not in BORDERS:
        raise ConfigError(f"border '{cfg.border}' is not one of {', '.join(BORDERS)}")
    if not 0.0 <= getattr(cfg, "nbi_fraction", 0.0) <= 1.0:
        raise ConfigError(f"nbi_fraction must be in [0, 1] (got {cfg.nbi_fraction})")
    return cfg

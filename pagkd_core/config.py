"""Typed run configuration: dataclasses that load from YAML and take `key.sub=value` overrides.

One `Config` describes a whole experiment (data, both networks, both optimisation stages,
the distiller); every command reads the same object so a run can be repeated from its JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class DataConfig:
    root: str = "data/synthetic"
    layout: str = "auto"  # auto | generic | piccolo | cpc
    classes: list[str] = field(default_factory=list)  # empty: inferred (canonical order first)
    csv: str = ""  # PICCOLO metadata CSV (';'-separated); default: root/*.csv
    csv_lesion_col: str = ""  # empty: guessed from the header (e.g. "lesion")
    csv_class_col: str = ""  # empty: guessed (e.g. "histology")
    csv_patient_col: str = ""  # empty: guessed (e.g. "patient"), optional
    image_size: int = 448
    folds: int = 5
    fold: int = 0
    val_fraction: float = 0.2  # of the training folds' lesions, for model selection
    split_seed: int = 0
    # Few-labels regime: keep the WLI training images of this many lesions per class (seeded by
    # split_seed and the fold; whole lesions); 0 = all. NBI data, validation and test untouched.
    wli_train_lesions: int = 0
    # WLI lesion images whose manifest `coverage` is below this train only the student's split
    # among the lesion classes, towards even odds (pagkd_core.class_loss): a far lesion's class is not
    # in its pixels (docs/training.md, "Far lesions"). 0 = off: every image's class is its target.
    far_coverage: float = 0.0
    # ... of those, the images whose lesion covers at least this share still train "a lesion is in
    # view" (P(no_lesion) towards 0); below it a lesion is too small to tell from none. 1.0 = off:
    # far images train only the class split (docs/training.md, "Far lesions still seen").
    presence_coverage: float = 1.0
    # ... and change the picture by at least this many grey levels (manifest `lesion_contrast`):
    # a far lesion in the dark of the lumen covers pixels it barely changes, and "a lesion is in
    # view" is not in them either. 0 = off (coverage alone decides).
    presence_contrast: float = 0.0
    # > 0: each WLI training image goes through JPEG at a quality drawn from [jpeg_quality, 95]
    # before augmentation, a stand-in for the H.264 the runtime reads (docs/training.md, "Codec").
    # 0 = off.
    jpeg_quality: int = 0
    # How a class's training images are drawn: "image", each equally likely; "lesion", each lesion
    # equally likely, then one of its images, so a lesion seen in a hundred video frames weighs as
    # much as one seen in six close-ups (docs/training.md, "Lesions, not frames").
    sample_by: str = "image"
    augment: bool = True
    cache: bool = True  # keep resized uint8 images in memory (small datasets)
    workers: int = 0


POOLS = ("mean", "mil")  # ModelConfig.pool's values; here, so validation needs no torch
SAMPLE_BY = ("image", "lesion")  # DataConfig.sample_by's values


@dataclass
class ModelConfig:
    backbone: str = "resnet50"
    pretrained: str = ""  # local .safetensors of timm backbone weights, or a hub name: timm:resnet50.tv_in1k
    # pretrained is an exported student with the same outputs: load its classifier and embedding
    # too, so a fine-tune continues that student instead of starting a fresh head
    pretrained_head: bool = False
    output_stride: int = 32  # 16 or 8: denser last feature map (timm dilation), for small inputs
    pool: str = "mean"  # how the classifier reads the feature map: one of POOLS (pagkd_core.models says how)


@dataclass
class OptimConfig:
    epochs: int = 200
    batch_size: int = 24  # student: (WLI, NBI) couples per step; teacher: NBI images
    lr: float = 1e-4
    weight_decay: float = 1e-8
    steps_per_epoch: int = 0  # 0: one pass over the training images


@dataclass
class DistillConfig:
    method: str = "pro+den"  # none | pro | den | pro+den | kd | add
    level: str = "group"  # group | image
    pairing: str = "random"  # random (PaGKD, unpaired) | true (paired lesions only)
    embed_dim: int = 128  # d: student 1x1 embedding and teacher-side projection
    n_queries: int = 12
    blocks: int = 1
    heads: int = 4
    temperature: float = 0.1
    set_classifier: bool = False
    pro_centre: bool = True  # compare batch-centred prototype sets (anti-collapse; False = [P] as written)
    lr: float = 0.0  # the distiller's own parts (LR-QFormer, projections); 0 = the student's optim.lr
    pro_weight: float = 1.0
    den_weight: float = 1.0
    kd_weight: float = 1.0
    kd_temperature: float = 4.0
    warmup_epochs: int = 5
    cam_low: float = 0.3
    cam_high: float = 0.7
    par_iters: int = 10
    par_dilations: tuple[int, ...] = (1, 2, 4, 8)
    use_par: bool = True
    # image: PAR on the image at half the input resolution, then pooled to the feature grid
    # (the authors' code); grid: PAR directly on the feature-map grid (this project before).
    par_placement: str = "image"
    # Control: WLI class c is grouped with NBI class (c + shift) mod K in the group losses (a
    # class-swapped teacher; 0 = aligned, the method). Level "group" only.
    teacher_class_shift: int = 0
    # The student's backbone starts from the fold's NBI teacher's (same backbone): transfer
    # without pairs or extra losses; composes with any method (none = CE from the teacher's weights).
    init_from_teacher: bool = False
    # Self-distillation (pagkd_core.anchor): weight of the KL between the class split of the student
    # as it starts (student.pretrained, with its head) and the one training; 0 = off.
    anchor_weight: float = 0.0
    cam_create_graph: bool = False  # [C] builds Grad-CAM with create_graph=True: same losses, more memory
    den_detach_teacher: bool = True  # stop-gradient on GKD-Den's teacher side (prevents token collapse)
    den_heads: int = 1
    den_loss: str = "l2"  # l2 | cosine
    qformer_self_attention: bool = True  # [P] self- then cross-attention; False = [C] cross only
    max_group_images: int = 64


@dataclass
class RunConfig:
    out_dir: str = "runs/default"  # fold k writes to <out_dir>/fold<k>/{teacher,student}
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | auto
    threads: int = 0  # torch intra-op threads; 0 = torch default
    # Every N optimiser steps of an epoch (from its first), the norm of each weighted loss's
    # gradient on the backbone (history "grad_norm"); extra backward passes on those steps
    # only; 0 = off. Single process.
    grad_norm_every: int = 20
    progress: bool = True


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    student: ModelConfig = field(default_factory=ModelConfig)
    teacher: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    teacher_optim: OptimConfig = field(default_factory=lambda: OptimConfig(batch_size=16))
    distill: DistillConfig = field(default_factory=DistillConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Stable short hash of everything that shapes the trained weights (not paths/UI)."""
        d = self.to_dict()
        d["run"] = {"seed": d["run"]["seed"]}
        d["data"] = {k: v for k, v in d["data"].items() if k not in ("root", "workers", "cache", "csv")}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def stage_dir(cfg: Config, stage: str, fold: int | None = None) -> Path:
    """Where one stage ("teacher", or a student's name) of one fold (default ``cfg.data.fold``)
    keeps its checkpoints: training writes there, evaluation and export read from there."""
    return Path(cfg.run.out_dir) / f"fold{cfg.data.fold if fold is None else fold}" / stage


class ConfigError(ValueError):
    pass


def _coerce(value, tp, where: str):
    """Convert a YAML/CLI value to the declared field type, with a one-line error if impossible."""
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (inner, *_) = typing.get_args(tp) or (str,)
        out = [_coerce(v.strip() if isinstance(v, str) else v, inner, where) for v in value]
        return tuple(out) if origin is tuple else out
    if origin in (typing.Union, types.UnionType):
        return _coerce(value, typing.get_args(tp)[0], where)
    try:
        if tp is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return tp(value) if value is not None else tp()
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: cannot read {value!r} as {tp.__name__}") from None


def apply_updates(obj, updates: dict, prefix: str = ""):
    """Set (nested) fields of the dataclass ``obj`` from a mapping, coercing each value to the
    field's type; unknown keys are a ConfigError naming the valid ones."""
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in updates.items():
        where = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key '{where}' (valid: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"'{where}' is a section; give sub-keys such as {where}.<name>=...")
            apply_updates(current, value, where + ".")
        else:
            setattr(obj, key, _coerce(value, hints[key], where))
    return obj


def parse_overrides(pairs: list[str]) -> dict:
    """['optim.lr=1e-3', 'distill.method=pro'] -> nested dict with YAML-typed values."""
    nested: dict = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"override '{pair}' must look like section.key=value")
        key, raw = pair.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = nested
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


def add_config_arguments(parser, config_help: str, example: str, default_config: str | None = None) -> None:
    """``--config FILE`` and repeatable ``--set KEY=VALUE``: the options of every command whose
    config ``load_dataclass`` reads (they become ``args.config`` and ``args.overrides``)."""
    parser.add_argument("--config", default=default_config, help=config_help)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config value, e.g. --set {example} (repeatable)")


def read_yaml_mapping(path: str | Path, what: str = "config keys") -> dict:
    """The mapping at the top of the YAML file ``path`` (empty file: {}); a missing file or another
    top level is a one-line ConfigError (``what`` names what the mapping should hold)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of {what} at the top level")
    return data


def load_dataclass(cls, path: str | Path | None = None, overrides: list[str] | None = None, **values):
    """A config of type ``cls``: defaults, then a YAML file, then ``values`` (None = not given),
    then ``key=value`` overrides. Every config of the project loads through here."""
    cfg = cls()
    if path:
        apply_updates(cfg, read_yaml_mapping(path, f"{cls.__name__} keys"))
    apply_updates(cfg, {k: v for k, v in values.items() if v is not None})
    apply_updates(cfg, parse_overrides(overrides or []))
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    cfg = load_dataclass(Config, path, overrides)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    choices = {
        "data.layout": (cfg.data.layout, ("auto", "generic", "piccolo", "cpc")),
        "distill.method": (cfg.distill.method, ("none", "pro", "den", "pro+den", "kd", "add")),
        "distill.level": (cfg.distill.level, ("group", "image")),
        "distill.pairing": (cfg.distill.pairing, ("random", "true")),
        "distill.den_loss": (cfg.distill.den_loss, ("l2", "cosine")),
        "distill.par_placement": (cfg.distill.par_placement, ("image", "grid")),
        "run.device": (cfg.run.device, ("cpu", "cuda", "auto")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")
    if not 0 <= cfg.data.fold < cfg.data.folds:
        raise ConfigError(f"data.fold={cfg.data.fold} must be in [0, data.folds={cfg.data.folds})")
    if cfg.data.folds < 2:
        raise ConfigError("data.folds must be at least 2")
    if not 0 < cfg.data.val_fraction < 1:
        raise ConfigError("data.val_fraction must be in (0, 1)")
    if not 0 <= cfg.data.far_coverage <= 1 or not 0 <= cfg.data.presence_coverage <= 1:
        raise ConfigError("data.far_coverage and data.presence_coverage are shares of the field, in [0, 1]")
    if cfg.data.sample_by not in SAMPLE_BY:
        raise ConfigError(f"data.sample_by must be one of {', '.join(SAMPLE_BY)}, got {cfg.data.sample_by!r}")
    if not 0 <= cfg.data.presence_contrast <= 255:
        raise ConfigError(f"data.presence_contrast is in grey levels, in [0, 255], got {cfg.data.presence_contrast}")
    if not 0 <= cfg.data.jpeg_quality <= 95:
        raise ConfigError(f"data.jpeg_quality must be 0 (off) or a JPEG quality in [1, 95], got {cfg.data.jpeg_quality}")
    for key, spec in (("student", cfg.student), ("teacher", cfg.teacher)):
        if spec.output_stride not in (8, 16, 32):
            raise ConfigError(f"{key}.output_stride={spec.output_stride} is not one of 8, 16, 32")
        if spec.pool not in POOLS:
            raise ConfigError(f"{key}.pool={spec.pool!r} is not one of {', '.join(POOLS)}")
        if spec.pretrained_head and not spec.pretrained.endswith(".safetensors"):
            raise ConfigError(f"{key}.pretrained_head needs {key}.pretrained to be an exported student's .safetensors")
    if cfg.distill.anchor_weight < 0:
        raise ConfigError(f"distill.anchor_weight is a loss weight, >= 0, got {cfg.distill.anchor_weight}")
    if cfg.distill.anchor_weight > 0 and not cfg.student.pretrained_head:
        raise ConfigError("distill.anchor_weight keeps the starting student's answers: set student.pretrained to an "
                          "exported student's .safetensors and student.pretrained_head=true")
    if cfg.distill.teacher_class_shift and cfg.distill.level != "group":
        raise ConfigError("distill.teacher_class_shift needs distill.level=group (image-level couples share a class)")

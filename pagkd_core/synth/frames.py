"""Training frames as the runtime's model sees them, rendered like the procedure videos.

Each frame is a full video frame from scene.py's renderer (the same as `synth video`), cut to
the endoscope's content area (as stream/preprocess.py crops it) and resized to `size` square.
Work is split by patient: a patient is one colon (one wall-texture bake) in ONE modality with
a few lesions, so WLI and NBI frames come from different lesions and different mucosa
(unpaired, as in PaGKD). Each lesion is rendered alone in its colon from `frames_per_lesion`
poses; `no_lesion` frames come from camera segments in the same colons with no lesion placed.

Output: `<out>/<modality>/<class>/<lesion>_<n>.png` and `<out>/manifest.csv` (FRAME_COLUMNS:
the generic layout's columns first, so pagkd_core.data reads it unchanged).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pagkd_core.config import ConfigError

from . import latent as L
from .config import MODALITIES, FrameConfig
from .dataset import MANIFEST_COLUMNS, _remove_previous, check_writable, render_all
from .poses import down_the_lumen, log_uniform, look_at_wall
from .scene import MID_GREY, FrameTruth, PlacedLesion, TubeRenderer, content_box, osd_text

NO_LESION = "no_lesion"
FRAME_COLUMNS = (
    *MANIFEST_COLUMNS, "patient_id", "coverage", "x0", "y0", "x1", "y1", "wli_evidence", "distance",
    "lesion_contrast",
)  # fmt: skip
SEGMENT = 8  # no-lesion frames per camera segment (one lesion_id each)
_LESION, _EVIDENCE, _FRAME, _PATIENT, _SEGMENT = 0xF1, 0xE71D, 0xF2, 0xF3, 0xF4  # generator streams


@dataclass
class Shot:
    """One training frame and how it was made."""

    image: np.ndarray  # (size, size, 3) uint8: the content area, resized
    truth: FrameTruth  # the renderer's truth for the full frame
    crop: tuple[int, int, int, int]  # the content area's box in the full frame (exclusive)
    box: tuple[int, int, int, int] | None  # the lesion's box in `image` pixels (inclusive)
    distance: float | None  # camera to lesion centre, tube radii


@dataclass(frozen=True)
class Patient:
    """One colon in one modality: the unit of work (its wall texture is baked once)."""

    index: int
    modality: str
    lesions: tuple[tuple[int, str], ...]  # (lesion index, class)
    no_lesion: int  # frames with no lesion in view


def plan(cfg: FrameConfig) -> list[Patient]:
    """Lesions per modality (`lesions_per_class` of each class, disjoint between modalities),
    shuffled into patients of `lesions_per_patient`; no-lesion frames spread over them."""
    patients: list[Patient] = []
    n_cls = len(cfg.classes)
    for m, modality in enumerate(MODALITIES):
        idx = [
            (m * n_cls * cfg.lesions_per_class + k * n_cls + c, cls)
            for k in range(cfg.lesions_per_class)
            for c, cls in enumerate(cfg.classes)
        ]
        order = np.random.default_rng([cfg.seed, _PATIENT, m]).permutation(len(idx))
        groups = [
            tuple(idx[i] for i in order[s : s + cfg.lesions_per_patient])
            for s in range(0, len(idx), cfg.lesions_per_patient)
        ]
        base, extra = divmod(cfg.no_lesion_frames, len(groups))
        for g, lesions in enumerate(groups):
            patients.append(Patient(len(patients), modality, lesions, base + int(g < extra)))
    return patients


def lesion_id(cfg: FrameConfig, index: int) -> str:
    return f"f{cfg.seed}-{index:05d}"


def patient_id(cfg: FrameConfig, p: Patient) -> str:
    return f"f{cfg.seed}-p{p.index:03d}"


def content_view(frame: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """The runtime's view of a frame: its content area `box`, area-resized to size x size."""
    return cv2.resize(frame[box[1] : box[3], box[0] : box[2]], (size, size), interpolation=cv2.INTER_AREA)


def write_png(path: Path, image: np.ndarray) -> None:
    """Save an RGB training frame (its folder made); an unwritable file is an OSError, not a skip."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def _border(cfg: FrameConfig, rng: np.random.Generator) -> str:
    return str(rng.choice(["round", "octagon"])) if cfg.border == "random" else cfg.border


def _to_saved(cfg: FrameConfig, tube: TubeRenderer, truth: FrameTruth, box: tuple) -> tuple | None:
    """The lesion's box in the saved image's pixels (inclusive), from its render-size mask."""
    if truth.lesion is None:
        return None
    rows, cols = np.nonzero(truth.mask)
    bx0, by0, bx1, by1 = box
    fx, fy = tube.W / tube.wr * cfg.size / (bx1 - bx0), tube.H / tube.hr * cfg.size / (by1 - by0)
    ox, oy = bx0 * cfg.size / (bx1 - bx0), by0 * cfg.size / (by1 - by0)
    x0, y0 = max(0, math.floor(cols.min() * fx - ox)), max(0, math.floor(rows.min() * fy - oy))
    x1 = min(cfg.size - 1, math.ceil((cols.max() + 1) * fx - ox) - 1)
    y1 = min(cfg.size - 1, math.ceil((rows.max() + 1) * fy - oy) - 1)
    return x0, y0, x1, y1


class PatientRenderer:
    """Renders the frames of one `Patient`; every frame has its own seeded generator
    ([seed, stream, patient or lesion, frame]), so nothing depends on workers or order."""

    def __init__(self, cfg: FrameConfig, patient: Patient):
        self.cfg, self.p = cfg, patient
        prng = np.random.default_rng([cfg.seed, _PATIENT, patient.index])
        self.tube = TubeRenderer(
            L.sample_patient(prng), patient.modality, cfg.width, cfg.height, cfg.render_scale, cfg.difficulty
        )
        self.aspect = cfg.height / cfg.width

    def placed(self, slot: int) -> PlacedLesion:
        index, cls = self.p.lesions[slot]
        cfg = self.cfg
        les = L.sample_lesion(
            np.random.default_rng([cfg.seed, _LESION, index]),
            cls,
            cfg.classes,
            cfg.difficulty,
            lesion_id(cfg, index),
        )
        ev = L.sample_evidence(np.random.default_rng([cfg.seed, _EVIDENCE, index]), self.p.modality)
        where = np.random.default_rng([cfg.seed, _LESION, index, 1])
        return PlacedLesion(les, float(where.uniform(-np.pi, np.pi)), float(where.uniform(0.0, 50.0)), ev)

    def _shoot(self, rng, cam, lesions, border):
        """Render one frame with a training frame's camera: random motion blur, exposure swing,
        glare strength and text; returns (frame, truth)."""
        cfg = self.cfg
        blur = (0.0, 0.0)
        if rng.uniform() < cfg.motion_blur:
            a, n = rng.uniform(0, 2 * np.pi), log_uniform(rng, 2.0, 20.0) * self.tube.wr / 640
            blur = (n * math.cos(a), n * math.sin(a))
        swing = math.exp(rng.normal(0.0, cfg.exposure_swing))  # auto-exposure lag, gain steps, flicker

        def exposure(luma: float) -> float:
            return float(np.clip(MID_GREY / luma, 0.4, 3.0)) * swing

        text = osd_text(self.p.modality, rng.uniform(0, 3600)) if rng.uniform() < cfg.text_prob else None
        return self.tube.render(
            cam,
            lesions,
            exposure,
            rng,
            blur_px=blur,
            specular=rng.uniform(0.5, 1.3),
            border=border,
            text=text,
            contrast=True,
        )

    def _cut(self, frame: np.ndarray, truth: FrameTruth, border: str, distance: float | None) -> Shot:
        """The runtime's view of a frame: its content area, area-resized to size x size."""
        box = content_box(self.tube.H, self.tube.W, border)
        img = content_view(frame, box, self.cfg.size)
        return Shot(img, truth, box, _to_saved(self.cfg, self.tube, truth, box), distance)

    def lesion_frame(self, slot: int, n: int) -> Shot:
        """Frame n of the lesion in `slot`."""
        cfg, les = self.cfg, self.placed(slot)
        rng = np.random.default_rng([cfg.seed, _FRAME, self.p.lesions[slot][0], n])
        for _ in range(50):  # draw poses until the lesion is in view (a cheap low-res check first)
            border = _border(cfg, rng)
            dist = log_uniform(rng, cfg.min_distance, cfg.max_distance)
            cam = look_at_wall(rng, les.angle, les.z, dist, self.aspect)
            if self.tube.coverage(cam, [les], border) < cfg.min_coverage:
                continue
            frame, truth = self._shoot(rng, cam, [les], border)
            if truth.coverage >= cfg.min_coverage:  # the probe is coarse: check the frame itself
                break
        else:
            raise RuntimeError(f"no view of lesion {les.lesion.lesion_id} found")  # not seen in practice
        return self._cut(frame, truth, border, dist)

    def no_lesion_frame(self, j: int) -> Shot:
        """No-lesion frame j: along camera segment j // SEGMENT, half looking down the lumen, half
        at the bare wall from the lesion frames' distances (so a close wall view is no cue)."""
        cfg = self.cfg
        seg = np.random.default_rng([cfg.seed, _SEGMENT, self.p.index, j // SEGMENT])
        z0, direction = seg.uniform(0.0, 50.0), seg.choice([-1.0, 1.0])
        rng = np.random.default_rng([cfg.seed, _FRAME, self.p.index, j, 0xB])
        z = z0 + direction * 0.6 * (j % SEGMENT)
        border = _border(cfg, rng)
        if rng.uniform() < 0.5:
            cam = down_the_lumen(rng, z, direction)
        else:
            dist = log_uniform(rng, cfg.min_distance, cfg.max_distance)
            cam = look_at_wall(rng, rng.uniform(-np.pi, np.pi), z, dist, self.aspect)
        frame, truth = self._shoot(rng, cam, [], border)
        return self._cut(frame, truth, border, None)

    def rows(self):
        """Yield (Shot, manifest row as a FRAME_COLUMNS dict) for every frame of this patient."""
        cfg, p, pid = self.cfg, self.p, patient_id(self.cfg, self.p)
        for slot, (index, cls) in enumerate(p.lesions):
            ev = self.placed(slot).evidence
            lid = lesion_id(cfg, index)
            for n in range(cfg.frames_per_lesion):
                shot = self.lesion_frame(slot, n)
                yield shot, _row(p, lid, cls, n, pid, shot, round(ev, 4) if p.modality == "WLI" else "")
        for j in range(p.no_lesion):
            lid = f"{pid}-n{j // SEGMENT:02d}"  # one id per camera segment: frames of a path split together
            shot = self.no_lesion_frame(j)
            yield shot, _row(p, lid, NO_LESION, j % SEGMENT, pid, shot, "")


def _row(p: Patient, lid: str, cls: str, view: int, pid: str, shot: Shot, wli_evidence) -> dict:
    x0, y0, x1, y1 = shot.box or ("", "", "", "")
    return {
        "path": f"{p.modality}/{cls}/{lid}_{view}.png",
        "lesion_id": lid,
        "class": cls,
        "modality": p.modality,
        "view": view,
        "paired": 0,  # unpaired: every lesion (and colon) is rendered in one modality only
        "patient_id": pid,
        "coverage": round(shot.truth.coverage, 5),
        "x0": x0, "y0": y0, "x1": x1, "y1": y1,
        "wli_evidence": wli_evidence,
        "distance": "" if shot.distance is None else round(shot.distance, 3),
        "lesion_contrast": "" if shot.truth.contrast is None else round(shot.truth.contrast, 3),
    }  # fmt: skip


def render_patient(cfg: FrameConfig, patient: Patient) -> list[dict]:
    """Render and write all frames of one patient; returns its manifest rows."""
    rows = []
    for shot, row in PatientRenderer(cfg, patient).rows():
        write_png(Path(cfg.out) / row["path"], shot.image)
        rows.append(row)
    return rows


def validate(cfg: FrameConfig) -> None:
    checks = [
        (cfg.lesions_per_class >= 1, f"--lesions-per-class must be at least 1 (got {cfg.lesions_per_class})"),
        (cfg.frames_per_lesion >= 1, f"--frames-per-lesion must be at least 1 (got {cfg.frames_per_lesion})"),
        (cfg.no_lesion_frames >= 0, f"--no-lesion-frames must be 0 or more (got {cfg.no_lesion_frames})"),
        (
            cfg.lesions_per_patient >= 1,
            f"lesions_per_patient must be at least 1 (got {cfg.lesions_per_patient})",
        ),
        (32 <= cfg.size <= 1024, f"--size must be between 32 and 1024 pixels (got {cfg.size})"),
        (
            16 <= cfg.width <= 1920 and 16 <= cfg.height <= 1080 and not cfg.width % 2 and not cfg.height % 2,
            f"frame size {cfg.width}x{cfg.height}: need even sizes up to 1920x1080",
        ),
        (0.1 <= cfg.render_scale <= 1.0, f"render_scale must be in [0.1, 1] (got {cfg.render_scale})"),
        (0.1 <= cfg.min_distance < cfg.max_distance, "need 0.1 <= min_distance < max_distance"),
        (cfg.workers >= 1, f"--workers must be at least 1 (got {cfg.workers})"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def generate_frames(cfg: FrameConfig, progress: bool = True) -> Path:
    """Write the whole frame dataset; returns the manifest path."""
    from tqdm import tqdm

    validate(cfg)
    root = Path(cfg.out)
    check_writable(root)
    _remove_previous(root)
    patients = plan(cfg)
    total = sum(len(p.lesions) * cfg.frames_per_lesion + p.no_lesion for p in patients)
    bar = tqdm(total=total, disable=not progress, unit="frame", desc="synthetic frames")
    rows = render_all(render_patient, cfg, patients, bar, count=len)
    bar.close()
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, FRAME_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    (root / "synth_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")
    return manifest

"""One frame of the colon tube from a camera pose: the single renderer of procedure videos and
training frames (video.py and frames.py both call `TubeRenderer.render`).

A `TubeRenderer` holds what is fixed for one patient in one modality at one frame size (the
baked wall atlas, buffers, field masks); `render` ray-casts the lumen at `render_scale`, shades
it, applies the camera (motion blur, exposure, sensor noise, lens blur, gamma), upscales to the
frame size, applies the endoscope field and the on-screen text, and returns the ground truth
from the same ray cast (which lesion covers how much of the field, and where).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from . import latent as L
from .config import Difficulty
from .lumen import bake_atlas, tube_maps
from .shade import field_mask, overlay_text, shade
from .surface import N_MAPS

TAN_HALF_FOV = 1.25  # wide-angle endoscope
MID_GREY = 0.42  # the auto-exposure's target mean (linear)
GAMMA = 1.15  # the camera's display gamma
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # Rec. 601 luma weights


@dataclass(frozen=True)
class PlacedLesion:
    lesion: L.Lesion
    angle: float  # position on the tube wall: angle around the axis (radians) ...
    z: float  # ... and depth along it (tube radii)
    evidence: float  # share of its class cue shown in the scene's modality (latent.sample_evidence)


@dataclass
class FrameTruth:
    lesion: PlacedLesion | None  # the lesion covering most of the field; None when none is in it
    coverage: float  # its share of the endoscope field (0 when none)
    box: tuple[int, int, int, int] | None  # its pixels' box in frame pixels, inclusive
    mask: np.ndarray  # (hr, wr) bool: its pixels at render resolution
    contrast: float | None = None  # how much it shows (TubeRenderer.lesion_contrast); None: not measured


def motion_blur(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Linear blur along the image shift (dx, dy) in pixels during the exposure."""
    n = int(min(math.hypot(dx, dy), 25))
    if n < 2:
        return img
    k = np.zeros((n | 1, n | 1), np.float32)
    c = (n | 1) // 2
    ex, ey = dx / math.hypot(dx, dy), dy / math.hypot(dx, dy)
    cv2.line(k, (round(c - ex * c), round(c - ey * c)), (round(c + ex * c), round(c + ey * c)), 1.0)
    return cv2.filter2D(img, -1, k / k.sum())


def osd_text(modality: str, seconds: float) -> list[str]:
    """The video processor's on-screen text, as every synthetic frame shows it."""
    s = int(seconds)
    return ["SYNTHETIC", f"{modality}  {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"]


def content_box(height: int, width: int, border: str) -> tuple[int, int, int, int]:
    """The endoscope field's box (x0, y0, x1, y1 exclusive) in frame pixels, from the known mask:
    what the runtime's content-area detector finds on a frame (tests/test_synth_frames.py)."""
    inside = field_mask(height, width, border)[..., 0] > 0.25  # the soft edge is a few pixels wide
    rows, cols = np.nonzero(inside.any(axis=1))[0], np.nonzero(inside.any(axis=0))[0]
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _lesion_arrays(lesions: list[PlacedLesion]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the ray caster reads: params (K, N_LESION), (angle, z) (K, 2), evidence (K,)."""
    if not lesions:
        return np.zeros((0, L.N_LESION)), np.zeros((0, 2)), np.zeros(0)
    return (
        np.stack([p.lesion.params for p in lesions]),
        np.array([[p.angle, p.z] for p in lesions]),
        np.array([p.evidence for p in lesions], np.float64),
    )


class TubeRenderer:
    """One patient's colon in one modality, rendered at `render_scale` of a width x height frame."""

    def __init__(
        self,
        patient: np.ndarray,
        modality: str,
        width: int,
        height: int,
        render_scale: float,
        difficulty: Difficulty,
    ):
        self.patient, self.modality, self.diff = patient, modality, difficulty
        self.W, self.H = width, height
        self.wr = max(2, int(width * render_scale) // 2 * 2)
        self.hr = max(2, int(height * render_scale) // 2 * 2)
        self.mips = bake_atlas(patient, self.wr)
        self.maps = np.empty((N_MAPS, self.hr, self.wr), np.float32)
        self.ids = np.empty((self.hr, self.wr), np.int32)
        self._bare_maps, self._bare_ids = np.empty_like(self.maps), np.empty_like(self.ids)  # lesion_contrast's
        self._fields: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _field(self, border: str) -> tuple[np.ndarray, np.ndarray]:
        """(field at render size as bool, field with vignetting at frame size as uint8 x3)."""
        if border not in self._fields:
            lo = field_mask(self.hr, self.wr, border)[..., 0] > 0.5
            hi = np.repeat((field_mask(self.H, self.W, border) * 255).astype(np.uint8), 3, axis=2)
            self._fields[border] = (lo, hi)
        return self._fields[border]

    def turn_blur(self, prev_fwd: np.ndarray, cam: np.ndarray, strength: float) -> tuple[float, float]:
        """Image shift (render pixels) from the camera's turn since the last frame."""
        fpx = self.wr / (2 * TAN_HALF_FOV)
        d = cam[1] - prev_fwd
        return -float(d @ cam[2]) * fpx * strength, -float(d @ cam[3]) * fpx * strength

    def coverage(self, cam: np.ndarray, lesions: list[PlacedLesion], border: str, shrink: int = 8) -> float:
        """The largest lesion's share of the field from a ray cast at 1/shrink of the render size:
        a cheap check of a camera pose before rendering it."""
        h, w = max(2, self.hr // shrink), max(2, self.wr // shrink)
        maps, ids = np.empty((N_MAPS, h, w), np.float32), np.empty((h, w), np.int32)
        lp, pos, ev = _lesion_arrays(lesions)
        m = self.mips
        tube_maps(m[0], m[1], m[2], m[3], cam, TAN_HALF_FOV, lp, pos, ev, h, w, maps, ids)
        field = field_mask(h, w, border)[..., 0] > 0.5
        counts = np.bincount(np.where(field, ids, -1).ravel() + 1, minlength=len(lesions) + 1)[1:]
        return float(counts.max() / field.sum()) if len(lesions) else 0.0

    def render(
        self,
        cam: np.ndarray,
        lesions: list[PlacedLesion],
        exposure: Callable[[float], float],
        rng: np.random.Generator,
        *,
        blur_px: tuple[float, float] = (0.0, 0.0),
        specular: float = 1.0,
        border: str = "octagon",
        text: list[str] | None = None,
        modality: str | None = None,
        contrast: bool = False,
    ) -> tuple[np.ndarray, FrameTruth]:
        """One (H, W, 3) uint8 frame and its truth.

        cam (4, 3): position, forward, right, down. `exposure(mean linear luma) -> gain` is the
        auto-exposure (the video's lags; a training frame's is off by a random swing). `rng`
        draws the sensor noise. `specular` scales the difficulty's glare. `modality` overrides
        the renderer's light for this frame (a video's NBI stretch; the wall atlas is shared).
        `contrast`: also measure how much the lesion shows (``truth.contrast``; one more ray cast
        and shading of the frame, so asked for by the callers that record it: video.py, frames.py).
        """
        modality = modality or self.modality
        diff, nbi = self.diff, modality == "NBI"
        truth = self.cast(cam, lesions, border)
        shaded = self._shade(self.maps, modality, specular)
        rgb = motion_blur(shaded, *blur_px)
        gain = exposure(float(rgb[::4, ::4].mean()) + 1e-3)
        if contrast and truth.lesion is not None:
            truth.contrast = self.lesion_contrast(cam, lesions, truth, shaded, gain, modality, specular)
        rgb *= gain  # in place, as ever: the frame stays float32 (gain is a float64)
        if diff.noise > 0:
            rgb += rng.normal(0.0, diff.noise, rgb.shape[:2] + (1,)).astype(np.float32)
        blur = (diff.nbi_blur if nbi else diff.wli_blur) * self.hr / 448
        if blur > 0.3:
            rgb = cv2.GaussianBlur(rgb, (0, 0), blur)
        lo = (np.clip(rgb, 0, 1) ** (1 / GAMMA) * 255 + 0.5).astype(np.uint8)
        size = (self.W, self.H)
        out = cv2.resize(lo, size, interpolation=cv2.INTER_LINEAR) if (self.wr, self.hr) != size else lo
        field_hi = self._field(border)[1]
        out = cv2.multiply(out, field_hi, scale=1 / 255)
        if text:
            overlay_text(out, text)
        return out, truth

    def _shade(self, maps: np.ndarray, modality: str, specular: float) -> np.ndarray:
        nbi = modality == "NBI"
        return shade(
            maps,
            modality,
            self.patient,
            self.diff.nbi_pattern if nbi else self.diff.wli_pattern,
            1.0 if nbi else self.diff.wli_color,
            self.diff.specular * specular,
        )

    def lesion_contrast(
        self,
        cam: np.ndarray,
        lesions: list[PlacedLesion],
        truth: FrameTruth,
        shaded: np.ndarray,
        gain: float,
        modality: str,
        specular: float,
    ) -> float:
        """Mean change of display luma (0-255) over the truth lesion's pixels between the frame as
        shaded and the same pose shaded without that lesion, at the frame's exposure: how much the
        lesion shows, before motion blur, sensor noise, lens blur and the codec. Coverage says how
        big a lesion is in view; this says whether it can be seen at all (a far lesion in the dark
        of the lumen covers pixels it barely changes)."""
        lp, pos, ev = _lesion_arrays([p for p in lesions if p is not truth.lesion])
        m = self.mips
        tube_maps(
            m[0], m[1], m[2], m[3], cam, TAN_HALF_FOV, lp, pos, ev, self.hr, self.wr, self._bare_maps, self._bare_ids
        )
        bare = self._shade(self._bare_maps, modality, specular)

        def display_luma(rgb: np.ndarray) -> np.ndarray:
            return (np.clip(rgb[truth.mask] * gain, 0, 1) ** (1 / GAMMA) * 255) @ LUMA

        return float(np.abs(display_luma(shaded) - display_luma(bare)).mean())

    def cast(self, cam: np.ndarray, lesions: list[PlacedLesion], border: str = "octagon") -> FrameTruth:
        """Ray-cast the frame (fills the physical maps `render` shades) and return its truth alone:
        what a truth-only pass (video.iter_procedure_frames(truth_only=True)) needs."""
        lp, pos, ev = _lesion_arrays(lesions)
        m = self.mips
        tube_maps(
            m[0], m[1], m[2], m[3], cam, TAN_HALF_FOV, lp, pos, ev, self.hr, self.wr, self.maps, self.ids
        )
        return self._truth(lesions, self._field(border)[0])

    def _truth(self, lesions: list[PlacedLesion], field_lo: np.ndarray) -> FrameTruth:
        valid = np.where(field_lo, self.ids, -1)
        counts = np.bincount(valid.ravel() + 1, minlength=len(lesions) + 1)[1:]
        if not len(lesions) or counts.max() == 0:
            return FrameTruth(None, 0.0, None, np.zeros_like(field_lo))
        best = int(np.argmax(counts))
        mask = valid == best
        rows, cols = np.nonzero(mask)
        sx, sy = self.W / self.wr, self.H / self.hr
        box = (
            int(cols.min() * sx),
            int(rows.min() * sy),
            min(self.W - 1, math.ceil((cols.max() + 1) * sx) - 1),
            min(self.H - 1, math.ceil((rows.max() + 1) * sy) - 1),
        )
        return FrameTruth(lesions[best], float(counts[best] / field_lo.sum()), box, mask)

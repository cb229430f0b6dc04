"""Physical maps -> WLI or NBI colour, then the camera: blur, exposure, noise, field border, text.

NBI shows pits and capillaries with high contrast (white pits, brown vessels, cyan deep
vessels); WLI shows the *same* maps with `wli_pattern` of that contrast, a weaker colour
cue, more blur and more specular glare: the cue is there, only faint.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np
from numba import njit, prange

from . import latent as L
from .noise import smoothstep
from .surface import M_BROWN, M_DEEP, M_GLOSS, M_HEIGHT, M_LIGHT, M_PIT, M_RED, M_TEX, M_UPP, M_VESSEL

#                       deep vessel          pit                  superficial vessel   lesion tint
_WLI = np.array([[0.55, 0.17, 0.22], [0.97, 0.82, 0.76], [0.52, 0.13, 0.13], [0.62, 0.34, 0.25]])
_NBI = np.array([[0.12, 0.40, 0.50], [0.90, 0.92, 0.86], [0.33, 0.17, 0.09], [0.52, 0.36, 0.22]])
_WEIGHTS = {"WLI": (0.45, 0.45, 0.75, 0.5), "NBI": (0.6, 0.7, 0.9, 0.65)}


@njit(cache=True, parallel=True)
def _shade(maps, base, pal, weights, pattern, cue, spec_amt, wet_seed, out):
    h, w = maps.shape[1], maps.shape[2]
    for i in prange(h):
        i0, i1 = max(i - 1, 0), min(i + 1, h - 1)
        py = (i + 0.5) / h * 2.0 - 1.0
        for j in range(w):
            j0, j1 = max(j - 1, 0), min(j + 1, w - 1)
            px = (j + 0.5) / w * 2.0 - 1.0
            upp = maps[M_UPP, i, j] * 2.0
            sx = (maps[M_HEIGHT, i, j1] - maps[M_HEIGHT, i, j0]) / upp
            sy = (maps[M_HEIGHT, i1, j] - maps[M_HEIGHT, i0, j]) / upp
            nz = 1.0 / math.sqrt(1.0 + sx * sx + sy * sy)
            lx, ly, lz = -0.45 * px, -0.45 * py, 1.0  # coaxial light and eye at the tip
            ln = 1.0 / math.sqrt(lx * lx + ly * ly + 1.0)
            ndl = (-sx * lx - sy * ly + lz) * nz * ln
            tex = maps[M_TEX, i, j]
            for c in range(3):
                col = base[c] * (0.88 + 0.24 * tex)
                col += (pal[0, c] * col / base[c] - col) * weights[0] * maps[M_DEEP, i, j]
                col += (pal[3, c] - col) * weights[3] * cue * maps[M_BROWN, i, j]
                col *= 1.0 + cue * maps[M_RED, i, j] * (0.10 if c == 0 else -0.14)
                col += (pal[1, c] - col) * weights[1] * pattern * maps[M_PIT, i, j]
                col += (pal[2, c] - col) * weights[2] * pattern * maps[M_VESSEL, i, j]
                out[i, j, c] = col * (0.35 + 0.65 * max(ndl, 0.0)) * maps[M_LIGHT, i, j]
            wet = smoothstep(0.45, 0.8, maps[M_TEX, i, j]) * wet_seed
            glint = spec_amt * wet * smoothstep(0.965, 0.995, ndl) * maps[M_LIGHT, i, j] * maps[M_GLOSS, i, j]
            for c in range(3):
                out[i, j, c] += glint


def shade(
    maps: np.ndarray, modality: str, patient: np.ndarray, pattern: float, cue: float, specular: float
) -> np.ndarray:
    """(N_MAPS, H, W) float32 -> (H, W, 3) float32 linear RGB in about [0, 1]."""
    nbi = modality == "NBI"
    base = patient[L.B_NBI_R : L.B_NBI_B + 1] if nbi else patient[L.B_WLI_R : L.B_WLI_B + 1]
    out = np.empty(maps.shape[1:] + (3,), np.float32)
    _shade(
        maps,
        base,
        _NBI if nbi else _WLI,
        np.array(_WEIGHTS[modality]),
        pattern,
        cue,
        specular * (0.8 if nbi else 1.2),
        patient[L.B_WET],
        out,
    )
    return out


@lru_cache(maxsize=16)
def field_mask(h: int, w: int, kind: str) -> np.ndarray:
    """Endoscope field of view (1 inside, 0 in the black border) with vignetting, (H, W, 1)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    r = min(h, w) / 2
    dx, dy = np.abs(xx - cx), np.abs(yy - cy)
    vign = 1.0 - 0.45 * np.clip(np.hypot(dx, dy) / (0.5 * np.hypot(h, w)), 0, 1) ** 2
    if kind == "round":
        inside = np.hypot(dx / (r * 1.12), dy / (r * 1.12)) <= 1.0
    elif kind == "octagon":
        inside = (dx <= w / 2 * 0.97) & (dy <= h / 2 * 0.97) & (dx + dy <= (w + h) / 2 * 0.72)
    else:
        inside = np.ones((h, w), bool)
    soft = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), max(0.6, min(h, w) / 300))
    return (soft * vign)[..., None]


def camera(
    rgb: np.ndarray, rng: np.random.Generator, blur: float, noise: float, gain: float, border: str
) -> np.ndarray:
    """Lens blur, exposure, sensor noise, border and 8-bit quantisation (sRGB-like gamma)."""
    if blur > 0.25:
        rgb = cv2.GaussianBlur(rgb, (0, 0), blur)
    rgb = rgb * gain
    if noise > 0:
        rgb = (
            rgb
            + rng.normal(0.0, noise, rgb.shape[:2] + (1,)).astype(np.float32)
            + rng.normal(0.0, noise * 0.5, rgb.shape).astype(np.float32)
        )
    rgb = np.clip(rgb, 0, 1) ** (1 / 1.15) * field_mask(rgb.shape[0], rgb.shape[1], border)
    return (rgb * 255 + 0.5).astype(np.uint8)


def overlay_text(img: np.ndarray, lines: list[str]) -> None:
    """White monospace text in the top-left of the black border, as video processors print."""
    h = img.shape[0]
    scale = max(h / 900, 0.25)
    for k, line in enumerate(lines):
        y = int((k + 1) * 28 * scale * 1.3) + 2
        cv2.putText(
            img,
            line,
            (int(6 * scale) + 2, y),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (235, 235, 235),
            max(1, int(2 * scale)),
            cv2.LINE_AA,
        )

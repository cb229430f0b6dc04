"""Still views of one lesion: a camera looking at the (locally flat) mucosa around it."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import latent as L
from .config import Difficulty
from .shade import camera, overlay_text, shade
from .surface import (
    M_BROWN,
    M_DEEP,
    M_GLOSS,
    M_HEIGHT,
    M_LIGHT,
    M_MASK,
    M_PIT,
    M_RED,
    M_TEX,
    M_UPP,
    M_VESSEL,
    N_MAPS,
    lesion_pattern,
    lesion_shape,
    mucosa,
    normal_pattern,
)


@njit(cache=True, parallel=True)
def plane_maps(Hm, n, lp, bp, light_gx, light_gy):
    """Per-pixel physical maps for a view: pixel -> plane point via the homography `Hm`."""
    out = np.empty((N_MAPS, n, n), np.float32)
    bseed = int(bp[L.B_SEED])
    for i in prange(n):
        py = (i + 0.5) / n * 2.0 - 1.0
        for j in range(n):
            px = (j + 0.5) / n * 2.0 - 1.0
            w = Hm[2, 0] * px + Hm[2, 1] * py + Hm[2, 2]
            x = (Hm[0, 0] * px + Hm[0, 1] * py + Hm[0, 2]) / w
            y = (Hm[1, 0] * px + Hm[1, 1] * py + Hm[1, 2]) / w
            hb, tex, deep = mucosa(x, y, 0.37, bp)
            mask, hl = lesion_shape(x, y, lp)
            pit, ves = 0.0, 0.0
            if mask < 0.999:
                pit, ves = normal_pattern(x, y, bseed)
            if mask > 0.001:
                lpit, lves = lesion_pattern(x, y, lp)
                pit += mask * (lpit - pit)
                ves += mask * (lves - ves)
            out[M_HEIGHT, i, j] = hb + hl
            out[M_TEX, i, j] = tex
            out[M_DEEP, i, j] = deep * (1.0 - mask)
            out[M_PIT, i, j] = pit
            out[M_VESSEL, i, j] = ves
            out[M_MASK, i, j] = mask
            out[M_BROWN, i, j] = lp[L.BROWN] * mask
            out[M_RED, i, j] = lp[L.RED] * mask
            # nearer surface (w < 1) is brighter; a side light adds a slow gradient
            out[M_LIGHT, i, j] = min(1.0 / (w * w), 1.6) * (1.0 + light_gx * px + light_gy * py)
            out[M_GLOSS, i, j] = 1.0
            out[M_UPP, i, j] = abs(Hm[0, 0]) / w * 2.0 / n + abs(Hm[1, 0]) / w * 2.0 / n
    return out


def render_view(
    lesion_: L.Lesion,
    modality: str,
    rng: np.random.Generator,
    size: int,
    diff: Difficulty,
    border: str = "round",
    text: list[str] | None = None,
) -> np.ndarray:
    """One (size, size, 3) uint8 view of `lesion_` in `modality`; `rng` draws the viewpoint."""
    Hm = L.sample_view(rng, diff, float(lesion_.params[L.RADIUS]))
    lgx, lgy = rng.uniform(-0.25, 0.25, 2)
    maps = plane_maps(Hm, size, lesion_.params, lesion_.patient, lgx, lgy)
    nbi = modality == "NBI"
    seen = L.sample_evidence(rng, modality)  # how much of the class cue this view shows
    rgb = shade(
        maps,
        modality,
        lesion_.patient,
        seen * (diff.nbi_pattern if nbi else diff.wli_pattern),
        seen * (1.0 if nbi else diff.wli_color),
        diff.specular * rng.uniform(0.4, 1.2),
    )
    sigma = (diff.nbi_blur if nbi else diff.wli_blur) * rng.uniform(0.6, 1.5) * size / 448
    img = camera(rgb, rng, sigma, diff.noise, rng.uniform(0.85, 1.15), border)
    if text:
        overlay_text(img, text)
    return img

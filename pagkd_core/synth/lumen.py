"""The colon as a tube: a pre-baked wall texture (reused every frame) and a per-pixel ray caster.

The wall's mucosa is baked once into a seamless atlas over (angle, z) with a few mip
levels, so a frame only costs a ray-cylinder hit and a texture lookup per pixel; the
lesions themselves (a small part of the frame) are evaluated analytically.
Units: tube radius 1; lesion units = tube units * LESION_SCALE.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from numba import njit, prange

from . import latent as L
from .noise import smoothstep
from .surface import (
    M_BROWN,
    M_DEEP,
    M_GLOSS,
    M_HEIGHT,
    M_LIGHT,
    M_MASK,
    M_PIT,
    M_RED,
    M_UPP,
    M_VESSEL,
    NORMAL_SPACING,
    lesion_pattern,
    lesion_shape,
    mucosa,
    normal_pattern,
)

LESION_SCALE = 4.0
Z_PERIOD = 4.8  # atlas repeats along the tube (3 haustral folds)
FOLD_PERIOD = 1.6
N_MIPS = 4
_SEAM = 0.3  # cross-fade band (tube units) that hides the atlas' z seam


@njit(cache=True, parallel=True)
def _bake(bp, out):
    """out (5, n_z, n_angle): height, texture, deep vessels, pits, capillaries."""
    N_Z, N_ANGLE = out.shape[1], out.shape[2]
    bseed = int(bp[L.B_SEED])
    circ = 2.0 * math.pi * LESION_SCALE
    pu = int(round(circ / NORMAL_SPACING))  # noqa: RUF046 (numba)
    pv = int(round(Z_PERIOD * LESION_SCALE / NORMAL_SPACING))  # noqa: RUF046 (numba)
    su = pu * NORMAL_SPACING / circ  # snap so the pit lattice tiles exactly
    sv = pv * NORMAL_SPACING / (Z_PERIOD * LESION_SCALE)
    for j in prange(N_Z):
        z = (j + 0.5) / N_Z * Z_PERIOD
        for i in range(N_ANGLE):
            a = (i + 0.5) / N_ANGLE * 2.0 * math.pi
            x, y = math.cos(a) * LESION_SCALE, math.sin(a) * LESION_SCALE
            h, tex, deep = mucosa(x, y, z * LESION_SCALE, bp)
            if z > Z_PERIOD - _SEAM:  # blend into the copy one period back
                w = smoothstep(Z_PERIOD - _SEAM, Z_PERIOD, z)
                h2, t2, d2 = mucosa(x, y, (z - Z_PERIOD) * LESION_SCALE, bp)
                h, tex, deep = h + w * (h2 - h), tex + w * (t2 - tex), deep + w * (d2 - deep)
            pit, ves = normal_pattern(a * LESION_SCALE * su, z * LESION_SCALE * sv, bseed, pu, pv)
            fz = 0.5 + 0.5 * math.cos(2.0 * math.pi * z / FOLD_PERIOD)  # haustral fold ridge
            fold = 0.15 * fz**6 * (0.6 + 0.4 * math.cos(3.0 * a + 1.7 * math.sin(z)))
            out[0, j, i] = h / LESION_SCALE + fold
            out[1, j, i] = tex
            out[2, j, i] = deep
            out[3, j, i] = pit
            out[4, j, i] = ves


def bake_atlas(patient: np.ndarray, render_width: int) -> list[np.ndarray]:
    """Mip pyramid of the wall texture for one patient: list of (h, w, 5) float32 (channels last).

    Texel density follows the render width (about 3 texels per pixel across the tube near the
    lens), so small test videos bake a small atlas."""
    n_angle = int(min(max(2 ** math.ceil(math.log2(3.2 * render_width)), 256), 4096))
    base = np.empty((5, int(n_angle * Z_PERIOD / (2 * math.pi)), n_angle), np.float32)
    _bake(patient, base)
    mips = [np.ascontiguousarray(base.transpose(1, 2, 0))]
    for _ in range(N_MIPS - 1):
        prev = mips[-1]
        mips.append(
            np.ascontiguousarray(
                np.stack(
                    [
                        cv2.resize(
                            prev[..., k],
                            (prev.shape[1] // 2, prev.shape[0] // 2),
                            interpolation=cv2.INTER_AREA,
                        )
                        for k in range(5)
                    ],
                    axis=2,
                )
            )
        )
    return mips


@njit(cache=True, inline="always")
def _fetch(tex, u, v, wt, out, r, c):
    """Add wt * bilinear, wrapping lookup of all 5 channels of `tex` (h, w, 5) at texel (u, v)."""
    h, w = tex.shape[0], tex.shape[1]
    fu, fv = math.floor(u), math.floor(v)
    tu, tv = u - fu, v - fv
    i0, j0 = int(fu) % w, int(fv) % h
    i1, j1 = i0 + 1 if i0 + 1 < w else 0, j0 + 1 if j0 + 1 < h else 0
    w00, w01, w10, w11 = (1 - tu) * (1 - tv) * wt, tu * (1 - tv) * wt, (1 - tu) * tv * wt, tu * tv * wt
    for k in range(5):
        out[k, r, c] += (
            tex[j0, i0, k] * w00 + tex[j0, i1, k] * w01 + tex[j1, i0, k] * w10 + tex[j1, i1, k] * w11
        )


@njit(cache=True, parallel=True)
def tube_maps(m0, m1, m2, m3, cam, tan_h, lesions, lesion_pos, evidence, h, w, out, ids):
    """Ray-cast every pixel to the tube wall; fill the physical maps and the lesion id map.

    cam: (4, 3) rows position, forward, right, up. lesions (K, N_LESION); lesion_pos (K, 2) = (angle, z).
    evidence (K,): the share of each lesion's class cue (own pit/vessel pattern, tint) shown, 0..1;
    the rest of the pattern stays normal mucosa, so a lesion without evidence is a plain dome.
    """
    N_Z, N_ANGLE = m0.shape[0], m0.shape[1]
    tan_v = tan_h * h / w
    px_angle = 2.0 * tan_h / w
    for r in prange(h):
        py = (r + 0.5) / h * 2.0 - 1.0
        for c in range(w):
            px = (c + 0.5) / w * 2.0 - 1.0
            dx = cam[1, 0] + px * tan_h * cam[2, 0] + py * tan_v * cam[3, 0]
            dy = cam[1, 1] + px * tan_h * cam[2, 1] + py * tan_v * cam[3, 1]
            dz = cam[1, 2] + px * tan_h * cam[2, 2] + py * tan_v * cam[3, 2]
            dn = math.sqrt(dx * dx + dy * dy + dz * dz)
            dx, dy, dz = dx / dn, dy / dn, dz / dn
            ox, oy, oz = cam[0, 0], cam[0, 1], cam[0, 2]
            qa = dx * dx + dy * dy
            qb = 2.0 * (ox * dx + oy * dy)
            qc = ox * ox + oy * oy - 1.0
            t = 40.0
            if qa > 1e-9:
                t = min((-qb + math.sqrt(qb * qb - 4.0 * qa * qc)) / (2.0 * qa), 40.0)
            hx, hy, hz = ox + t * dx, oy + t * dy, oz + t * dz
            ang = math.atan2(hy, hx)
            cosi = max(abs(dx * hx + dy * hy) / math.sqrt(hx * hx + hy * hy + 1e-12), 0.05)
            foot = t * px_angle / math.sqrt(cosi)  # tube units per pixel on the wall
            u = (ang / (2.0 * math.pi)) % 1.0 * N_ANGLE
            v = (hz / Z_PERIOD) % 1.0 * N_Z
            lod = min(max(math.log2(max(foot * N_ANGLE / (2.0 * math.pi), 1e-6)), 0.0), N_MIPS - 1.001)
            lo = int(lod)
            fr = lod - lo
            for k in range(5):
                out[k, r, c] = 0.0
            s = 0.5**lo
            if lo == 0:
                _fetch(m0, u - 0.5, v - 0.5, 1.0 - fr, out, r, c)
                _fetch(m1, u * 0.5 - 0.5, v * 0.5 - 0.5, fr, out, r, c)
            elif lo == 1:
                _fetch(m1, u * s - 0.5, v * s - 0.5, 1.0 - fr, out, r, c)
                _fetch(m2, u * s * 0.5 - 0.5, v * s * 0.5 - 0.5, fr, out, r, c)
            else:
                _fetch(m2 if lo == 2 else m3, u * s - 0.5, v * s - 0.5, 1.0 - fr, out, r, c)
                _fetch(m3, u * 0.125 - 0.5, v * 0.125 - 0.5, fr, out, r, c)
            out[M_MASK, r, c] = 0.0
            out[M_BROWN, r, c] = 0.0
            out[M_RED, r, c] = 0.0
            ids[r, c] = -1
            for k in range(lesions.shape[0]):
                da = (ang - lesion_pos[k, 0] + math.pi) % (2.0 * math.pi) - math.pi
                lu = da * LESION_SCALE
                lv = (hz - lesion_pos[k, 1]) * LESION_SCALE
                reach = lesions[k, L.RADIUS] * lesions[k, L.ELONG] * 1.5
                if abs(lu) > reach or abs(lv) > reach:
                    continue
                mask, hl = lesion_shape(lu, lv, lesions[k])
                if mask <= 0.001:
                    continue
                out[M_HEIGHT, r, c] += hl / LESION_SCALE
                ev = evidence[k]
                wp = ev * mask * smoothstep(0.09, 0.045, foot * LESION_SCALE)  # fade in once resolvable
                if wp > 0.0:
                    lpit, lves = lesion_pattern(lu, lv, lesions[k])
                    out[M_PIT, r, c] += wp * (lpit - out[M_PIT, r, c])
                    out[M_VESSEL, r, c] += wp * (lves - out[M_VESSEL, r, c])
                out[M_DEEP, r, c] *= 1.0 - mask
                out[M_MASK, r, c] = mask
                out[M_BROWN, r, c] = lesions[k, L.BROWN] * mask * ev
                out[M_RED, r, c] = lesions[k, L.RED] * mask * ev
                if mask > 0.5:
                    ids[r, c] = k
            out[M_LIGHT, r, c] = min(1.7 * math.sqrt(cosi) / (0.25 + t * t), 2.0)
            out[M_UPP, r, c] = foot
            out[M_GLOSS, r, c] = 0.6 * smoothstep(0.6, 0.95, cosi)  # glare needs a wall facing the tip

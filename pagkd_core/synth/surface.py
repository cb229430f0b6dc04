"""What the mucosa and a lesion look like at a surface point, before any camera or modality.

Both renderers (still views: a plane; video: a cylinder) call these per pixel and then
`shade.py` turns the same physical maps into WLI or NBI colours -- so the two modalities
show the same structures, only with different contrast.
"""

from __future__ import annotations

import math

from numba import njit

from . import latent as L
from .noise import fbm2, fbm3, ridge3, smoothstep, value2, value3, worley2

# physical map channels written by the renderers and read by the shader
(M_HEIGHT, M_TEX, M_DEEP, M_PIT, M_VESSEL, M_MASK, M_BROWN, M_RED, M_LIGHT, M_UPP, M_GLOSS) = range(11)
N_MAPS = 11


@njit(cache=True)
def mucosa(x, y, z, bp):
    """Background at a 3-D surface point (lesion units): (height, texture, deep vessels)."""
    seed = int(bp[L.B_SEED])
    s = bp[L.B_TEX]
    tex = fbm3(x * s, y * s, z * s, seed, 3)
    vs = 1.2 * bp[L.B_VESSEL_SCALE]
    patch = smoothstep(0.35, 0.65, value3(x * 0.6, y * 0.6, z * 0.6, seed + 13))
    deep = bp[L.B_VESSEL] * patch * ridge3(x * vs, y * vs, z * vs, seed + 11, 0.03)
    ca, sa = math.cos(bp[L.B_FOLD_ANGLE]), math.sin(bp[L.B_FOLD_ANGLE])
    phase = (x * ca + y * sa) * bp[L.B_FOLD_FREQ] * 0.5 + 0.6 * value3(x * 0.4, y * 0.4, z * 0.4, seed + 17)
    fold = bp[L.B_FOLD_AMP] * 0.35 * (0.5 + 0.5 * math.sin(phase * 2.0 * math.pi)) ** 3
    return fold + 0.015 * tex, tex, deep


@njit(cache=True)
def _pattern(
    u,
    v,
    seed,
    spacing,
    pit_r,
    stretch,
    theta,
    warp,
    jitter,
    presence,
    net_w,
    net_s,
    net_cont,
    lacy,
    pit_b,
    period_u=0,
    period_v=0,
):
    """Surface pattern in lesion coordinates -> (pit whiteness, superficial vessel density)."""
    wu, wv = u, v
    if warp > 0.0:
        wu += warp * (2.0 * fbm2(u * 2.0, v * 2.0, seed + 21, 2) - 1.0)
        wv += warp * (2.0 * fbm2(u * 2.0 + 5.2, v * 2.0 + 1.3, seed + 22, 2) - 1.0)
    c, s = math.cos(theta), math.sin(theta)
    a = (wu * c + wv * s) / (stretch * spacing)  # stretched cells -> tubular / oval pits
    b = (-wu * s + wv * c) / spacing
    f1, f2, cell = worley2(a, b, seed, jitter, period_u, period_v)
    pit = pit_b * smoothstep(pit_r + 0.07, pit_r - 0.07, f1) if cell < presence else 0.0
    net = 0.0
    if f2 - f1 < net_w:
        cont = (
            1.0
            if net_cont >= 1.0
            else smoothstep(0.9 - net_cont, 1.05 - net_cont, value2(u * 4.0, v * 4.0, seed + 5))
        )
        net = net_s * cont * smoothstep(net_w, 0.3 * net_w, f2 - f1)
    if lacy > 0.0:
        lace = lacy * smoothstep(0.45, 0.7, value2(u * 1.5, v * 1.5, seed + 9))
        if lace > 0.0:
            net = max(net, lace * ridge3(u * 1.3, v * 1.3, 0.5, seed + 7, 0.025))
    return pit, net


NORMAL_SPACING = 0.09


@njit(cache=True)
def normal_pattern(u, v, seed, period_u=0, period_v=0):
    """Normal mucosa: small regular round pits, faint fine capillaries (periods: in cells)."""
    return _pattern(
        u,
        v,
        seed + 31,
        NORMAL_SPACING,
        0.18,
        1.0,
        0.0,
        0.0,
        0.25,
        1.0,
        0.04,
        0.15,
        1.0,
        0.0,
        0.3,
        period_u,
        period_v,
    )


@njit(cache=True)
def lesion_shape(u, v, lp):
    """Lesion outline and dome at local coords (u, v) (centre 0) -> (mask, height)."""
    c, s = math.cos(lp[L.ORIENT]), math.sin(lp[L.ORIENT])
    ru = (u * c + v * s) / lp[L.ELONG]
    rv = -u * s + v * c
    r = math.sqrt(ru * ru + rv * rv)
    ang = math.atan2(rv, ru)
    edge = lp[L.RADIUS] * (
        1.0
        + lp[L.H2A] * math.cos(2 * ang + lp[L.H2P])
        + lp[L.H3A] * math.cos(3 * ang + lp[L.H3P])
        + lp[L.H5A] * math.cos(5 * ang + lp[L.H5P])
    )
    mask = smoothstep(edge * 1.06, edge * 0.94, r)
    q = min(r / edge, 1.0)
    return mask, lp[L.HEIGHT] * (1.0 - q * q) ** 2 * mask


@njit(cache=True)
def lesion_pattern(u, v, lp):
    """The lesion's own surface pattern (class evidence) -> (pit whiteness, vessel density)."""
    return _pattern(
        u,
        v,
        int(lp[L.SEED]),
        lp[L.SPACING],
        lp[L.PIT_R],
        lp[L.STRETCH],
        lp[L.THETA],
        lp[L.WARP],
        lp[L.JITTER],
        lp[L.PRESENCE],
        lp[L.NET_W],
        lp[L.NET_S],
        lp[L.NET_CONT],
        lp[L.LACY],
        lp[L.PIT_B],
    )

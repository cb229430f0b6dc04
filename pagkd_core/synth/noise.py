"""Hash-based procedural noise (numba): resolution-free, so one latent renders alike at any size.

Everything is a pure function of (coordinates, seed): no global RNG, no tables, hence
byte-identical output for a seed whatever the image size, view order or process count.
"""

from __future__ import annotations

import math

from numba import njit

_M32 = 0xFFFFFFFF


@njit(cache=True, inline="always")
def hash3(ix, iy, iz, seed):
    """Integer lattice point -> float in [0, 1). Constants < 2**31 keep int64 products exact."""
    h = ((ix & _M32) * 374761393 & _M32) + ((iy & _M32) * 668265263 & _M32)
    h = (h + ((iz & _M32) * 1440662683 & _M32) + ((seed & _M32) * 1597334677 & _M32)) & _M32
    h = ((h ^ (h >> 13)) * 1274126177) & _M32
    h = ((h ^ (h >> 16)) * 1911520717) & _M32
    h = h ^ (h >> 15)
    return h / 4294967296.0


@njit(cache=True, inline="always")
def _smooth(t):
    return t * t * (3.0 - 2.0 * t)


@njit(cache=True)
def value3(x, y, z, seed):
    """Trilinear value noise in [0, 1); 3-D so that cylinder walls (video) have no seam."""
    fx, fy, fz = math.floor(x), math.floor(y), math.floor(z)
    ix, iy, iz = int(fx), int(fy), int(fz)
    tx, ty, tz = _smooth(x - fx), _smooth(y - fy), _smooth(z - fz)
    c000 = hash3(ix, iy, iz, seed)
    c100 = hash3(ix + 1, iy, iz, seed)
    c010 = hash3(ix, iy + 1, iz, seed)
    c110 = hash3(ix + 1, iy + 1, iz, seed)
    c001 = hash3(ix, iy, iz + 1, seed)
    c101 = hash3(ix + 1, iy, iz + 1, seed)
    c011 = hash3(ix, iy + 1, iz + 1, seed)
    c111 = hash3(ix + 1, iy + 1, iz + 1, seed)
    a = c000 + (c100 - c000) * tx
    b = c010 + (c110 - c010) * tx
    c = c001 + (c101 - c001) * tx
    d = c011 + (c111 - c011) * tx
    e = a + (b - a) * ty
    f = c + (d - c) * ty
    return e + (f - e) * tz


@njit(cache=True)
def value2(x, y, seed):
    """Bilinear value noise in [0, 1) (lesion-local patterns are planar: 4 lookups, not 8)."""
    fx, fy = math.floor(x), math.floor(y)
    ix, iy = int(fx), int(fy)
    tx, ty = _smooth(x - fx), _smooth(y - fy)
    a = hash3(ix, iy, 0, seed)
    b = hash3(ix + 1, iy, 0, seed)
    c = hash3(ix, iy + 1, 0, seed)
    d = hash3(ix + 1, iy + 1, 0, seed)
    e = a + (b - a) * tx
    f = c + (d - c) * tx
    return e + (f - e) * ty


@njit(cache=True)
def fbm3(x, y, z, seed, octaves):
    """Fractal sum of value noise, normalised to about [0, 1)."""
    total, amp, norm = 0.0, 1.0, 0.0
    for o in range(octaves):
        total += amp * value3(x, y, z, seed + 101 * o)
        norm += amp
        amp *= 0.5
        x, y, z = x * 2.03, y * 2.03, z * 2.03
    return total / norm


@njit(cache=True)
def fbm2(x, y, seed, octaves):
    total, amp, norm = 0.0, 1.0, 0.0
    for o in range(octaves):
        total += amp * value2(x, y, seed + 101 * o)
        norm += amp
        amp *= 0.5
        x, y = x * 2.03, y * 2.03
    return total / norm


@njit(cache=True)
def ridge3(x, y, z, seed, width):
    """Thin bright lines where the noise crosses 0.5: a cheap random vessel-like network."""
    d = abs(value3(x, y, z, seed) - 0.5) / width
    return 1.0 - d if d < 1.0 else 0.0


@njit(cache=True)
def worley2(u, v, seed, jitter, period_u=0, period_v=0):
    """Cellular noise: (F1, F2, id of the nearest cell). Cells hold one jittered point each.

    Pits are F1 < r (round or, in stretched coordinates, tubular); the capillary network
    around them is F2 - F1 < w (the cell borders) -- the NICE type 2 picture.
    `period_*` > 0 wraps the cell lattice, so a pattern can tile a cylinder without a seam.
    """
    fu, fv = math.floor(u), math.floor(v)
    iu, iv = int(fu), int(fv)
    f1, f2 = 9.0, 9.0
    best = 0.0
    for dj in range(-1, 2):
        for di in range(-1, 2):
            cu, cv = iu + di, iv + dj
            hu = hash3(cu % period_u if period_u > 0 else cu, cv % period_v if period_v > 0 else cv, 1, seed)
            hv = (hu * 7919.0) % 1.0  # two more numbers from one hash: cheap
            pu = cu + 0.5 + jitter * (hu - 0.5)
            pv = cv + 0.5 + jitter * (hv - 0.5)
            d = math.sqrt((u - pu) ** 2 + (v - pv) ** 2)
            if d < f1:
                f2 = f1
                f1 = d
                best = (hu * 104729.0) % 1.0
            elif d < f2:
                f2 = d
    return f1, f2, best


@njit(cache=True, inline="always")
def smoothstep(e0, e1, x):
    t = (x - e0) / (e1 - e0)
    t = 0.0 if t < 0.0 else (min(t, 1.0))
    return t * t * (3.0 - 2.0 * t)

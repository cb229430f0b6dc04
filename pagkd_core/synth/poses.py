"""Camera poses for training frames: where an endoscope tip can be, and what it looks at.

A training frame is a pose the procedure videos could show, drawn directly instead of
waiting for the video's camera path to get there: looking at a wall point (a lesion, or bare
mucosa) from any distance and angle, the point anywhere in the field or partly out of it;
or looking down the lumen. Units are tube radii (the tube has radius 1, axis z).
"""

from __future__ import annotations

import math

import numpy as np

from .procedure import camera_basis, unit
from .scene import TAN_HALF_FOV

MAX_RADIAL = 0.8  # the tip stays this far from the axis at most (it is inside the colon)


def look_at_wall(
    rng: np.random.Generator,
    angle: float,
    z: float,
    distance: float,
    aspect: float,
    out_of_view: float = 0.2,
) -> np.ndarray:
    """cam (4, 3) looking at wall point (angle, z) from `distance`.

    The viewing direction is tilted from the wall normal by any feasible angle (face-on close
    views, grazing far views along the tube); the point lands anywhere in the field, and with
    chance `out_of_view` near or past its edge (lesions partly out of view). `aspect`: h / w."""
    ca, sa = math.cos(angle), math.sin(angle)
    target = np.array([ca, sa, z])
    inward, along, around = np.array([-ca, -sa, 0.0]), np.array([0.0, 0.0, 1.0]), np.array([-sa, ca, 0.0])
    for _ in range(40):
        tilt, azim = rng.uniform(0.0, 1.45), rng.uniform(0.0, 2 * math.pi)
        v = math.cos(tilt) * inward + math.sin(tilt) * (math.cos(azim) * along + math.sin(azim) * around)
        pos = target + distance * v
        if math.hypot(pos[0], pos[1]) <= MAX_RADIAL:
            break
    else:  # far: only a grazing view along the tube fits; keep the tip 0.2..1.8 from the wall
        cos_t = min(1.0, rng.uniform(0.2, min(1.8, distance)) / distance)
        v = cos_t * inward + math.sqrt(1 - cos_t**2) * along * rng.choice([-1.0, 1.0])
        pos = target + distance * v
    fwd0 = unit(target - pos)
    roll = rng.uniform(0, 2 * math.pi)
    lim = 1.15 if rng.uniform() < out_of_view else 0.75
    ox, oy = rng.uniform(-lim, lim, 2)
    base = camera_basis(pos, fwd0, roll)
    # turn away from the target so that it appears at (ox, oy) of the half field
    fwd = unit(fwd0 - ox * TAN_HALF_FOV * base[2] - oy * TAN_HALF_FOV * aspect * base[3])
    return camera_basis(pos, fwd, roll)


def down_the_lumen(rng: np.random.Generator, z: float, direction: float) -> np.ndarray:
    """cam (4, 3) in the lumen at depth z, looking roughly along the tube (direction +1 or -1)."""
    r, a = rng.uniform(0.0, 0.5), rng.uniform(-math.pi, math.pi)
    pos = np.array([r * math.cos(a), r * math.sin(a), z])
    fwd = unit(np.array([rng.normal(0, 0.35), rng.normal(0, 0.35), direction]))
    return camera_basis(pos, fwd, rng.uniform(0, 2 * math.pi))


def log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))

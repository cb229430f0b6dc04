"""A procedure's camera: drifting through the colon, slowing and turning toward each lesion.

`Procedure.step(t, dt)` gives the camera pose per frame; lesions are placed along the tube
ahead of it as it goes. Rendering a pose is scene.py's job.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from . import latent as L
from .config import MODALITIES, VideoConfig
from .noise import smoothstep
from .scene import PlacedLesion


def wave(t: float, p: np.ndarray) -> float:
    """Smooth pseudo-random signal in about [-1, 1]: a sum of three sines (rows: freq, phase)."""
    return float(np.sum(np.sin(p[0] * t + p[1])) / 1.8)


def unit(v):
    return v / (np.linalg.norm(v) + 1e-12)


def camera_basis(pos: np.ndarray, fwd: np.ndarray, roll: float) -> np.ndarray:
    """cam (4, 3): position, forward, right, down, with `roll` around the tube axis."""
    ref = np.array([-math.sin(roll), math.cos(roll), 0.0])
    right = unit(np.cross(fwd, ref))
    return np.stack([pos, fwd, right, np.cross(fwd, right)])


def _inspect_weight(dz: float) -> float:
    """How much the endoscopist attends to a lesion `dz` tube radii ahead (approach, stay, pass)."""
    return smoothstep(2.0, 0.9, dz) * smoothstep(-0.2, 0.3, dz)


class Procedure:
    """Camera path and lesion placement for one clip."""

    def __init__(self, cfg: VideoConfig):
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.patient = L.sample_patient(self.rng)
        self.waves = [
            np.stack([self.rng.uniform(0.1, 0.6, 3), self.rng.uniform(0, 2 * np.pi, 3)]) for _ in range(7)
        ]
        self.lesions: list[PlacedLesion] = []  # evidence: the share shown in the clip's modality
        self.evidence: dict[str, dict[str, float]] = {}  # lesion id -> modality -> share shown
        self._bag: list[str] = []
        self.next_z = 3.2
        self.z = 0.0
        self.pos = np.zeros(3)
        self.fwd = np.array([0.0, 0.0, 1.0])

    def _place_lesions(self):
        while self.next_z < self.z + 8.0:
            if not self._bag:  # every class once per bag: both classes show up early
                self._bag = list(self.rng.permutation(self.cfg.classes))
            cls = str(self._bag.pop())
            k = len(self.lesions)
            les = L.sample_lesion(
                self.rng, cls, self.cfg.classes, self.cfg.difficulty, f"v{self.cfg.seed}-{k:03d}"
            )
            # own generator: the placement stream (and so the clip's layout) does not depend on it;
            # the same one per modality, so an NBI stretch shows the lesion as a pure NBI clip would
            ev = {
                m: L.sample_evidence(np.random.default_rng([self.cfg.seed, 0xE71D, k]), m) for m in MODALITIES
            }
            self.evidence[les.lesion_id] = ev
            angle = float(self.rng.uniform(-np.pi, np.pi))
            self.lesions.append(PlacedLesion(les, angle, self.next_z, ev[self.cfg.modality]))
            self.next_z += self.cfg.lesion_gap * self.rng.uniform(0.7, 1.3)

    def near(self, modality: str | None = None) -> list[PlacedLesion]:
        """Lesions close enough to the camera to be worth ray-casting, each with the evidence share
        it shows in `modality` (default: the clip's)."""
        near = [p for p in self.lesions if -1.5 < p.z - self.z < 12.0]
        if modality is None or modality == self.cfg.modality:
            return near
        return [dataclasses.replace(p, evidence=self.evidence[p.lesion.lesion_id][modality]) for p in near]

    def attention(self, k: int) -> float:
        """How much the endoscopist attends to lesion k now: 1 while the camera holds it in close view."""
        return _inspect_weight(self.lesions[k].z - self.z)

    def step(self, t: float, dt: float) -> np.ndarray:
        """Advance the camera to time t; returns cam (4, 3): position, forward, right, down."""
        self._place_lesions()
        w_best, target = 0.0, None
        for p in self.lesions:
            w = _inspect_weight(p.z - self.z)
            if w > w_best:
                w_best, target = w, (p.angle, p.z)
        wv = [wave(t, p) for p in self.waves]
        speed = self.cfg.speed * (0.8 + 0.3 * wv[0]) * (1.0 - 0.6 * w_best)
        self.z += speed * dt
        want_pos = np.array([0.25 * wv[1], 0.25 * wv[2], 0.0])
        want_fwd = unit(np.array([0.25 * wv[3], 0.25 * wv[4], 1.0]))
        if target is not None:
            ang, z = target
            side = np.array([math.cos(ang), math.sin(ang), 0.0])
            want_pos = (1 - w_best) * want_pos + w_best * 0.45 * side
            look = unit(np.array([side[0], side[1], z]) - np.array([want_pos[0], want_pos[1], self.z]))
            want_fwd = unit((1 - w_best) * want_fwd + w_best * look)
        k = min(1.0, 2.5 * dt)  # the hand steers smoothly
        self.pos += (want_pos - self.pos) * k
        self.fwd = unit(self.fwd + (want_fwd - self.fwd) * k)
        roll = 0.6 * wv[5] + 0.3 * t * self.cfg.speed
        return camera_basis(np.array([self.pos[0], self.pos[1], self.z]), self.fwd, roll)

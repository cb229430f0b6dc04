"""Latent lesion and patient descriptions, and their sampling.

A lesion is a vector of named numbers (size, shape, surface pattern, vessel network, colour):
the renderers (numba) read it by index, so the names below are the single definition.
Lengths are in "lesion units": the lesion radius is about 1, pit spacing about 0.1-0.2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import Difficulty

# fmt: off
# lesion vector layout
(RADIUS, ELONG, ORIENT, H2A, H2P, H3A, H3P, H5A, H5P, HEIGHT, SPACING, PIT_R, STRETCH, THETA, WARP,
 JITTER, PRESENCE, NET_W, NET_S, NET_CONT, LACY, BROWN, RED, SEED, PIT_B) = range(25)
N_LESION = 25
# patient (background mucosa) vector layout
(B_SEED, B_TEX, B_FOLD_AMP, B_FOLD_FREQ, B_FOLD_ANGLE, B_VESSEL, B_VESSEL_SCALE,
 B_WLI_R, B_WLI_G, B_WLI_B, B_NBI_R, B_NBI_G, B_NBI_B, B_WET) = range(14)
N_PATIENT = 14
# fmt: on

# Class evidence (NICE). (low, high) uniform ranges; parameters absent here are class-free.
_CLASS_PARAMS = {
    # type 1: colour like the mucosa, isolated lacy vessels, uniform small dots
    "hyperplastic": {
        "spacing": (0.10, 0.14),
        "pit_r": (0.16, 0.24),
        "stretch": (1.0, 1.25),
        "warp": (0.0, 0.08),
        "jitter": (0.15, 0.4),
        "presence": (0.95, 1.0),
        "net_w": (0.03, 0.06),
        "net_s": (0.0, 0.2),
        "net_cont": (0.2, 0.5),
        "lacy": (0.3, 0.8),
        "brown": (0.0, 0.2),
        "red": (-0.1, 0.1),
        "pit_b": (0.5, 0.8),
    },
    # type 2: browner, thick brown vessels around oval / tubular / branched white structures
    "adenoma": {
        "spacing": (0.13, 0.19),
        "pit_r": (0.28, 0.40),
        "stretch": (1.7, 3.0),
        "warp": (0.05, 0.3),
        "jitter": (0.3, 0.6),
        "presence": (0.9, 1.0),
        "net_w": (0.09, 0.16),
        "net_s": (0.6, 1.0),
        "net_cont": (0.75, 1.0),
        "lacy": (0.0, 0.2),
        "brown": (0.45, 0.85),
        "red": (0.05, 0.3),
        "pit_b": (0.6, 1.0),
    },
    # type 3: disrupted or missing pattern, irregular thick vessels, dark
    "adenocarcinoma": {
        "spacing": (0.12, 0.22),
        "pit_r": (0.2, 0.4),
        "stretch": (1.0, 2.5),
        "warp": (0.3, 0.7),
        "jitter": (0.8, 1.0),
        "presence": (0.1, 0.5),
        "net_w": (0.12, 0.24),
        "net_s": (0.7, 1.0),
        "net_cont": (0.3, 0.6),
        "lacy": (0.0, 0.3),
        "brown": (0.7, 1.0),
        "red": (0.2, 0.4),
        "pit_b": (0.2, 0.6),
    },
}
_INDEX = {
    "spacing": SPACING,
    "pit_r": PIT_R,
    "stretch": STRETCH,
    "warp": WARP,
    "jitter": JITTER,
    "presence": PRESENCE,
    "net_w": NET_W,
    "net_s": NET_S,
    "net_cont": NET_CONT,
    "lacy": LACY,
    "brown": BROWN,
    "red": RED,
    "pit_b": PIT_B,
}


@dataclass
class Lesion:
    lesion_id: str
    cls: str
    params: np.ndarray  # (N_LESION,) float64
    patient: np.ndarray  # (N_PATIENT,) float64: the mucosa around it


def _seed32(rng: np.random.Generator) -> float:
    return float(rng.integers(0, 2**31 - 1))


def sample_patient(rng: np.random.Generator) -> np.ndarray:
    p = np.zeros(N_PATIENT)
    p[B_SEED] = _seed32(rng)
    p[B_TEX] = rng.uniform(2.5, 5.0)
    p[B_FOLD_AMP] = rng.uniform(0.0, 1.0)
    p[B_FOLD_FREQ] = rng.uniform(0.6, 1.4)
    p[B_FOLD_ANGLE] = rng.uniform(0, np.pi)
    p[B_VESSEL] = rng.uniform(0.2, 1.0)
    p[B_VESSEL_SCALE] = rng.uniform(0.5, 1.0)
    p[B_WLI_R : B_WLI_B + 1] = np.array([0.82, 0.44, 0.36]) * rng.uniform(0.9, 1.1, 3)
    p[B_NBI_R : B_NBI_B + 1] = np.array([0.56, 0.60, 0.50]) * rng.uniform(0.9, 1.1, 3)
    p[B_WET] = rng.uniform(0.5, 1.0)
    return p


def sample_lesion(
    rng: np.random.Generator, cls: str, classes: list[str], diff: Difficulty, lesion_id: str
) -> Lesion:
    """Draw a lesion of class `cls`. `class_overlap` pulls it part-way toward another class."""
    p = np.zeros(N_LESION)
    p[RADIUS] = rng.uniform(0.8, 1.2)
    p[ELONG] = rng.uniform(1.0, 1.5)
    p[ORIENT] = rng.uniform(0, np.pi)
    for a, ph in ((H2A, H2P), (H3A, H3P), (H5A, H5P)):
        p[a] = rng.uniform(0.0, 0.12)
        p[ph] = rng.uniform(0, 2 * np.pi)
    p[HEIGHT] = rng.uniform(0.1, 0.35)
    p[THETA] = rng.uniform(0, np.pi)
    p[SEED] = _seed32(rng)
    others = [c for c in classes if c != cls]
    other = others[int(rng.integers(len(others)))]
    t = diff.class_overlap * rng.uniform()  # one weight per lesion: a coherent in-between look
    for name, (lo, hi) in _CLASS_PARAMS[cls].items():
        own = rng.uniform(lo, hi)
        olo, ohi = _CLASS_PARAMS[other][name]
        p[_INDEX[name]] = own + t * (rng.uniform(olo, ohi) - own)
    return Lesion(lesion_id, cls, p, sample_patient(rng))


def sample_evidence(rng: np.random.Generator, modality: str) -> float:
    """Share of the class cue (pattern contrast, colour) a view or a video lesion shows, 0..1.

    WLI: U(0, 1) (focus, distance, glare: some views carry almost nothing); NBI always shows
    most of it -- that is what NBI is for. Both renderers draw it here (docs/synthetic_data.md)."""
    return float(rng.uniform(0.8, 1.0) if modality == "NBI" else rng.uniform(0.0, 1.0))


def sample_view(rng: np.random.Generator, diff: Difficulty, radius: float) -> np.ndarray:
    """A camera on the mucosa plane: 3x3 map from normalised pixel coords ([-1, 1]) to lesion units."""
    half = radius * 1.65 / rng.uniform(diff.min_scale, diff.max_scale)  # half field width
    rot = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(rot), np.sin(rot)
    tx, ty = rng.uniform(-0.3, 0.3, 2) * radius
    gx, gy = rng.uniform(-diff.max_tilt, diff.max_tilt, 2)
    A = np.array([[half * c, -half * s, tx], [half * s, half * c, ty], [0.0, 0.0, 1.0]])
    P = np.array([[1.0, 0, 0], [0, 1.0, 0], [gx, gy, 1.0]])  # tilt: perspective foreshortening
    return A @ P

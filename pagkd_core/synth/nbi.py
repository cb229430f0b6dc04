"""NBI stretches in a WLI procedure clip: the endoscopist switches the light to NBI to characterise
a lesion, and back to WLI before moving on (docs/synthetic_data.md, "NBI stretches").

A lesion's close view begins at the first frame that shows it on at least CLOSE of the field
while the camera holds it (`Procedure.attention` >= FULL: slowed, turned toward it). Of the
lesions that come into close view, a share `VideoConfig.nbi_fraction` gets one NBI stretch: it
starts DELAY seconds into the close view (a WLI look first) and lasts LENGTH seconds, cut so that
it ends MARGIN seconds before the camera lets go of the lesion (attention below LEAVE, found by
running the camera path ahead): the light is back to WLI while the lesion is still in view. A
close view too short for at least MIN_WLI seconds of WLI and MIN_LENGTH of NBI gets none.

Every draw comes from a generator per lesion on its own stream ([seed, STREAM, lesion index]):
the clip's lesions and camera path (the Procedure's generator) never depend on the option, and a
lesion's decision does not depend on which other lesions were switched for.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from .config import VideoConfig
from .procedure import Procedure

CLOSE = 0.05  # share of the field from which a held lesion is in close view (the evaluation's)
FULL = 0.95  # attention from which the camera holds a lesion
LEAVE = 0.5  # attention below which the camera is moving past the lesion
DELAY = (1.0, 2.0)  # seconds of WLI close view before the switch
LENGTH = (2.0, 4.0)  # planned seconds of NBI
MIN_WLI, MIN_LENGTH = 0.7, 1.0  # shortest WLI look first, and shortest stretch worth switching for
MARGIN = 0.3  # back to WLI this long before the camera lets go
LOOKAHEAD = 20.0  # seconds the camera path is run ahead at most
STREAM = 0x4B1  # the switch decisions' generator stream


@dataclass(frozen=True)
class Stretch:
    lesion_id: str
    start: float  # seconds: NBI from the first frame at or after it ...
    end: float  # ... to the last frame before it


class NbiSchedule:
    """Per frame: `light(t)` before rendering it, then `seen(...)` with the lesion its truth shows."""

    def __init__(self, cfg: VideoConfig):
        self.cfg = cfg
        self.active = cfg.modality == "WLI" and cfg.nbi_fraction > 0  # else a pure clip, as before
        self.decided: set[str] = set()  # lesions whose close view has begun (one decision each)
        self.stretches: list[Stretch] = []

    def light(self, t: float) -> str:
        if any(s.start <= t < s.end for s in self.stretches):
            return "NBI"
        return self.cfg.modality

    def seen(self, proc: Procedure, t: float, lesion_id: str, coverage: float) -> None:
        """The frame at `t` showed `lesion_id` on `coverage` of the field (the renderer's truth)."""
        if not self.active or coverage < CLOSE or lesion_id in self.decided:
            return
        k = next(i for i, p in enumerate(proc.lesions) if p.lesion.lesion_id == lesion_id)
        if proc.attention(k) < FULL:
            return  # seen large while passing or from afar: not the endoscopist's close look
        self.decided.add(lesion_id)
        rng = np.random.default_rng([self.cfg.seed, STREAM, k])
        # all three drawn always: a higher nbi_fraction adds stretches and keeps the others as they were
        chosen = rng.uniform() < self.cfg.nbi_fraction
        delay, length = rng.uniform(*DELAY), rng.uniform(*LENGTH)
        if not chosen:
            return
        last = self._let_go(proc, k, t) - MARGIN  # NBI must be over by then
        start = t + min(delay, last - t - MIN_LENGTH)  # a short close view: switch earlier
        if start - t >= MIN_WLI:
            self.stretches.append(Stretch(lesion_id, start, min(start + length, last)))

    def _let_go(self, proc: Procedure, k: int, t: float) -> float:
        """When the camera moves past lesion k: its path run ahead on a copy (the path does not
        depend on what is rendered, so the copy follows the clip's own)."""
        ahead, dt = copy.deepcopy(proc), 1.0 / self.cfg.fps
        for j in range(1, round(LOOKAHEAD * self.cfg.fps)):
            ahead.step(t + j * dt, dt)
            if ahead.attention(k) < LEAVE:
                return t + j * dt
        return t + LOOKAHEAD

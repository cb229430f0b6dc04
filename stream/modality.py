"""Which light a frame was taken in: white light (WLI) or narrow-band imaging (NBI), per frame.

The student reads WLI only; an endoscopist switches the processor to NBI for a few seconds to
characterise a lesion, and those frames must never reach it (stream.routing sends them to the
NBI teacher, or marks them "NBI: not analysed"). The processor does not tell us, so the frame's
colour does: WLI mucosa is red/pink (red well above green), NBI shows the mucosa in cyan and
green-brown (red about level with green). The statistic is the red excess of the content area,

    score = (mean R - mean G) / (mean R + mean G + mean B)

over a thumbnail of the field (pixels brighter than the black border, without white glare and
text). On the synthetic procedure videos WLI frames score 0.08-0.21 and NBI frames -0.06-0.02
(docs/stream.md has the measurement and the command: ``python -m stream.modality``). It costs a
thumbnail from the decoder's planes and a mean: ~0.16 ms of CPU per 720p frame.

Hysteresis, two ways, so one NBI stretch gives one switch: a Schmitt trigger (a frame reads NBI
below ``nbi_below`` and WLI above ``wli_above``; between the two it says nothing) and the held
modality changes only after ``confirm`` frames in a row read the other one. The modality a frame
is *handled* as (``ModalityCall.modality``) is NBI when either the held modality or the frame
itself reads NBI: the first NBI frame after a switch is already kept from the WLI student, and
the few WLI frames after a switch back wait for the confirmation (they lose their analysis,
never a wrong model's call).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from stream.frame import Frame

WLI, NBI = "WLI", "NBI"
MODALITIES = (WLI, NBI)


@dataclass(frozen=True)
class ModalityCall:
    modality: str  # how this frame is handled: NBI if the held modality or the frame itself says so
    held: str  # the stream's modality after hysteresis (one switch per NBI stretch)
    score: float | None  # red excess of the content area; None when the frame is too dark to tell


def red_excess(rgb: np.ndarray, black_level: int = 30, glare_level: int = 215) -> float | None:
    """The modality statistic of an RGB picture (or thumbnail) of the content area; None when
    fewer than 2% of its pixels are lit (a dark or blank frame says nothing about the light)."""
    px = rgb.reshape(-1, 3)
    hi = np.maximum(np.maximum(px[:, 0], px[:, 1]), px[:, 2])
    lo = np.minimum(np.minimum(px[:, 0], px[:, 1]), px[:, 2])
    # Lit mucosa only: the black border and the lumen say nothing, and white glare and on-screen
    # text are the same colour in both lights.
    keep = (hi > black_level) & (lo < glare_level)
    if keep.sum() < max(16, 0.02 * len(px)):
        return None
    r, g, b = (float(c) for c in px[keep].mean(axis=0, dtype=np.float64))
    return (r - g) / max(r + g + b, 1e-6)


class ModalityDetector:
    """One stream's modality, frame by frame (see the module doc for the rule).

    ``update(frame, box)``: ``box`` is the content area (x0, y0, x1, y1) in frame pixels, from
    stream.preprocess. The first frame that reads either way sets the modality at once; until
    then a stream counts as WLI."""

    def __init__(self, nbi_below: float = 0.045, wli_above: float = 0.06, confirm: int = 3, samples: int = 32):
        if not nbi_below <= wli_above:
            raise ValueError(f"modality thresholds need nbi_below <= wli_above, got {nbi_below} > {wli_above}")
        if confirm < 1 or samples < 4:
            raise ValueError("modality confirm must be >= 1 and samples >= 4")
        self.nbi_below, self.wli_above, self.confirm, self.samples = nbi_below, wli_above, confirm, samples
        self.held: str | None = None
        self.switches = 0  # held-modality changes after the first decision
        self._run = 0  # frames in a row that read the other modality

    def read(self, score: float | None) -> str | None:
        """What one frame's score says on its own: WLI, NBI or None (dark, or between the thresholds)."""
        if score is None:
            return None
        return NBI if score < self.nbi_below else WLI if score > self.wli_above else None

    def score(self, frame: Frame, box: tuple[int, int, int, int]) -> float | None:
        x0, y0, x1, y1 = box
        step = max(1, min(x1 - x0, y1 - y0) // self.samples)  # ~samples x samples points of the field
        thumb = frame.thumbnail(step)
        return red_excess(thumb[y0 // step : -(-y1 // step), x0 // step : -(-x1 // step)])

    def update(self, frame: Frame, box: tuple[int, int, int, int]) -> ModalityCall:
        s = self.score(frame, box)
        return self.update_score(s)

    def update_score(self, s: float | None) -> ModalityCall:
        says = self.read(s)
        if self.held is None:
            self.held = says  # the first readable frame decides at once
        elif says is not None and says != self.held:
            self._run += 1
            if self._run >= self.confirm:
                self.held, self._run = says, 0
                self.switches += 1
        elif says is not None:
            self._run = 0
        held = self.held or WLI
        return ModalityCall(NBI if NBI in (held, says) else WLI, held, s)


def _truth_modalities(video: str) -> list[str]:
    """The per-frame ``modality`` column of ``<video>.truth.csv`` (pagkd_core.synth's format)."""
    import csv
    from pathlib import Path

    truth = Path(video).with_suffix(".truth.csv")
    if not truth.is_file():
        raise SystemExit(f"error: {truth} not found; give the clip as WLI:{video} or NBI:{video}")
    with open(truth, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "modality" not in rows[0]:
        raise SystemExit(f"error: {truth} has no modality column; give the clip as WLI:{video} or NBI:{video}")
    return [r["modality"] for r in rows]


def measure(clips: list[tuple[str | None, str]], **params) -> dict:
    """Play ``clips`` ((expected modality or None, video path) pairs; None: per frame from the
    clip's truth CSV) back to back as one stream through a detector, as the pipeline does
    (decoded pictures, content area tracked): per-frame accuracy of the handled modality,
    switches of the held one against the true ones, and each modality's score range."""
    from stream.preprocess import ContentTracker
    from stream.sources import open_source

    det, tracker = ModalityDetector(**params), ContentTracker()
    expected: list[str] = []
    handled: list[str] = []
    scores: dict[str, list[float]] = {m: [] for m in MODALITIES}
    for want, path in clips:
        per_frame = None if want else _truth_modalities(path)
        with open_source(path) as src:
            for i, frame in enumerate(src):
                truth = want or per_frame[min(i, len(per_frame) - 1)]
                call = det.update(frame, tracker.update(frame).box)
                expected.append(truth)
                handled.append(call.modality)
                if call.score is not None:
                    scores[truth].append(call.score)
    return {
        "frames": len(expected),
        "accuracy": sum(a == b for a, b in zip(handled, expected)) / max(len(expected), 1),
        "switches": det.switches,
        "true_switches": sum(a != b for a, b in itertools.pairwise(expected)),
        "score_range": {m: [round(min(v), 4), round(max(v), 4)] for m, v in scores.items() if v},
    }


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(
        prog="python -m stream.modality",
        description="Measure the WLI/NBI detector on clips played back to back as one stream.",
    )
    ap.add_argument("clips", nargs="+", metavar="[MODALITY:]VIDEO",
                    help="e.g. WLI:a.mp4 NBI:b.mp4 WLI:c.mp4; a bare VIDEO takes each frame's modality "
                         "from VIDEO.truth.csv (procedure videos with NBI stretches)")
    a = ap.parse_args(argv)
    clips: list[tuple[str | None, str]] = []
    for c in a.clips:
        want, sep, path = c.partition(":")
        clips.append((want, path) if sep and want in MODALITIES else (None, c))
    print(json.dumps(measure(clips), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The demo clip's story, checked on the ground truth alone (no model): `find_seed` picks the first
seed whose truth timeline tells it (`synth video --find-seed START`, docs/synthetic_data.md).

The story (all SYNTHETIC): the camera approaches before anything is close; two lesions, of two
different classes and with WLI evidence in the upper half, each held in WLI close view long
enough for a call; a stretch with no lesion in view after the first close view; an NBI stretch
on a lesion, back to WLI before the clip ends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from .config import VideoConfig
from .nbi import CLOSE
from .video import iter_procedure_frames


@dataclass
class Story:
    """What a demo clip's truth must show (times in seconds; `close`: lesion >= nbi.CLOSE of the field)."""

    approach: float = 3.0  # no lesion in close view before this
    call: float = 2.0  # a WLI close view this long (one run) counts as a lesion one can call
    call_classes: int = 2  # lesions with a call, of this many different classes
    call_evidence: float = 0.5  # ... whose WLI evidence is in the upper half (a correct call is expected)
    no_lesion: float = 2.0  # a run with no lesion visible, after the first close view
    nbi: float = 1.5  # an NBI run on one lesion (visible throughout), over before the clip's last second


def _runs(flags: list[bool]) -> list[tuple[int, int]]:
    """[start, end) of each maximal run of True."""
    out, start = [], None
    for i, f in enumerate([*flags, False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            out.append((start, i))
            start = None
    return out


def _visible(r: dict) -> bool:  # rows as yielded (int) or as read back from the truth CSV (str)
    return int(r["lesion_visible"]) == 1


def _close(r: dict) -> bool:
    return _visible(r) and float(r["coverage"]) >= CLOSE


def check(rows: list[dict], fps: float, story: Story | None = None) -> list[str]:
    """The story's parts that the truth rows (iter_procedure_frames' dicts) miss; [] = told."""
    story = story or Story()
    n, missing = len(rows), []
    close = [_close(r) for r in rows]
    first = close.index(True) if any(close) else n
    if first / fps < story.approach:
        missing.append(f"a close view before {story.approach:g} s (at {first / fps:.1f} s): no approach")
    called = {}
    for lid in {r["lesion_id"] for r in rows if r["lesion_id"]}:
        wli = [c and r["lesion_id"] == lid and r["modality"] == "WLI" for c, r in zip(close, rows)]
        row = next(r for r in rows if r["lesion_id"] == lid)
        strong = row["wli_evidence"] not in (None, "") and float(row["wli_evidence"]) >= story.call_evidence
        if strong and any(b - a >= story.call * fps for a, b in _runs(wli)):
            called[lid] = row["class"]
    if len(set(called.values())) < story.call_classes:
        missing.append(f"WLI close views of {story.call:g} s of {story.call_classes} classes (evidence "
                       f">= {story.call_evidence:g}) "
                       f"(got {sorted(set(called.values()))})")  # fmt: skip
    empty = [a for a, b in _runs([not _visible(r) for r in rows]) if b - a >= story.no_lesion * fps]
    if not any(a > first for a in empty):
        missing.append(f"no {story.no_lesion:g} s without a lesion after the first close view")
    nbi = [(a, b) for a, b in _runs([r["modality"] == "NBI" for r in rows]) if b - a >= story.nbi * fps]
    if not any(len({r["lesion_id"] for r in rows[a:b]} - {""}) == 1 and all(_visible(r) for r in rows[a:b])
               and b <= n - fps for a, b in nbi):  # fmt: skip
        missing.append(f"no NBI stretch of {story.nbi:g} s on one lesion")
    return missing


def timeline(rows: list[dict], fps: float) -> list[str]:
    """The truth as segments for people to read, one line each: 'start-end s  what' (no lesion, or
    the lesion, far / close, and the light). A far lesion flickers at the visibility threshold:
    runs under 0.3 s join the segment before them (check() reads the frames, not these lines)."""

    def what(r: dict) -> str:
        if not _visible(r):
            return "no lesion"
        return f"{r['lesion_id']} {r['class']} {'close' if _close(r) else 'far'} {r['modality']}"

    segs: list[list] = []  # [what, first frame, end frame]
    for i, r in enumerate(rows):
        label = what(r)
        if segs and segs[-1][0] == label:
            segs[-1][2] = i + 1
        else:
            segs.append([label, i, i + 1])
    out: list[list] = []
    for label, a, b in segs:
        if out and (out[-1][0] == label or b - a < 0.3 * fps):
            out[-1][2] = b
        else:
            out.append([label, a, b])
    return [f"{a / fps:5.1f}-{b / fps:5.1f} s  {label}" for label, a, b in out]


def truth_rows(cfg: VideoConfig) -> list[dict]:
    """A clip's truth without rendering its pictures (the written truth file's rows, lesion_contrast
    left empty: measuring it needs the shading)."""
    return [t for _, t in iter_procedure_frames(cfg, truth_only=True)]


def find_seed(
    cfg: VideoConfig, start: int, tries: int, story: Story | None = None, log: Callable[[str], None] = print
) -> tuple[int, list[dict]] | None:
    """The first seed in start .. start + tries - 1 whose truth tells `story`, with its rows;
    None when none does. Only the seed changes: every other value of `cfg` is kept."""
    for seed in range(start, start + tries):
        rows = truth_rows(dataclasses.replace(cfg, seed=seed))
        missing = check(rows, cfg.fps, story)
        log(f"seed {seed}: " + ("tells the story" if not missing else "; ".join(missing)))
        if not missing:
            return seed, rows
    return None

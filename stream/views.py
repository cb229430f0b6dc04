"""What the student reads of each frame: one view, or the whole field plus a second look.

    views = parse_views("whole,centre")          # ("whole", "centre")
    box = view_box("centre", area_box)           # the content area's central square
    probs = fuse(view_probs, class_names)        # (V, K) softmax per view -> (K,)

The runtime scales the endoscope's content area into the model's square input. On a 16:9 field
that squeezes the picture 1.8x more across than down, and a lesion at 5-10% of the field keeps
~60 px of its width at 256 px. The ``centre`` view is the content area's central square (its
full height), scaled by the same factor both ways, where the endoscopist brings a lesion to look
at it; the whole view still sees lesions off the centre. On 28 validation videos the bundled
student's class AUC with both views against the whole view alone: 0.881 against 0.856 at lesions
covering 5-15% of the field, 0.769 against 0.694 at 2-5% (docs/video_eval/README.md, "Two views").

Fusion: whether a lesion is there is the surer view's call (a lesion at the edge is the whole
view's to see, one entering close view at the centre the centre's, which shows it larger); which
class it is averages the views' log-odds between the lesion classes (a geometric mean of their
class splits), so neither view's confident mistake wins alone. Of the three ways to fuse presence
(``PRESENCE``), the surer view's gave the soonest right calls on validation at the same first-call
rate and no false alarms (``python -m benchmarks.view_fusion``, docs/video_eval/README.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pagkd_core.outputs import background_index, lesion_indices

WHOLE, CENTRE = "whole", "centre"
VIEWS = (WHOLE, CENTRE)  # every view a student may read, by name
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels


def parse_views(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"whole,centre"`` or a sequence -> the view names, the whole view first; one-line errors."""
    names = [v.strip() for v in (spec.split(",") if isinstance(spec, str) else spec) if v.strip()]
    unknown = [v for v in names if v not in VIEWS]
    if unknown or not names:
        raise ValueError(f"views are a comma-separated list of {', '.join(VIEWS)} (got {spec!r})")
    if names[0] != WHOLE or len(set(names)) != len(names):
        raise ValueError(f"views start with '{WHOLE}' and name each view once (got {spec!r})")
    return tuple(names)


def resolve_views(spec: str | None, meta: dict) -> tuple[str, ...]:
    """The views a student reads: ``spec`` (``--views``), or for ``auto``/None its metadata's
    ``views``, else the whole field alone."""
    return parse_views(meta.get("views", [WHOLE]) if spec in (None, "auto") else spec)


def view_box(view: str, area: Box) -> Box:
    """The frame pixels ``view`` reads of a frame whose content area is ``area``."""
    if view == WHOLE:
        return area
    if view == CENTRE:
        x0, y0, x1, y1 = area
        side = min(x1 - x0, y1 - y0)
        left, top = x0 + (x1 - x0 - side) // 2, y0 + (y1 - y0 - side) // 2
        return left, top, left + side, top + side
    raise ValueError(f"unknown view {view!r}; views: {', '.join(VIEWS)}")


PRESENCE = ("max", "mean", "whole")  # whose P(a lesion is there) a fusion keeps; the first is the runtime's
SPLIT = ("mean", "weighted")  # how the views' class splits are averaged; the first is the runtime's


def fuse(probs: np.ndarray, class_names: Sequence[str], presence: str = PRESENCE[0], split: str = SPLIT[0]) -> np.ndarray:
    """(V, K) softmax per view (the whole view first) -> (K,) float32: P(no lesion) of the view
    surest a lesion is there (``presence``: ``whole``, the whole view's; ``mean``, the views'
    mean), the lesion classes' split from the mean of the views' log class probabilities
    (``split="weighted"``: each view weighted by its P(a lesion is there), so a view that sees no
    lesion has little say on its class). A student without a ``no_lesion`` output: the views'
    lesion log-probabilities averaged and renormalised."""
    if presence not in PRESENCE or split not in SPLIT:
        raise ValueError(f"presence is one of {', '.join(PRESENCE)} and split one of {', '.join(SPLIT)}, "
                         f"got {presence!r} and {split!r}")
    p = np.asarray(probs, np.float64)
    if p.ndim == 1 or len(p) == 1:
        return np.asarray(p.reshape(-1, p.shape[-1])[0], np.float32)
    lesions, bg = lesion_indices(class_names), background_index(class_names)
    logs = np.log(np.clip(p[:, lesions], 1e-12, None))
    logs -= np.log(np.exp(logs).sum(1, keepdims=True))  # each view's split between the lesion classes
    weights = 1.0 - p[:, bg] if split == "weighted" and bg is not None else np.ones(len(p))
    weights = weights + 1e-6  # no view sees a lesion: an even mean
    mix = np.exp((weights[:, None] * logs).sum(0) / weights.sum())
    out = np.zeros(p.shape[1])
    if bg is not None:
        absent = p[:, bg]
        out[bg] = {"whole": absent[0], "mean": absent.mean(), "max": absent.min()}[presence]
    present = 1.0 - out[bg] if bg is not None else 1.0
    out[lesions] = present * mix / mix.sum()
    return out.astype(np.float32)

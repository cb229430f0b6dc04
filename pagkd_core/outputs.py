"""What a classifier's outputs mean: the background class and the lesion classes.

One owner for the name ``no_lesion``: a student whose class list starts with it says "no lesion
in view" as well as which lesion; students without it (the two-class students exported before
it existed) classify every frame as a lesion. Training, export, the runtime and the video
evaluation all ask this module, so the name is written once. No heavy imports: ``stream`` and
its alert logic import it.
"""

from __future__ import annotations

from collections.abc import Sequence

NO_LESION = "no_lesion"


def background_index(class_names: Sequence[str]) -> int | None:
    """Index of the ``no_lesion`` output, or None for a lesion-only class list."""
    names = list(class_names)
    return names.index(NO_LESION) if NO_LESION in names else None


def lesion_classes(class_names: Sequence[str]) -> list[str]:
    """The class names without the background, in model order."""
    return [c for c in class_names if c != NO_LESION]


def lesion_indices(class_names: Sequence[str]) -> list[int]:
    """The lesion classes' output columns (every output but the background), in model order."""
    return [i for i, c in enumerate(class_names) if c != NO_LESION]


def output_set(class_names: Sequence[str]) -> dict:
    """The ``outputs`` record of an exported model's JSON (format pagkd-student/1):
    ``{"no_lesion": "no_lesion" | None, "lesion_classes": [...]}``. The background must come
    first: readers that index classes (the alert logic, metrics) rely on lesion classes keeping
    their order after it."""
    names = list(class_names)
    bg = background_index(names)
    if bg not in (None, 0):
        raise ValueError(f"'{NO_LESION}' must be the first class name, got {names}")
    if len(set(names)) != len(names):
        raise ValueError(f"class names repeat: {names}")
    return {"no_lesion": None if bg is None else NO_LESION, "lesion_classes": lesion_classes(names)}

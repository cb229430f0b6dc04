"""Lesion-level (patient-level when known) k-fold splits, stratified, saved as JSON.

Every image of a patient (both modalities) lands in the same fold, so no lesion is seen in
training and test. The validation split, used for model selection, is carved out of the
training folds; the test fold is never looked at while training.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from pagkd_core.data.layouts import DataError, Sample


def make_folds(samples: list[Sample], k: int, val_fraction: float, seed: int) -> dict:
    patient_cls: dict[str, Counter] = {}
    patient_mod: dict[str, set] = {}
    for s in samples:
        patient_cls.setdefault(s.patient, Counter())[s.cls] += 1
        patient_mod.setdefault(s.patient, set()).add(s.modality)
    if len(patient_cls) < k:
        raise DataError(f"{len(patient_cls)} patients/lesions cannot make {k} folds; lower data.folds")
    rng = np.random.default_rng(seed)
    # Strata: (main class, which modalities the patient has), so that every fold and every
    # validation split gets WLI and NBI images of each class whenever the data allow it.
    by_class: dict[tuple, list[str]] = {}
    for p in sorted(patient_cls):
        by_class.setdefault(
            (patient_cls[p].most_common(1)[0][0], "+".join(sorted(patient_mod[p]))), []
        ).append(p)
    # Deal each stratum's patients round-robin into folds (from a random fold), so strata spread evenly.
    fold_of: dict[str, int] = {}
    for cls in sorted(by_class):
        members = [by_class[cls][i] for i in rng.permutation(len(by_class[cls]))]
        start = int(rng.integers(k))
        for i, p in enumerate(members):
            fold_of[p] = (start + i) % k
    folds = []
    for f in range(k):
        train = [p for p in sorted(fold_of) if fold_of[p] != f]
        val = []
        for cls in sorted(by_class):
            pool = [p for p in by_class[cls] if fold_of[p] != f]
            # at least one validation patient per stratum, but never the whole stratum
            n_val = min(max(round(val_fraction * len(pool)), 1), len(pool) - 1) if len(pool) >= 2 else 0
            val += [pool[i] for i in sorted(rng.permutation(len(pool))[:n_val])]
        val_set = set(val)
        folds.append(
            {
                "train": [p for p in train if p not in val_set],
                "val": sorted(val_set),
                "test": sorted(p for p in fold_of if fold_of[p] == f),
            }
        )
    return {**split_settings(k, val_fraction, seed), "folds": folds}


def split_settings(k: int, val_fraction: float, seed: int) -> dict:
    """What defines a split besides the data: stored in splits.json and checked on reuse."""
    return {"unit": "patient", "k": k, "seed": seed, "val_fraction": val_fraction}


def load_or_make_folds(
    path: str | Path, samples: list[Sample], k: int, val_fraction: float, seed: int
) -> dict:
    """Reuse the split file if present (so a run can be repeated), else write a new one.

    A reused file must have been made from the same settings (folds, validation fraction,
    split seed) and the same patients/lesions; otherwise this refuses with one line saying
    what to do, rather than re-splitting under runs already trained on the old split."""
    path = Path(path)
    patients = {s.patient for s in samples}
    if path.is_file():
        splits = json.loads(path.read_text())
        want = split_settings(k, val_fraction, seed)
        changed = [f"{key} {splits.get(key)!r} -> {value!r}" for key, value in want.items()
                   if splits.get(key) != value]
        if changed:
            raise DataError(
                f"{path} was made with other split settings ({'; '.join(changed)}): delete it to "
                f"re-split (runs in that folder were trained on the old split) or use another run.out_dir"
            )
        known = {p for f in splits.get("folds", [])[:1] for part in ("train", "val", "test") for p in f[part]}
        if patients != known:
            raise DataError(
                f"{path} was made for other data ({len(patients - known)} unknown and "
                f"{len(known - patients)} missing patients/lesions); delete it or change run.out_dir"
            )
        return splits
    splits = make_folds(samples, k, val_fraction, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Atomic: several DDP ranks may write the same (deterministic) file at once.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(splits, indent=1) + "\n")
    os.replace(tmp, path)
    return splits


def subsample_lesions(samples: list[Sample], per_class: int, seed: int) -> list[Sample]:
    """Keep the images of at most `per_class` lesions of each class (seeded, whole lesions):
    the few-labels regime's WLI training set. `per_class` <= 0 keeps everything."""
    if per_class <= 0:
        return samples
    by_class: dict[str, list[str]] = {}
    for s in samples:
        if s.lesion not in by_class.setdefault(s.cls, []):
            by_class[s.cls].append(s.lesion)
    rng = np.random.default_rng(seed)
    keep = set()
    for cls in sorted(by_class):
        lesions = sorted(by_class[cls])
        keep |= {lesions[i] for i in rng.permutation(len(lesions))[:per_class]}
    return [s for s in samples if s.lesion in keep]


def select(samples: list[Sample], patients: list[str], modality: str | None = None) -> list[Sample]:
    keep = set(patients)
    return [s for s in samples if s.patient in keep and (modality is None or s.modality == modality)]

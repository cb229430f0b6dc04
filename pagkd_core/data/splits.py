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
    return {"unit": "patient", "k": k, "seed": seed, "val_fraction": val_fraction, "folds": folds}


def load_or_make_folds(
    path: str | Path, samples: list[Sample], k: int, val_fraction: float, seed: int
) -> dict:
    """Reuse the split file if present (so a run can be repeated), else write a new one."""
    path = Path(path)
    patients = {s.patient for s in samples}
    if path.is_file():
        splits = json.loads(path.read_text())
        known = {p for f in splits.get("folds", [])[:1] for part in ("train", "val", "test") for p in f[part]}
        if splits.get("k") != k or patients - known:
            raise DataError(
                f"{path} was made for other data or k (k={splits.get('k')}, "
                f"{len(patients - known)} unknown patients/lesions); delete it or change run.out_dir"
            )
        return splits
    splits = make_folds(samples, k, val_fraction, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Atomic: several DDP ranks may write the same (deterministic) file at once.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(splits, indent=1) + "\n")
    os.replace(tmp, path)
    return splits


def select(samples: list[Sample], patients: list[str], modality: str | None = None) -> list[Sample]:
    keep = set(patients)
    return [s for s in samples if s.patient in keep and (modality is None or s.modality == modality)]

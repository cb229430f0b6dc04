"""The runtime's per-frame modality detector against the truth's ``modality`` column.

Accuracy: frames whose detected modality equals the truth, over the frames the log gives a
modality for (old logs give none: every figure is None). Switches per NBI stretch: changes of
the detected modality from the frame before the stretch to its last frame - a detector that
follows the endoscopist once (with any lag inside the stretch) makes exactly one; flicker
makes more. Switching back after the stretch belongs to the WLI stretch that follows and is
counted there by accuracy, not here.
"""
from __future__ import annotations

import numpy as np

from stream.video_metrics import runs


def _filled(pred: np.ndarray) -> np.ndarray:
    """Unknown entries ("") take the last known modality (frames the detector skipped)."""
    out = np.asarray(pred, dtype=object).copy()
    last = ""
    for i, v in enumerate(out):
        if v:
            last = v
        else:
            out[i] = last
    return out


def nbi_stretch_switches(truth_mod: np.ndarray, pred_mod: np.ndarray) -> list[int]:
    """Detected-modality changes in each NBI stretch of the truth (from the frame before it)."""
    truth_mod = np.asarray(truth_mod).astype(str)
    pred = _filled(pred_mod)
    out = []
    for s, e in runs(truth_mod == "NBI"):
        seg = pred[max(0, s - 1):e]
        seg = seg[seg != ""]
        out.append(int((seg[1:] != seg[:-1]).sum()))
    return out


def modality_summary(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Pooled detector figures over (truth modality, detected modality) per video."""
    truth = np.concatenate([np.asarray(t).astype(str) for t, _ in pairs]) if pairs else np.zeros(0, str)
    pred = np.concatenate([np.asarray(p, dtype=object) for _, p in pairs]) if pairs else np.zeros(0, object)
    known = pred != ""
    if not known.any():
        return {"modality_frames": 0, "modality_accuracy": None, "nbi_stretches": None,
                "modality_switches_per_nbi_stretch_max": None, "modality_switches_per_nbi_stretch_mean": None,
                "modality_switches_total": None}
    sw = [n for t, p in pairs for n in nbi_stretch_switches(t, p)]
    total = sum(int((f[1:] != f[:-1]).sum()) for f in (_filled(p) for _, p in pairs) for f in [f[f != ""]])
    return {"modality_frames": int(known.sum()),
            "modality_accuracy": float((pred[known].astype(str) == truth[known]).mean()),
            "nbi_stretches": len(sw),
            "modality_switches_per_nbi_stretch_max": max(sw) if sw else None,
            "modality_switches_per_nbi_stretch_mean": float(np.mean(sw)) if sw else None,
            "modality_switches_total": total}

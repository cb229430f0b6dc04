"""Video-level metrics of a CADx stream against per-frame ground truth (pure numpy).

Positive = the lesion in view belongs to one of the alert classes (default: the neoplastic
classes). Per frame: AUC of the positive-class probability (all frames, and lesion frames
only: the CADx question of which kind of lesion), sensitivity and specificity of the alert.
Per lesion (a maximal run of frames showing one lesion id): was a positive lesion alerted,
was the first call the right class, how long after the lesion came into view was the first
correct call. False alarms: alert episodes that overlap no positive frame, per minute of video.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TRUTH_COLUMNS = ("frame", "pts", "lesion_visible", "lesion_id", "class")


@dataclass
class Truth:
    frame: np.ndarray          # (T,) int
    pts: np.ndarray            # (T,) seconds
    visible: np.ndarray        # (T,) bool
    lesion_id: np.ndarray      # (T,) str ("" when none)
    cls: np.ndarray            # (T,) str ("" when none)

    def __len__(self) -> int:
        return len(self.frame)


def truth_path(video: str | Path) -> Path:
    v = Path(video)
    return v.with_name(v.name[: -len(v.suffix)] + ".truth.csv") if v.suffix else Path(str(v) + ".truth.csv")


def read_truth(path: str | Path) -> Truth:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ground truth {path} not found (expected <video>.truth.csv next to each video)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in TRUTH_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; expected {','.join(TRUTH_COLUMNS)},x0,y0,x1,y1")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path}: no frames")
    return Truth(frame=np.array([int(r["frame"]) for r in rows]),
                 pts=np.array([float(r["pts"]) if r["pts"] else np.nan for r in rows]),
                 visible=np.array([r["lesion_visible"] in ("1", "true", "True") for r in rows]),
                 lesion_id=np.array([r["lesion_id"] for r in rows], dtype=object),
                 cls=np.array([r["class"] for r in rows], dtype=object))


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each maximal run of True."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    d = np.flatnonzero(np.diff(m.astype(np.int8)))
    return list(zip(d[::2].tolist(), d[1::2].tolist()))


def lesion_segments(t: Truth) -> list[tuple[str, str, int, int]]:
    """(lesion id, class, start, end) for each maximal run of frames showing the same lesion."""
    out = []
    for s, e in runs(t.visible):
        start = s
        for i in range(s + 1, e + 1):
            if i == e or t.lesion_id[i] != t.lesion_id[start]:
                out.append((str(t.lesion_id[start]), str(t.cls[start]), start, i))
                start = i
    return out


@dataclass
class Outcome:
    """One video under one smoothing/alert setting: what the metrics are computed from."""

    name: str
    duration_s: float
    y: np.ndarray              # (T,) bool positive frame
    visible: np.ndarray        # (T,) bool
    raw: np.ndarray            # (T,) positive-class probability, raw
    smoothed: np.ndarray       # (T,) ... smoothed
    alert: np.ndarray          # (T,) bool
    states: np.ndarray         # (T,) str
    false_alarms: int
    lesions: list[dict] = field(default_factory=list)


def outcome(name: str, truth: Truth, times: np.ndarray, raw: np.ndarray, smoothed: np.ndarray,
            states: list, class_names: list[str], alert_idx) -> Outcome:
    """``raw``/``smoothed``: (T, K) probabilities; ``states``: AlertState per frame (NaN rows: frames
    the runtime never analysed are dropped from frame metrics but keep their place in time)."""
    alert_idx = sorted(alert_idx)
    pos_names = {class_names[i] for i in alert_idx}
    y = truth.visible & np.isin(truth.cls.astype(str), list(pos_names))
    alert = np.array([bool(s is not None and s.alert) for s in states])
    state_names = np.array([s.state if s is not None else "missing" for s in states], dtype=object)
    fa = sum(1 for s, e in runs(alert) if not y[s:e].any())
    lesions = []
    for lid, cls, s, e in lesion_segments(truth):
        calls = [(i, state_names[i]) for i in range(s, e) if state_names[i] in class_names]
        correct = [i for i, c in calls if c == cls]
        lesions.append({"lesion_id": lid, "class": cls, "start": s, "end": e, "positive": cls in pos_names,
                        "alerted": bool(alert[s:e].any()), "first_call": calls[0][1] if calls else None,
                        "time_to_correct_s": float(times[correct[0]] - times[s]) if correct else None})
    dt = np.nanmedian(np.diff(times)) if len(times) > 1 else 0.0
    duration = float(times[-1] - times[0] + (dt if np.isfinite(dt) else 0.0)) if len(times) else 0.0
    return Outcome(name, duration, y, truth.visible.copy(), raw[:, alert_idx].sum(1),
                   smoothed[:, alert_idx].sum(1), alert, state_names, fa, lesions)


def _auc(y: np.ndarray, s: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score
    ok = np.isfinite(s)
    y, s = y[ok], s[ok]
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else None


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def summarise(outcomes: list[Outcome]) -> dict:
    """Metrics of one video, or pooled over several (frames and lesions concatenated)."""
    cat = lambda attr: np.concatenate([getattr(o, attr) for o in outcomes])
    y, vis, raw, sm, alert, st = (cat(a) for a in ("y", "visible", "raw", "smoothed", "alert", "states"))
    analysed = np.isfinite(raw)
    y, vis, raw, sm, alert, st = y[analysed], vis[analysed], raw[analysed], sm[analysed], alert[analysed], st[analysed]
    lesions = [les for o in outcomes for les in o.lesions]
    pos = [les for les in lesions if les["positive"]]
    ttc = [les["time_to_correct_s"] for les in lesions if les["time_to_correct_s"] is not None]
    minutes = sum(o.duration_s for o in outcomes) / 60.0
    alarms = sum(o.false_alarms for o in outcomes)
    return {
        "frames": len(y), "minutes": round(minutes, 3),
        "auc_raw": _auc(y, raw), "auc_smoothed": _auc(y, sm),
        "auc_lesion_frames_raw": _auc(y[vis], raw[vis]), "auc_lesion_frames_smoothed": _auc(y[vis], sm[vis]),
        "sensitivity": _rate(int((alert & y).sum()), int(y.sum())),
        "specificity": _rate(int((~alert & ~y).sum()), int((~y).sum())),
        "lesions": len(lesions), "positive_lesions": len(pos),
        "lesion_sensitivity": _rate(sum(les["alerted"] for les in pos), len(pos)),
        "lesion_first_call_correct": _rate(sum(les["first_call"] == les["class"] for les in lesions), len(lesions)),
        "lesion_no_call": _rate(sum(les["first_call"] is None for les in lesions), len(lesions)),
        "false_alarms": int(alarms), "false_alarms_per_min": alarms / minutes if minutes else None,
        "time_to_correct_call_median_s": float(np.median(ttc)) if ttc else None,
        "time_to_correct_call_mean_s": float(np.mean(ttc)) if ttc else None,
        "lesions_never_correct": sum(les["time_to_correct_s"] is None for les in lesions),
        "frac_uncertain": float((st == "uncertain").mean()) if len(st) else None,
        "frac_no_call": float((st == "no call").mean()) if len(st) else None,
    }

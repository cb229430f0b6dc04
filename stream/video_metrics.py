"""Video-level metrics of a CADx stream against per-frame ground truth (pure numpy).

Positive = the lesion in view belongs to one of the alert classes (default: the neoplastic
classes). Frames the truth marks NBI are left out of every frame metric of the WLI student;
frames the runtime did not analyse (NaN probabilities, e.g. "NBI: not analysed") are counted,
never scored. The figures (the issue's video-level targets among them):

* frame level: AUC of the positive-class probability (all WLI frames; lesion frames only);
  class AUC on close-view frames (a lesion covers >= ``CLOSE_COVERAGE`` of the field), scored
  with the lesion-class probabilities renormalised when the student has a ``no_lesion`` output
  (pagkd_core.outputs.NO_LESION), so the class question is asked apart from the presence
  question; lesion-presence AUC (score 1 - P(no_lesion), students with that output only);
  sensitivity/specificity of the alert.
* per run of a lesion in view (``lesions``: a maximal run of frames showing one lesion id):
  alerted, first call (the first class label the alert machine showed in the run, however far
  away), time from the run's first frame to a correct call.
* per lesion (``tracks``: all runs of one lesion id, which may leave the view and come back):
  first call, and for lesions that come into close view (>= ``CLOSE_COVERAGE`` for >=
  ``CLOSE_MIN_S`` s on WLI frames) the time from close-view onset to the first correct label at
  or after it - the issue-14 lesion targets are on these.
* false alarms: alert episodes overlapping no positive frame, per minute of video; and alert
  episodes overlapping no lesion at all, per minute of no-lesion time (the no-lesion target).
* modality detector (logs that carry ``modality``): stream.video_metrics_modality; breakdowns by
  WLI evidence, lesion size and lesion contrast, and everything of one report together:
  stream.video_metrics_breakdown.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from pagkd_core.outputs import background_index, lesion_indices

TRUTH_COLUMNS = ("frame", "pts", "lesion_visible", "lesion_id", "class")
BOX_COLUMNS = ("x0", "y0", "x1", "y1")
CLOSE_COVERAGE = 0.05       # close view: the lesion covers at least this share of the field ...
CLOSE_MIN_S = 1.0           # ... for at least this long, on WLI frames
MISSING = "missing"         # state of a frame the runtime never analysed and logged nothing for


@dataclass
class Truth:
    frame: np.ndarray          # (T,) int
    pts: np.ndarray            # (T,) seconds
    visible: np.ndarray        # (T,) bool
    lesion_id: np.ndarray      # (T,) str ("" when none)
    cls: np.ndarray            # (T,) str ("" when none)
    modality: np.ndarray | None = None   # (T,) "WLI"/"NBI"; CSVs without the column: all WLI
    coverage: np.ndarray | None = None   # (T,) share of the field the lesion covers; NaN: unknown
    evidence: np.ndarray | None = None   # (T,) the lesion's WLI evidence strength 0..1; NaN: unknown
    contrast: np.ndarray | None = None   # (T,) how much the lesion changes the picture (grey levels); NaN: unknown
    box: np.ndarray | None = None        # (T, 4) the lesion's x0, y0, x1, y1 in frame pixels; NaN: none or unknown

    def __post_init__(self):
        n = len(self.frame)
        if self.box is None:
            self.box = np.full((n, 4), np.nan)
        if self.modality is None:
            self.modality = np.full(n, "WLI", dtype=object)
        if self.coverage is None:
            self.coverage = np.full(n, np.nan)
        if self.evidence is None:
            self.evidence = np.full(n, np.nan)
        if self.contrast is None:
            self.contrast = np.full(n, np.nan)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def times(self) -> np.ndarray:
        """Seconds of each frame: its pts where the truth has one, else frame / 30 (the nominal rate)."""
        return np.where(np.isfinite(self.pts), self.pts, self.frame / 30.0)

    def head(self, n: int) -> Truth:
        return Truth(*(getattr(self, f)[:n] for f in self.__dataclass_fields__))


def truth_path(video: str | Path) -> Path:
    v = Path(video)
    return v.with_name(v.name[: -len(v.suffix)] + ".truth.csv") if v.suffix else Path(str(v) + ".truth.csv")


def _floats(rows: list[dict], col: str) -> np.ndarray | None:
    if col not in rows[0]:
        return None
    return np.array([float(r[col]) if r[col] not in ("", None) else np.nan for r in rows])


def read_truth(path: str | Path) -> Truth:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ground truth {path} not found (expected <video>.truth.csv next to each video)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in TRUTH_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; expected {','.join(TRUTH_COLUMNS + BOX_COLUMNS)}")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path}: no frames")
    modality = None
    if "modality" in rows[0]:
        modality = np.array([(r["modality"] or "WLI").upper() for r in rows], dtype=object)
    return Truth(frame=np.array([int(r["frame"]) for r in rows]),
                 pts=np.array([float(r["pts"]) if r["pts"] else np.nan for r in rows]),
                 visible=np.array([r["lesion_visible"] in ("1", "true", "True") for r in rows]),
                 lesion_id=np.array([r["lesion_id"] for r in rows], dtype=object),
                 cls=np.array([r["class"] for r in rows], dtype=object),
                 modality=modality, coverage=_floats(rows, "coverage"), evidence=_floats(rows, "wli_evidence"),
                 contrast=_floats(rows, "lesion_contrast"), box=_box(rows))


def _box(rows: list[dict]) -> np.ndarray | None:
    cols = [_floats(rows, c) for c in BOX_COLUMNS]
    return None if any(c is None for c in cols) else np.stack(cols, 1)


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
    # frame arrays of the newer figures; outcome() fills them all
    dt: float = 0.0
    wli: np.ndarray | None = None            # (T,) bool truth modality is WLI
    cls: np.ndarray | None = None            # (T,) str true class ("" when none)
    coverage: np.ndarray | None = None       # (T,) float, NaN unknown
    evidence: np.ndarray | None = None       # (T,) float, NaN unknown
    contrast: np.ndarray | None = None       # (T,) float, NaN unknown
    cls_raw: np.ndarray | None = None        # (T,) P(positive | a lesion), raw
    cls_smoothed: np.ndarray | None = None
    presence_raw: np.ndarray | None = None   # (T,) 1 - P(no_lesion); NaN without that output
    presence_smoothed: np.ndarray | None = None
    pred_modality: np.ndarray | None = None  # (T,) str the runtime's detector ("" unknown)
    true_modality: np.ndarray | None = None
    false_alarms_no_lesion: int = 0
    tracks: list[dict] = field(default_factory=list)  # per lesion id (all its runs): the close-view figures
    called: np.ndarray | None = None         # (T,) bool the state is a lesion-class label


def _close_frames(dt: float) -> int:
    """Frames in CLOSE_MIN_S at frame interval ``dt``."""
    return max(1, int(np.ceil(CLOSE_MIN_S / dt - 1e-6))) if dt > 0 else 1


def _close_onset(close: np.ndarray, s: int, e: int, dt: float) -> int | None:
    """First frame of the first run of close-view frames in [s, e) lasting CLOSE_MIN_S."""
    need = _close_frames(dt)
    return next((s + a for a, b in runs(close[s:e]) if b - a >= need), None)


def _nanmean(v: np.ndarray) -> float | None:
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else None


def _nanmax(v: np.ndarray) -> float | None:
    v = v[np.isfinite(v)]
    return float(v.max()) if len(v) else None


def _track(lid: str, cls: str, segs: list[tuple[int, int]], truth: Truth, times: np.ndarray,
           state_names: np.ndarray, close: np.ndarray, dt: float, calls_ok: set) -> dict:
    """One lesion over all its runs in view (it may leave the view and come back): first call,
    close view, time from close view to a correct call, WLI evidence, peak coverage and contrast,
    and its contrast over the first CLOSE_MIN_S of close view (how much it showed when the clock
    of the time to a correct call started)."""
    frames = np.concatenate([np.arange(s, e) for s, e in segs])
    onset = next((o for o in (_close_onset(close, s, e, dt) for s, e in segs) if o is not None), None)
    calls = [i for i in frames if state_names[i] in calls_ok]
    after = [i for i in calls if state_names[i] == cls and onset is not None and i >= onset]
    ev = _nanmean(truth.evidence[frames[close[frames]]] if onset is not None else truth.evidence[frames])
    return {"lesion_id": lid, "class": cls, "start": int(segs[0][0]), "runs": len(segs),
            "first_call": str(state_names[calls[0]]) if calls else None, "close_view": onset is not None,
            "evidence": ev, "peak_coverage": _nanmax(truth.coverage[frames]), "peak_contrast": _nanmax(truth.contrast[frames]),
            "onset_contrast": _nanmean(truth.contrast[onset:onset + _close_frames(dt)]) if onset is not None else None,
            "time_close_to_correct_s": float(times[after[0]] - times[onset]) if after else None}


def outcome(name: str, truth: Truth, times: np.ndarray, raw: np.ndarray, smoothed: np.ndarray,
            states: list, class_names: list[str], alert_idx, pred_modality=None, skipped_states=None) -> Outcome:
    """``raw``/``smoothed``: (T, K) probabilities; ``states``: AlertState per frame, None where the
    runtime analysed nothing (NaN rows: dropped from frame metrics, they keep their place in time;
    ``skipped_states`` names what the runtime showed there instead, e.g. ``NBI: not analysed``).
    ``pred_modality``: the runtime's per-frame modality, when its log has one."""
    bg = background_index(class_names)
    alert_idx = sorted(set(alert_idx) - {bg})
    lesion_idx = lesion_indices(class_names)
    pos_names = {class_names[i] for i in alert_idx}
    calls_ok = {class_names[i] for i in lesion_idx}
    t_cls = truth.cls.astype(str)
    y = truth.visible & np.isin(t_cls, list(pos_names))
    alert = np.array([bool(s is not None and s.alert) for s in states])
    skipped = skipped_states if skipped_states is not None else [None] * len(states)
    state_names = np.array([s.state if s is not None else (k or MISSING) for s, k in zip(states, skipped)],
                           dtype=object)
    fa = sum(1 for s, e in runs(alert) if not y[s:e].any())
    fa_nl = sum(1 for s, e in runs(alert) if not truth.visible[s:e].any())
    d = np.diff(times) if len(times) > 1 else np.zeros(0)
    dt = float(np.nanmedian(d)) if len(d) and np.isfinite(d).any() else 0.0
    wli = truth.modality.astype(str) == "WLI"
    close = wli & (truth.coverage >= CLOSE_COVERAGE)   # NaN coverage: never close
    lesions, by_id = [], {}
    for lid, cls, s, e in lesion_segments(truth):
        calls = [(i, state_names[i]) for i in range(s, e) if state_names[i] in calls_ok]
        correct = [i for i, c in calls if c == cls]
        lesions.append({"lesion_id": lid, "class": cls, "start": s, "end": e, "positive": cls in pos_names,
                        "alerted": bool(alert[s:e].any()), "first_call": calls[0][1] if calls else None,
                        "time_to_correct_s": float(times[correct[0]] - times[s]) if correct else None})
        by_id.setdefault((lid, cls), []).append((s, e))
    tracks = [_track(lid, cls, segs, truth, times, state_names, close, dt, calls_ok)
              for (lid, cls), segs in by_id.items()]
    duration = float(times[-1] - times[0] + dt) if len(times) else 0.0
    pos_raw, pos_sm = raw[:, alert_idx].sum(1), smoothed[:, alert_idx].sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cls_raw, cls_sm = pos_raw / raw[:, lesion_idx].sum(1), pos_sm / smoothed[:, lesion_idx].sum(1)
    if bg is not None:
        pres_raw, pres_sm = 1.0 - raw[:, bg], 1.0 - smoothed[:, bg]
    else:
        pres_raw = pres_sm = np.full(len(raw), np.nan)
    pm = np.full(len(truth), "", dtype=object) if pred_modality is None else np.asarray(pred_modality, dtype=object)
    return Outcome(name, duration, y, truth.visible.copy(), pos_raw, pos_sm, alert, state_names, fa, lesions,
                   dt=dt, wli=wli, cls=t_cls, coverage=truth.coverage.copy(), evidence=truth.evidence.copy(),
                   contrast=truth.contrast.copy(),
                   cls_raw=cls_raw, cls_smoothed=cls_sm, presence_raw=pres_raw, presence_smoothed=pres_sm,
                   pred_modality=pm, true_modality=truth.modality.astype(str), false_alarms_no_lesion=fa_nl, tracks=tracks,
                   called=np.isin(state_names.astype(str), list(calls_ok)))


def pool(outcomes: list[Outcome]) -> SimpleNamespace:
    """Frame arrays of several outcomes end to end, plus the masks every figure starts from."""
    names = ("y", "visible", "raw", "smoothed", "alert", "states", "wli", "cls", "coverage", "evidence", "contrast",
             "cls_raw", "cls_smoothed", "presence_raw", "presence_smoothed", "called")
    p = SimpleNamespace(**{a: np.concatenate([getattr(o, a) for o in outcomes]) for a in names})
    p.analysed = np.isfinite(p.raw)
    p.scored = p.analysed & p.wli                               # what the WLI student is scored on
    p.close = p.scored & p.visible & (p.coverage >= CLOSE_COVERAGE)
    p.lesions = [les for o in outcomes for les in o.lesions]
    p.tracks = [t for o in outcomes for t in o.tracks]
    return p


def auc(y: np.ndarray, s: np.ndarray) -> float | None:
    """The training core's AUC (pagkd_core.metrics.binary_auc) on the frames with a score; None
    when one side is empty."""
    from pagkd_core.metrics import binary_auc

    ok = np.isfinite(s)
    value = binary_auc(y[ok], s[ok])
    return None if np.isnan(value) else value


def rate(num: int, den: int) -> float | None:
    return num / den if den else None


def median_time(lesions: list[dict], key: str = "time_close_to_correct_s") -> float | None:
    """Median over the lesions, a lesion never called correctly counting as infinitely late
    (so that uncalled lesions cannot flatter it); None when that median is infinite or no lesions."""
    t = np.array([np.inf if les[key] is None else les[key] for les in lesions], float)
    m = float(np.median(t)) if len(t) else np.inf
    return m if np.isfinite(m) else None


def lesion_figures(lesions: list[dict], evidence_median: float | None) -> dict:
    close = [les for les in lesions if les["close_view"]]
    upper = [les for les in close if evidence_median is not None and les["evidence"] is not None
             and les["evidence"] >= evidence_median]
    ok = lambda ls: rate(sum(les["first_call"] == les["class"] for les in ls), len(ls))
    return {"close_view_lesions": len(close), "close_first_call_correct": ok(close),
            "evidence_median": evidence_median, "close_lesions_upper_evidence": len(upper),
            "close_first_call_correct_upper_evidence": ok(upper),
            "time_close_to_correct_median_s": median_time(close),
            "close_never_correct": sum(les["time_close_to_correct_s"] is None for les in close)}


def evidence_median(lesions: list[dict]) -> float | None:
    """Median WLI evidence of the close-view lesions: the split of the 'upper half' target."""
    ev = [les["evidence"] for les in lesions if les["close_view"] and les["evidence"] is not None]
    return float(np.median(ev)) if ev else None


def summarise(outcomes: list[Outcome], ev_median: float | None = None) -> dict:
    """Metrics of one video, or pooled over several (frames and lesions concatenated).
    ``ev_median``: the evidence split for the upper-half figure (default: these lesions' own
    median; pass the pooled one so per-video figures use the same split)."""
    p = pool(outcomes)
    m = p.scored
    y, vis, raw, sm, alert, st = p.y[m], p.visible[m], p.raw[m], p.smoothed[m], p.alert[m], p.states[m]
    lesions = p.lesions
    pos = [les for les in lesions if les["positive"]]
    ttc = [les["time_to_correct_s"] for les in lesions if les["time_to_correct_s"] is not None]
    minutes = sum(o.duration_s for o in outcomes) / 60.0
    alarms = sum(o.false_alarms for o in outcomes)
    nl_minutes = sum(float((~o.visible).sum()) * o.dt for o in outcomes) / 60.0
    nl_alarms = sum(o.false_alarms_no_lesion for o in outcomes)
    nl = p.analysed & ~p.visible
    c = p.close
    return {
        "frames": len(y), "frames_total": len(p.y), "frames_not_analysed": int((~p.analysed).sum()),
        "frames_nbi": int((~p.wli).sum()), "minutes": round(minutes, 3),
        "auc_raw": auc(y, raw), "auc_smoothed": auc(y, sm),
        "auc_lesion_frames_raw": auc(y[vis], raw[vis]), "auc_lesion_frames_smoothed": auc(y[vis], sm[vis]),
        "close_frames": int(c.sum()),
        "auc_class_close_raw": auc(p.y[c], p.cls_raw[c]), "auc_class_close": auc(p.y[c], p.cls_smoothed[c]),
        "auc_presence_raw": auc(vis, p.presence_raw[m]), "auc_presence": auc(vis, p.presence_smoothed[m]),
        "sensitivity": rate(int((alert & y).sum()), int(y.sum())),
        "specificity": rate(int((~alert & ~y).sum()), int((~y).sum())),
        "lesions": len(lesions), "lesions_distinct": len(p.tracks), "positive_lesions": len(pos),
        "lesion_sensitivity": rate(sum(les["alerted"] for les in pos), len(pos)),
        "lesion_first_call_correct": rate(sum(les["first_call"] == les["class"] for les in lesions), len(lesions)),
        "lesion_no_call": rate(sum(les["first_call"] is None for les in lesions), len(lesions)),
        **lesion_figures(p.tracks, evidence_median(p.tracks) if ev_median is None else ev_median),
        "false_alarms": int(alarms), "false_alarms_per_min": alarms / minutes if minutes else None,
        "no_lesion_minutes": nl_minutes, "false_alarms_no_lesion": int(nl_alarms),
        "false_alarms_no_lesion_per_min": nl_alarms / nl_minutes if nl_minutes else None,
        "frac_call_no_lesion": float(p.called[nl].mean()) if nl.any() else None,
        "frac_uncertain_no_lesion": float((p.states[nl] == "uncertain").mean()) if nl.any() else None,
        "time_to_correct_call_median_s": float(np.median(ttc)) if ttc else None,
        "time_to_correct_call_mean_s": float(np.mean(ttc)) if ttc else None,
        "lesions_never_correct": sum(les["time_to_correct_s"] is None for les in lesions),
        "frac_uncertain": float((st == "uncertain").mean()) if len(st) else None,
        "frac_no_call": float((st == "no call").mean()) if len(st) else None,
    }


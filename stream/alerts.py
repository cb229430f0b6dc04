"""Alert state machine: turns smoothed probabilities into a call a clinician can act on.

Per frame the machine is in one of these states:
  * a class label (e.g. ``adenoma``): the top class has held confidence >= ``threshold`` for at
    least ``min_frames`` frames and ``min_duration_s`` seconds, and is kept while its confidence
    stays >= ``threshold - hysteresis`` (so it does not flicker at the threshold);
  * ``uncertain``: no label is held and the top confidence lies in the uncertain band
    ``[uncertain_low, threshold)`` - the model is torn, say so rather than guess;
  * ``no call``: nothing to say - confidence below the band, or a label still waiting out its
    minimum duration (withholding short bursts removes most false alarms);
  * ``no lesion`` (only for a model with a ``no_lesion`` output, pagkd_core.outputs): no lesion
    is in view. No alert, and none of the states above, so an empty stretch of colon reads
    quietly instead of flickering between "uncertain" and "no call".
``alert`` is true while the state is one of ``alert_classes`` (default: every lesion class but
the first, i.e. the neoplastic NICE 2/3 classes).

A model with a ``no_lesion`` output is read in two steps. Presence: P(lesion) = 1 - P(no_lesion)
must reach ``presence`` to enter "a lesion is in view" and stays there down to
``presence - presence_hysteresis`` (hysteresis, so one noisy frame neither starts nor ends a
lesion). Class: while a lesion is in view, the lesion-class probabilities are renormalised over
the lesion classes (P(class | lesion)) and go through the label / uncertain / no-call logic
above; ``confidence`` is then that renormalised top-class value. Why renormalise: a lesion half
in view has P(lesion) ~ 0.6, and its class must not look "uncertain" only because part of the
mass sits on the background. Leaving the lesion drops the held label: the next lesion needs its
own call.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from pagkd_core.outputs import background_index, lesion_classes

UNCERTAIN = "uncertain"
NO_CALL = "no call"
NO_LESION_STATE = "no lesion"  # the model's no_lesion output says nothing is in view
NBI_NOT_ANALYSED = "NBI: not analysed"  # an NBI frame with no NBI model beside the student (stream.routing)
QUIET_STATES = (NO_CALL, NO_LESION_STATE, NBI_NOT_ANALYSED)  # states with nothing to act on


def shown_state(state: str, modality: str = "WLI") -> str:
    """A state as people read it (overlay, UI): a call on an NBI frame, made by the NBI teacher
    and not the student, says so."""
    return f"NBI: {state}" if modality == "NBI" and not state.startswith("NBI") else state


@dataclass(frozen=True)
class AlertConfig:
    class_names: tuple[str, ...] = ("hyperplastic", "adenoma")
    threshold: float = 0.7           # enter a label at this top-class confidence
    hysteresis: float = 0.1          # ... and keep it down to threshold - hysteresis
    uncertain_low: float = 0.5       # confidence in [uncertain_low, threshold) is "uncertain"
    min_frames: int = 3              # consecutive confident frames before a label is shown
    min_duration_s: float = 0.0      # ... and at least this long (both must hold)
    alert_classes: tuple[str, ...] | None = None  # None: all lesion classes but the first
    presence: float = 0.5            # with a no_lesion output: P(lesion) that enters "lesion in view"
    presence_hysteresis: float = 0.15  # ... kept down to presence - presence_hysteresis

    def __post_init__(self):
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if self.alert_classes is not None:
            object.__setattr__(self, "alert_classes", tuple(self.alert_classes))
        self.validate()

    def validate(self) -> None:
        if len(self.class_names) < 2:
            raise ValueError("alerts need at least two class names")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if not 0 <= self.hysteresis < self.threshold:
            raise ValueError(f"hysteresis must be in [0, threshold), got {self.hysteresis}")
        if not 0 <= self.uncertain_low <= self.threshold:
            raise ValueError(f"uncertain_low must be in [0, threshold], got {self.uncertain_low}")
        if self.min_frames < 1 or self.min_duration_s < 0:
            raise ValueError("min_frames must be >= 1 and min_duration_s >= 0")
        if not 0 < self.presence <= 1 or not 0 <= self.presence_hysteresis < self.presence:
            raise ValueError("presence must be in (0, 1] and presence_hysteresis in [0, presence)")
        lesions = lesion_classes(self.class_names)
        unknown = set(self.alert_classes or ()) - set(lesions)
        if unknown:
            raise ValueError(f"alert_classes {sorted(unknown)} are not among the lesion classes {lesions}")

    @property
    def background(self) -> int | None:
        """Index of the no_lesion output, None for a lesion-only model."""
        return background_index(self.class_names)

    @property
    def alert_indices(self) -> frozenset[int]:
        names = self.alert_classes if self.alert_classes is not None else lesion_classes(self.class_names)[1:]
        return frozenset(self.class_names.index(n) for n in names)

    def alert_probability(self, probs: Sequence[float]) -> float:
        """P(an alert class), given a lesion is in view when the model has a no_lesion output
        (the quantity the threshold acts on for two lesion classes; the UI's timeline)."""
        p = np.asarray(probs, dtype=np.float64)
        bg = self.background
        mass = float(p.sum()) if bg is None else 1.0 - float(p[bg])
        return float(p[sorted(self.alert_indices)].sum()) / max(mass, 1e-9)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AlertState:
    state: str                 # a class name, "uncertain", "no call" or "no lesion"
    label: int | None          # index of the called class, None unless a label is held
    confidence: float          # top-class smoothed confidence (over the lesion classes; P(no lesion) in "no lesion")
    alert: bool
    since: float | None        # time the current state began
    changed: bool = False      # the state differs from the previous frame's
    frames_in_state: int = 1
    extra: dict = field(default_factory=dict)


class AlertMachine:
    """Feed ``update(smoothed_probs, t)`` once per frame (``t`` in seconds; without it only
    ``min_frames`` applies); ``configure(**changes)`` at any time, from any thread."""

    def __init__(self, cfg: AlertConfig | None = None, **overrides):
        self.cfg = replace(cfg or AlertConfig(), **overrides)
        self._lock = threading.Lock()
        self.reset()

    def configure(self, **changes) -> AlertConfig:
        """Change parameters live (validated; the held label and timers are kept)."""
        unknown = set(changes) - AlertConfig.field_names()
        if unknown:
            raise ValueError(f"unknown alert parameter(s) {sorted(unknown)}; known: {sorted(AlertConfig.field_names())}")
        with self._lock:
            self.cfg = replace(self.cfg, **changes)
        return self.cfg

    def reset(self) -> None:
        self._present = False                  # a lesion is in view (no_lesion models only)
        self._clear_call()
        self._last: AlertState | None = None

    def _clear_call(self) -> None:
        self._held: int | None = None          # label currently shown (index into the model's classes)
        self._cand: int | None = None          # label waiting out its minimum duration
        self._cand_since: float | None = None
        self._cand_frames = 0

    def update(self, smoothed: Sequence[float], t: float | None = None) -> AlertState:
        p = np.asarray(smoothed, dtype=np.float64)
        with self._lock:
            cfg = self.cfg
            if p.shape != (len(cfg.class_names),):
                raise ValueError(f"expected {len(cfg.class_names)} class probabilities, got shape {p.shape}")
            bg = cfg.background
            if bg is not None:
                p_lesion = 1.0 - float(p[bg])
                enter = cfg.presence - (cfg.presence_hysteresis if self._present else 0.0)
                self._present = p_lesion >= enter
                if not self._present:
                    self._clear_call()
                    return self._emit(NO_LESION_STATE, None, float(p[bg]), False, t)
                # The class call is made among the lesion classes, P(class | lesion in view).
                p = np.where(np.arange(p.size) == bg, 0.0, p) / max(p_lesion, 1e-9)
            top = int(p.argmax())
            conf = float(p[top])
            # a held label survives down to the exit threshold (hysteresis)
            if self._held is not None and p[self._held] < cfg.threshold - cfg.hysteresis:
                self._held = None
            if self._held is None or top != self._held:
                self._track_candidate(top if conf >= cfg.threshold else None, t)
                if self._cand is not None and self._confirmed(cfg, t):
                    self._held, self._cand = self._cand, None
            if self._held is not None:
                name, label = cfg.class_names[self._held], self._held
            elif self._cand is None and cfg.uncertain_low <= conf < cfg.threshold:
                name, label = UNCERTAIN, None
            else:
                name, label = NO_CALL, None
            return self._emit(name, label, conf, label is not None and label in cfg.alert_indices, t)

    def not_analysed(self, t: float | None = None) -> AlertState:
        """A frame no model read (an NBI frame without an NBI model): state "NBI: not analysed",
        and the call is dropped - when analysis resumes, a call needs fresh evidence."""
        with self._lock:
            self._present = False
            self._clear_call()
            return self._emit(NBI_NOT_ANALYSED, None, 0.0, False, t)

    def _track_candidate(self, cand: int | None, t: float | None) -> None:
        if cand is None:
            self._cand, self._cand_since, self._cand_frames = None, None, 0
        elif cand == self._cand:
            self._cand_frames += 1
        else:
            self._cand, self._cand_since, self._cand_frames = cand, t, 1

    def _confirmed(self, cfg: AlertConfig, t: float | None) -> bool:
        if self._cand_frames < cfg.min_frames:
            return False
        if cfg.min_duration_s > 0 and t is not None and self._cand_since is not None:
            return t - self._cand_since >= cfg.min_duration_s
        return True

    def _emit(self, name: str, label: int | None, conf: float, alert: bool, t: float | None) -> AlertState:
        last = self._last
        if last is not None and last.state == name:
            state = AlertState(name, label, conf, alert, last.since, False, last.frames_in_state + 1)
        else:
            state = AlertState(name, label, conf, alert, t, last is not None, 1)
        self._last = state
        return state

    def run(self, smoothed_seq, times=None) -> list[AlertState]:
        """Apply to a whole (T, K) sequence from a fresh state (offline evaluation)."""
        self.reset()
        times = times if times is not None else [None] * len(smoothed_seq)
        return [self.update(p, t) for p, t in zip(smoothed_seq, times)]

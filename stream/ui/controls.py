"""The page's sliders, and the smoother and alert configs they stand for.

A student's own ``alert_setting`` (stream.config) sets the sliders' starting values:
``Controls.from_configs`` maps its configs onto them (and onto the two values without a slider).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pagkd_core.outputs import lesion_classes
from stream.alerts import AlertConfig
from stream.smoothing import SmoothingConfig

SMOOTHING_MODES = ("none", "ema", "window", "hmm")
# Strength 1 (strongest) on each smoother's knob; strength 0 is no smoothing (ema alpha 1, a
# 1-frame window, hmm stay 1/K). smoothing_config maps strength onto the knob, from_configs back.
EMA_SPAN, WINDOW_SPAN, HMM_STAY_MAX = 0.95, 29, 0.995


@dataclass(frozen=True)
class Controls:
    threshold: float = 0.7  # top-class smoothed confidence that enters a call
    uncertain_band: float = 0.2  # width of the band below the threshold shown as "uncertain" (no call)
    smoothing: str = "ema"  # none | ema | window | hmm
    strength: float = 0.5  # 0: no smoothing .. 1: strongest
    min_duration_s: float = 0.2  # a call must hold this long before it is shown
    # No slider for these: 1 frame lets the minimum duration alone gate a call; a student's own
    # setting, chosen with the alert machine's defaults, brings its min_frames and presence here.
    min_frames: int = 1
    presence: float = AlertConfig.presence  # P(lesion) that enters "lesion in view" (no_lesion models)

    @classmethod
    def from_configs(cls, smoothing: SmoothingConfig, alerts: AlertConfig, num_classes: int) -> Controls:
        """The controls that stand for these configs: the smoother's own knob onto ``strength`` (the
        inverse of ``smoothing_config``; its other parameters, e.g. an HMM's temperature, have no
        slider and are left out), the uncertain band as the distance from ``uncertain_low``."""
        knob, lo = smoothing.build().params, 1.0 / num_classes
        strength = cls.strength  # "none": no knob
        if smoothing.mode == "ema":
            strength = (1.0 - knob["alpha"]) / EMA_SPAN
        elif smoothing.mode == "window":
            strength = (knob["size"] - 1) / WINDOW_SPAN
        elif smoothing.mode == "hmm":
            strength = (knob["stay"] - lo) / (HMM_STAY_MAX - lo)
        return cls(threshold=alerts.threshold, uncertain_band=round(alerts.threshold - alerts.uncertain_low, 4),
                   smoothing=smoothing.mode, strength=round(min(max(strength, 0.0), 1.0), 4),
                   min_duration_s=alerts.min_duration_s, min_frames=alerts.min_frames, presence=alerts.presence)

    def validate(self, num_classes: int) -> Controls:
        if self.smoothing not in SMOOTHING_MODES:
            raise ValueError(f"smoothing must be one of {', '.join(SMOOTHING_MODES)}, got {self.smoothing!r}")
        if not 0 <= self.strength <= 1 or not 0 <= self.uncertain_band <= 1 or self.min_duration_s < 0:
            raise ValueError("strength and uncertain band must be in [0, 1], minimum alert duration >= 0")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        return self

    def smoothing_config(self, num_classes: int) -> SmoothingConfig:
        """Strength 0..1 onto each smoother's own knob (``num_classes``: the model's outputs).
        Values are rounded to 4 decimals: the page shows them, and a log names them."""
        s = min(max(float(self.strength), 0.0), 1.0)
        if self.smoothing == "ema":
            return SmoothingConfig("ema", {"alpha": round(1.0 - EMA_SPAN * s, 4)})  # 1 = raw, 0.05 = ~20-frame memory
        if self.smoothing == "window":
            return SmoothingConfig("window", {"size": 1 + round(WINDOW_SPAN * s)})  # up to 30 frames (1 s at 30 fps)
        if self.smoothing == "hmm":
            lo = 1.0 / num_classes  # stay = 1/K: no memory at all
            return SmoothingConfig("hmm", {"stay": round(lo + (HMM_STAY_MAX - lo) * s, 4)})
        return SmoothingConfig("none")

    def alert_config(self, class_names: Sequence[str]) -> AlertConfig:
        """The alert machine's config for a model with these classes. A call is made among the
        lesion classes (a no_lesion output is not one of them, stream.alerts), whose top-class
        confidence is never below 1/K: a threshold there means "always call", and the minimum
        duration alone gates a call."""
        th = min(max(float(self.threshold), 1.0 / len(lesion_classes(class_names))), 1.0)
        return AlertConfig(
            class_names=tuple(class_names),
            threshold=th,
            uncertain_low=max(th - float(self.uncertain_band), 0.0),
            hysteresis=min(0.1, th / 2),
            min_frames=self.min_frames,
            min_duration_s=max(float(self.min_duration_s), 0.0),
            presence=self.presence,
        )

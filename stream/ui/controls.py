"""The page's sliders, and the smoother and alert configs they stand for."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pagkd_core.outputs import lesion_classes
from stream.alerts import AlertConfig
from stream.smoothing import SmoothingConfig

SMOOTHING_MODES = ("none", "ema", "window", "hmm")


@dataclass(frozen=True)
class Controls:
    threshold: float = 0.7  # top-class smoothed confidence that enters a call
    uncertain_band: float = 0.2  # width of the band below the threshold shown as "uncertain" (no call)
    smoothing: str = "ema"  # none | ema | window | hmm
    strength: float = 0.5  # 0: no smoothing .. 1: strongest
    min_duration_s: float = 0.2  # a call must hold this long before it is shown

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
            return SmoothingConfig("ema", {"alpha": round(1.0 - 0.95 * s, 4)})  # 1 = raw, 0.05 = ~20-frame memory
        if self.smoothing == "window":
            return SmoothingConfig("window", {"size": 1 + round(29 * s)})  # up to 30 frames (1 s at 30 fps)
        if self.smoothing == "hmm":
            lo = 1.0 / num_classes  # stay = 1/K: no memory at all
            return SmoothingConfig("hmm", {"stay": round(lo + (0.995 - lo) * s, 4)})
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
            min_frames=1,
            min_duration_s=max(float(self.min_duration_s), 0.0),
        )

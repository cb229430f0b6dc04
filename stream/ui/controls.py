"""The page's sliders, and how they map onto the runtime's smoothing spec and alert parameters."""

from __future__ import annotations

from dataclasses import dataclass

SMOOTHING_MODES = ("none", "ema", "window", "hmm")


@dataclass(frozen=True)
class Controls:
    threshold: float = 0.7  # top-class smoothed confidence that enters a call
    uncertain: float = 0.2  # band below the threshold shown as "uncertain" (no call)
    smoothing: str = "ema"  # none | ema | window | hmm
    strength: float = 0.5  # 0: no smoothing .. 1: strongest
    min_alert_s: float = 0.2  # a call must hold this long before it is shown

    def validate(self, num_classes: int) -> Controls:
        if self.smoothing not in SMOOTHING_MODES:
            raise ValueError(f"smoothing must be one of {', '.join(SMOOTHING_MODES)}, got {self.smoothing!r}")
        if not 0 <= self.strength <= 1 or not 0 <= self.uncertain <= 1 or self.min_alert_s < 0:
            raise ValueError("strength and uncertain band must be in [0, 1], minimum alert duration >= 0")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        return self

    def smoothing_spec(self, num_classes: int) -> str:
        """Strength 0..1 onto each smoother's own knob, as a stream.smoothing spec string."""
        s = min(max(float(self.strength), 0.0), 1.0)
        if self.smoothing == "ema":
            return f"ema:alpha={1.0 - 0.95 * s:.4f}"  # alpha 1 = raw, 0.05 = ~20-frame memory
        if self.smoothing == "window":
            return f"window:size={1 + round(29 * s)}"  # up to 30 frames (1 s at 30 fps)
        if self.smoothing == "hmm":
            lo = 1.0 / num_classes  # stay = 1/K: no memory at all
            return f"hmm:stay={lo + (0.995 - lo) * s:.4f}"
        return "none"

    def alert_params(self, num_classes: int) -> dict:
        """stream.alerts.AlertConfig fields. ``num_classes``: the classes a call is made among
        (the lesion classes: a no_lesion output is not one of them, stream.alerts). The top-class
        confidence is never below 1/K, so a threshold there means "always call"; the minimum
        duration alone gates a call."""
        th = min(max(float(self.threshold), 1.0 / num_classes), 1.0)
        return {
            "threshold": th,
            "uncertain_low": max(th - float(self.uncertain), 0.0),
            "hysteresis": min(0.1, th / 2),
            "min_frames": 1,
            "min_duration_s": max(float(self.min_alert_s), 0.0),
        }

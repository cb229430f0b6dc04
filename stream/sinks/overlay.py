"""Annotations drawn on a copy of the picture: the raw video itself is never touched or held.

``draw_overlay`` paints the call (class name, "uncertain" or "no call"), one confidence bar
per class and, while an alert is on, a red border. "no lesion" is written small and grey with
no confidence: an empty view is the normal case and must not draw the eye. An NBI frame read by
the NBI teacher has its call prefixed "NBI:"; one no model read says "NBI: not analysed" (grey,
no bars). ``Overlay`` is the sink that draws a stream's results for its picture outputs (a
recorder, the display). On a live stream every incoming frame is annotated at once with the
newest result known, so the video is never delayed by inference; only the annotations lag (by
the pipeline latency, which the stats report).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from stream.alerts import NO_LESION_STATE, QUIET_STATES, UNCERTAIN, shown_state
from stream.frame import Frame

if TYPE_CHECKING:
    from stream.result import Result
    from stream.sinks.record import Recorder

ALERT_RGB = (230, 30, 30)
UNCERTAIN_RGB = (240, 190, 0)
CALL_RGB = (40, 200, 80)
IDLE_RGB = (170, 170, 170)


@dataclass
class Annotation:
    """What the overlay needs from one result."""

    state: str  # class name | "uncertain" | "no call" | "no lesion" | "NBI: not analysed"
    alert: bool
    confidence: float
    smoothed: Sequence[float] | None  # None: no model read the frame
    class_names: Sequence[str]
    frame_index: int = -1  # the frame the annotation was computed on
    modality: str = "WLI"

    @classmethod
    def of(cls, result: Result, class_names: Sequence[str]) -> Annotation:
        st, smoothed = result.state, result.smoothed
        return cls(st.state, bool(st.alert), float(st.confidence), None if smoothed is None else smoothed.tolist(),
                   class_names, result.frame.index, result.modality)  # fmt: skip


def draw_overlay(rgb: np.ndarray, ann: Annotation | None) -> np.ndarray:
    """A new annotated array; ``rgb`` is left as it is."""
    out = rgb.copy()
    if ann is None:
        return out
    h, w = out.shape[:2]
    s = max(h, 240) / 720.0  # sizes follow the picture so 480p and 4K both read well
    font, thick = cv2.FONT_HERSHEY_SIMPLEX, max(1, round(2 * s))
    if ann.alert:
        b = max(3, round(12 * s))
        cv2.rectangle(out, (b // 2, b // 2), (w - 1 - b // 2, h - 1 - b // 2), ALERT_RGB, b)
    colour = (
        ALERT_RGB
        if ann.alert
        else UNCERTAIN_RGB
        if ann.state == UNCERTAIN
        else IDLE_RGB
        if ann.state in QUIET_STATES
        else CALL_RGB
    )
    text = ann.state if ann.state in (UNCERTAIN, *QUIET_STATES) else f"{ann.state} {ann.confidence:.2f}"
    text = shown_state(text, ann.modality)
    scale = (0.7 if ann.state == NO_LESION_STATE else 1.2) * s
    # Top right: endoscope processors (and the synthetic generator) print their own text top left.
    (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
    tx, y = w - tw - round(30 * s), round(56 * s)
    cv2.rectangle(out, (tx - 6, y - th - 8), (tx + tw + 6, y + 8), (0, 0, 0), -1)
    cv2.putText(out, text, (tx, y), font, scale, colour, thick, cv2.LINE_AA)
    x = round(24 * s)
    # One bar per class: the smoothed probability the call is based on.
    bar_w, bar_h = round(220 * s), max(6, round(16 * s))
    for i, (name, p) in enumerate(zip(ann.class_names, () if ann.smoothed is None else ann.smoothed)):
        by = h - round(30 * s) - (len(ann.class_names) - 1 - i) * (bar_h + round(10 * s))
        cv2.rectangle(out, (x, by - bar_h), (x + bar_w, by), (40, 40, 40), -1)
        cv2.rectangle(
            out,
            (x, by - bar_h),
            (x + int(bar_w * float(np.clip(p, 0, 1))), by),
            ALERT_RGB if ann.alert and name == ann.state else (90, 160, 230),
            -1,
        )
        cv2.putText(
            out,
            name,
            (x + bar_w + 8, by - 2),
            font,
            0.5 * s,
            (230, 230, 230),
            max(1, thick // 2),
            cv2.LINE_AA,
        )
    return out


PictureOutput = Callable[[Frame, np.ndarray], None]  # gets each annotated picture; must not block


class Overlay:
    """Sink: one stream's calls drawn on its pictures, handed to its picture outputs (the
    stream's recorder, then the pipeline's display outputs, a list it shares).

    Replay: ``write`` draws each result on its own frame (``result.annotated``). Live: ``tap``
    draws every frame as it arrives (the reader thread) with the newest result ``write`` left.
    """

    # Live: frames past the latest result's after which its annotation is taken down (2 s at
    # 30 fps; a slow engine's results come every few frames, far within this).
    stale_frames = 60

    def __init__(self, class_names: Sequence[str], recorder: Recorder | None, displays: list[PictureOutput],
                 live: bool):  # fmt: skip
        self.class_names, self.recorder, self.displays, self.live = list(class_names), recorder, displays, live
        self._latest: Annotation | None = None
        self._lock = threading.Lock()

    def _emit(self, frame: Frame, rgb: np.ndarray) -> None:
        if self.recorder is not None:
            self.recorder.write(frame, rgb)
        for show in self.displays:
            show(frame, rgb)

    def write(self, result: Result) -> None:
        ann = Annotation.of(result, self.class_names)
        if self.live:
            with self._lock:
                self._latest = ann
            return
        result.annotated = draw_overlay(result.frame.rgb, ann)
        self._emit(result.frame, result.annotated)

    def tap(self, frame: Frame) -> None:
        with self._lock:
            ann = self._latest
        if ann is not None and frame.index - ann.frame_index > self.stale_frames:
            # No result for this many frames: analysis stopped (an engine error, pause) or stalls.
            # A label or alert border left on live video would claim what nobody analysed.
            ann = None
        self._emit(frame, draw_overlay(frame.rgb, ann))

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()

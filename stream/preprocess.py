"""Frames -> model input: find the endoscope's content area, crop, resize, normalise.

Endoscope video shows the picture inside a round or octagonal field on a black border,
often with text in the border. Only the field is fed to the model. The field's box is
detected on a subsampled copy of the frame, kept stable (a new box must be seen several
times in a row before it replaces the old one, so one dark frame cannot move it), and
re-detected at once when the frame size changes.

One batched path: ``Preprocessor(frames) -> (N,3,H,W) float32`` on the engine's device.
On CPU the crops are resized with OpenCV on uint8 (cheapest); on a GPU the whole frames
are uploaded once and cropped+resized together with ``roi_align``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from stream.frame import Frame


@dataclass(frozen=True)
class ContentArea:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) in frame pixels
    shape: str  # round | octagon | rect
    fill: float  # field area / box area (round ~0.79, octagon ~0.9, rect 1)

    def close_to(self, other: ContentArea, tol_px: float) -> bool:
        return max(abs(a - b) for a, b in zip(self.box, other.box)) <= tol_px


def detect_content_area(
    rgb: np.ndarray, black_level: int = 30, min_fraction: float = 0.05
) -> ContentArea | None:
    """The largest bright region's box, or None when the frame is too dark to tell."""
    h, w = rgb.shape[:2]
    step = max(1, min(h, w) // 160)
    # Brightest channel: dark red mucosa is still clearly above the black border.
    small = rgb[::step, ::step].max(axis=2)
    mask = (small > black_level).astype(np.uint8)
    # Opening removes sensor noise and thin overlay text in the border.
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, bw, bh, area = (int(v) for v in stats[best])
    if area < min_fraction * mask.size:
        return None
    # The convex hull fills the dark lumen and shadows inside the field for the shape measure.
    contours, _ = cv2.findContours(
        (labels == best).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    hull = cv2.convexHull(np.concatenate(contours))
    fill = float(cv2.contourArea(hull)) / max(1.0, float((bw - 1) * (bh - 1)))
    shape = "rect" if fill > 0.97 else "octagon" if fill > 0.815 else "round"
    box = (x * step, y * step, min(w, (x + bw) * step), min(h, (y + bh) * step))
    return ContentArea(box, shape, round(min(fill, 1.0), 3))


class ContentTracker:
    """One stream's content area, stable over time and re-detected on change.

    Detection runs every ``every`` frames; a box that differs from the current one by more
    than ``tolerance`` of the frame size replaces it only after ``confirm`` agreeing
    detections. A frame-size change resets everything.
    """

    def __init__(self, every: int = 15, tolerance: float = 0.03, confirm: int = 3, black_level: int = 30):
        self.every, self.tolerance, self.confirm, self.black_level = every, tolerance, confirm, black_level
        self.area: ContentArea | None = None
        self.changes = 0
        self._size: tuple[int, int] | None = None
        self._count = 0
        self._pending: tuple[ContentArea, int] | None = None

    def _full(self, h: int, w: int) -> ContentArea:
        return ContentArea((0, 0, w, h), "rect", 1.0)

    def update(self, rgb: np.ndarray) -> ContentArea:
        h, w = rgb.shape[:2]
        if (h, w) != self._size:
            self._size, self._count, self._pending = (h, w), 0, None
            self.area = detect_content_area(rgb, self.black_level) or self._full(h, w)
            self.changes += 1
            return self.area
        self._count += 1
        if self._count % self.every:
            return self.area
        cand = detect_content_area(rgb, self.black_level)
        tol = self.tolerance * max(h, w)
        if cand is None or cand.close_to(self.area, tol):
            self._pending = None
        elif self._pending and cand.close_to(self._pending[0], tol):
            self._pending = (cand, self._pending[1] + 1)
            if self._pending[1] >= self.confirm:
                self.area, self._pending = cand, None
                self.changes += 1
        else:
            self._pending = (cand, 1)
        return self.area


class Preprocessor:
    """Batched crop + resize + normalise for one model input size and normalisation."""

    def __init__(
        self,
        input_size: tuple[int, int],
        mean,
        std,
        device: str = "cpu",
        detect: bool = True,
        detect_every: int = 15,
        backend: str = "auto",
    ):
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.device = torch.device(device)
        self.detect = detect
        self.detect_every = detect_every
        self.backend = ("torch" if self.device.type == "cuda" else "cv2") if backend == "auto" else backend
        if self.backend not in ("cv2", "torch"):
            raise ValueError(f"preprocess backend must be auto, cv2 or torch, got {backend!r}")
        # Fold /255, mean and std into one multiply-add.
        m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
        s = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
        self._np_scale, self._np_shift = 1.0 / (255.0 * s), -m / s
        self._scale = torch.from_numpy(self._np_scale).to(self.device)
        self._shift = torch.from_numpy(self._np_shift).to(self.device)
        self.trackers: dict[str, ContentTracker] = {}

    def area(self, frame: Frame) -> ContentArea:
        if not self.detect:
            h, w = frame.size
            return ContentArea((0, 0, w, h), "rect", 1.0)
        tracker = self.trackers.setdefault(frame.stream_id, ContentTracker(every=self.detect_every))
        return tracker.update(frame.rgb)

    def __call__(self, frames: list[Frame]) -> torch.Tensor:
        boxes = [self.area(f).box for f in frames]
        if self.backend == "cv2":
            return self._cv2(frames, boxes)
        return self._torch(frames, boxes)

    def _cv2(self, frames: list[Frame], boxes) -> torch.Tensor:
        h, w = self.input_size
        out = np.empty((len(frames), h, w, 3), np.uint8)
        for i, (f, (x0, y0, x1, y1)) in enumerate(zip(frames, boxes)):
            crop = f.rgb[y0:y1, x0:x1]
            # Area averaging (no aliasing when shrinking, like training's antialiased resize).
            # OpenCV's area resize is about twice as fast at a whole factor, so shrink by the
            # largest whole factor first and finish with a factor below 2.
            k = min(crop.shape[0] // h, crop.shape[1] // w)
            if k >= 2:
                dy, dx = crop.shape[0] % k, crop.shape[1] % k  # trim the remainder evenly (< k px)
                crop = crop[
                    dy // 2 : crop.shape[0] - (dy - dy // 2), dx // 2 : crop.shape[1] - (dx - dx // 2)
                ]
                crop = cv2.resize(
                    crop, (crop.shape[1] // k, crop.shape[0] // k), interpolation=cv2.INTER_AREA
                )
            interp = cv2.INTER_AREA if crop.shape[0] >= h else cv2.INTER_LINEAR
            cv2.resize(crop, (w, h), dst=out[i], interpolation=interp)
        # numpy, not torch, for this small elementwise step: torch's OpenMP workers cost more
        # than the work here, and far more when other processes share the cores.
        x = out.transpose(0, 3, 1, 2).astype(np.float32)
        x *= self._np_scale
        x += self._np_shift
        return torch.from_numpy(x).to(self.device)

    def _torch(self, frames: list[Frame], boxes) -> torch.Tensor:
        from torchvision.ops import roi_align

        h, w = self.input_size
        out = torch.empty((len(frames), 3, h, w), dtype=torch.float32, device=self.device)
        # Frames of one size go up together; roi_align then crops and resizes them in one call,
        # averaging ceil(box/output) samples per output pixel like an area resize.
        groups: dict[tuple, list[int]] = {}
        for i, f in enumerate(frames):
            groups.setdefault(f.rgb.shape, []).append(i)
        for idx in groups.values():
            u8 = torch.from_numpy(np.stack([frames[i].rgb for i in idx]))
            if self.device.type == "cuda":
                u8 = u8.pin_memory()
            x = u8.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
            rois = torch.tensor(
                [[j, *boxes[i]] for j, i in enumerate(idx)], dtype=torch.float32, device=self.device
            )
            crops = roi_align(x, rois, (h, w), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
            out[idx] = crops * self._scale + self._shift
        return out

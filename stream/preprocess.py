"""Frames -> model input: find the endoscope's content area, crop, resize, normalise.

Endoscope video shows the picture inside a round or octagonal field on a black border,
often with text in the border. Only the field is fed to the model. The field's box is
detected on a subsampled copy of the frame, kept stable (a new box must be seen several
times in a row before it replaces the old one, so one dark frame cannot move it), and
re-detected at once when the frame size changes.

``Preprocessor(frame) -> (3,H,W) float32``: one frame's model input, a numpy array for a CPU
engine and a tensor on the engine's GPU otherwise (the batcher stacks whichever it gets, so
nothing crosses between numpy and torch on the way). A decoded picture (files, devices, network streams) is cropped, scaled and converted to RGB
in one swscale pass straight from the decoder's planes (``PictureCropper``): only the content
area is read and the colour conversion runs at model size, so the full-size RGB frame is never
made unless a sink wants it. RGB arrays (folders, the synthetic generator, browser pictures)
are resized with OpenCV on uint8 on CPU; on a GPU they are uploaded once and cropped+resized
together with ``roi_align``. Normalisation runs on the engine's device. What the student's
metadata asks of its input (mean, std, a transposed picture) comes through
``Preprocessor.for_model``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from pagkd_core.student import input_transform
from stream.frame import Frame
from stream.picture_graph import picture_graph


@dataclass(frozen=True)
class ContentArea:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) in frame pixels
    shape: str  # round | octagon | rect
    fill: float  # field area / box area (round ~0.79, octagon ~0.9, rect 1)

    def close_to(self, other: ContentArea, tol_px: float) -> bool:
        return max(abs(a - b) for a, b in zip(self.box, other.box)) <= tol_px


def detect_content_area(
    image: np.ndarray | Frame, black_level: int = 30, min_fraction: float = 0.05
) -> ContentArea | None:
    """The largest bright region's box, or None when the frame is too dark to tell.

    ``image``: an HxWx3 RGB array or a Frame (a decoded picture is subsampled from its own
    planes, without converting the full frame)."""
    frame = image if isinstance(image, Frame) else Frame(0, None, 0.0, image)
    h, w = frame.size
    step = max(1, min(h, w) // 160)
    # Brightest channel: dark red mucosa is still clearly above the black border. (Two
    # elementwise maxima: ~40x faster than numpy's max over the last, 3-long axis.)
    thumb = frame.thumbnail(step)
    small = np.maximum(np.maximum(thumb[..., 0], thumb[..., 1]), thumb[..., 2])
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

    def update(self, frame: Frame | np.ndarray) -> ContentArea:
        """The content area for this frame (a Frame or an HxWx3 RGB array)."""
        frame = frame if isinstance(frame, Frame) else Frame(0, None, 0.0, frame)
        h, w = frame.size
        if (h, w) != self._size:
            self._size, self._count, self._pending = (h, w), 0, None
            self.area = detect_content_area(frame, self.black_level) or self._full(h, w)
            self.changes += 1
            return self.area
        self._count += 1
        if self._count % self.every:
            return self.area
        cand = detect_content_area(frame, self.black_level)
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


class PictureCropper:
    """Crop + area-resize + RGB conversion of one stream's decoded pictures in one pass.

    An FFmpeg filter graph: ``crop`` (moves plane pointers, copies nothing) -> ``scale``
    (area averaging, converting to RGB at the output size) -> planar RGB (``gbrp``). For a
    whole 720p frame to 96x96 this is ~0.3-0.45 ms of CPU, against ~0.45 ms to convert the
    frame to RGB plus ~1.2 ms to crop and resize it with OpenCV (2-core dev machine). The colour
    conversion is swscale's, as in ``Frame.rgb``. Planar output gives the same bytes as packed
    rgb24 at about half the CPU at 224 px (swscale's packed full-chroma output path has no SIMD;
    0.42 against 0.78 ms on the loaded dev machine, 0.27 against 0.35 ms at 96 px), and its
    planes are the model's channel planes. The graph is rebuilt when the picture's size, format
    or colour tags, the box or the output size change. One per stream: a graph is not shared
    between threads.
    """

    def __init__(self):
        self._graph = None
        self._key: tuple | None = None
        self.error: str | None = None
        self.unsupported = 0  # pictures this FFmpeg could not crop+scale (handed back as RGB)

    def __call__(self, frame: Frame, box: tuple[int, int, int, int], out: np.ndarray) -> bool:
        """Write ``box`` of ``frame.picture`` as RGB into ``out`` ((h, w, 3) uint8), one colour
        plane at a time: a view whose channels are contiguous planes (``planar.transpose(1, 2,
        0)``) is filled without any interleaving. False when this FFmpeg cannot build the graph
        for the picture (an exotic pixel format, an old FFmpeg without a filter option): the
        caller then crops ``frame.rgb`` instead."""
        pic = frame.picture
        fmt = (pic.width, pic.height, pic.format.name, pic.colorspace, pic.color_range, frame.field_only)
        key = (fmt, box, out.shape)
        import av  # only decoded pictures come here, so PyAV is there

        if key != self._key:
            self._key = key
            try:
                self._graph = self._build(frame, box, out.shape[:2])
            except (av.error.FFmpegError, ValueError) as e:
                self._graph, self.error = None, f"{type(e).__name__}: {e}"
        if self._graph is not None:
            try:
                self._graph.push(pic)
                planes = self._graph.pull().planes  # gbrp: G, B, R, rows padded to line_size
                for channel, p in zip((1, 2, 0), planes):
                    out[..., channel] = np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width]
                return True
            except (av.error.FFmpegError, ValueError) as e:  # e.g. a property the graph did not expect
                self._key, self.error = None, f"{type(e).__name__}: {e}"  # rebuild for the next picture
        self.unsupported += 1
        return False

    @staticmethod
    def _build(frame: Frame, box: tuple[int, int, int, int], size: tuple[int, int]):
        x0, y0, x1, y1 = box
        filters: list[tuple[str, str | None]] = []
        if frame.field_only:  # field doubling: the top field is all the picture there is
            filters.append(("field", "type=top"))
            y0, y1 = y0 // 2, (y1 + 1) // 2
        filters += [
            ("crop", f"w={x1 - x0}:h={y1 - y0}:x={x0}:y={y0}"),
            # Area averaging with full-resolution chroma and exact rounding: within ~1.5 grey
            # levels on average of an exact area average of the RGB frame. One thread: the crop
            # is small and the other cores decode.
            ("scale", f"w={size[1]}:h={size[0]}:flags=area+full_chroma_int+accurate_rnd:threads=1"),
            ("format", "pix_fmts=gbrp"),
        ]
        return picture_graph(frame.picture, filters)


def resize_area(rgb: np.ndarray, box: tuple[int, int, int, int], out: np.ndarray) -> None:
    """Crop ``box`` of an RGB array and area-resize it into ``out`` (h, w, 3) uint8 (OpenCV)."""
    h, w = out.shape[:2]
    x0, y0, x1, y1 = box
    crop = rgb[y0:y1, x0:x1]
    # Area averaging (no aliasing when shrinking, like training's antialiased resize).
    # OpenCV's area resize is about twice as fast at a whole factor, so shrink by the
    # largest whole factor first and finish with a factor below 2.
    k = min(crop.shape[0] // h, crop.shape[1] // w)
    if k >= 2:
        dy, dx = crop.shape[0] % k, crop.shape[1] % k  # trim the remainder evenly (< k px)
        crop = crop[dy // 2 : crop.shape[0] - (dy - dy // 2), dx // 2 : crop.shape[1] - (dx - dx // 2)]
        crop = cv2.resize(crop, (crop.shape[1] // k, crop.shape[0] // k), interpolation=cv2.INTER_AREA)
    interp = cv2.INTER_AREA if crop.shape[0] >= h else cv2.INTER_LINEAR
    cv2.resize(crop, (w, h), dst=out, interpolation=interp)


def per_stream(table: dict, stream_id: str, make):
    """The stream's entry of ``table``, made on first use (not on every frame, as
    ``dict.setdefault`` would)."""
    item = table.get(stream_id)
    if item is None:
        item = table[stream_id] = make()
    return item


class Preprocessor:
    """Crop + resize + normalise one frame for one model input size and normalisation.

    ``backend`` picks how RGB arrays are cropped and resized: ``cv2`` (CPU) or ``torch``
    (``roi_align`` on the engine's device); ``auto`` = torch on CUDA, else cv2. Decoded
    pictures always go through ``PictureCropper`` (cheaper than any path that first makes
    the full-size RGB frame, also beside a GPU).

    ``transpose``: the model reads the picture with its rows and columns swapped, input
    ``x[c, i, j] = picture[j, i, c]`` (a student trained on ``np.swapaxes(image, 0, -1)``
    input; the student's ``transpose_hw``). The picture is then resized to (W, H) so that the
    model input is still (3, H, W) = ``input_size``. The swap is one uint8 copy of the planes,
    reading along columns (on CPU at 448 px: 0.29 ms, against 0.19 ms for the interleaved-to-
    planar copy that RGB arrays need anyway; decoded pictures need no copy without the swap).
    """

    def __init__(
        self,
        input_size: tuple[int, int],
        mean,
        std,
        device: str = "cpu",
        detect: bool = True,
        detect_every: int = 15,
        backend: str = "auto",
        transpose: bool = False,
    ):
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.transpose = bool(transpose)
        # (rows, columns) of the resized picture: the input's (H, W), swapped for a transposed input
        h, w = self.input_size
        self._picture_size = (w, h) if self.transpose else (h, w)
        self.device = torch.device(device)
        self.detect = detect
        self.detect_every = detect_every
        self.backend = ("torch" if self.device.type == "cuda" else "cv2") if backend == "auto" else backend
        if self.backend not in ("cv2", "torch"):
            raise ValueError(f"preprocess backend must be auto, cv2 or torch, got {backend!r}")
        # Fold /255, mean and std into one multiply-add.
        m = np.asarray(mean, np.float32).reshape(3, 1, 1)
        s = np.asarray(std, np.float32).reshape(3, 1, 1)
        self._np_scale, self._np_shift = 1.0 / (255.0 * s), -m / s
        self._scale = torch.from_numpy(self._np_scale).to(self.device)
        self._shift = torch.from_numpy(self._np_shift).to(self.device)
        self.trackers: dict[str, ContentTracker] = {}
        self.croppers: dict[tuple[str, str], PictureCropper] = {}  # per (stream, view)

    @classmethod
    def for_model(cls, meta: dict, input_size: tuple[int, int] | None = None, **kw) -> Preprocessor:
        """The preprocessing of the student that ``meta`` (its metadata) describes: its
        normalisation and transpose flag, read by ``pagkd_core.student.input_transform``, at its
        input size unless ``input_size`` says otherwise (an engine run at another size)."""
        return cls(input_size or tuple(meta["input_size"]), **input_transform(meta), **kw)

    def area(self, frame: Frame) -> ContentArea:
        if not self.detect:
            h, w = frame.size
            return ContentArea((0, 0, w, h), "rect", 1.0)
        tracker = per_stream(self.trackers, frame.stream_id, lambda: ContentTracker(every=self.detect_every))
        return tracker.update(frame)

    def __call__(self, frame: Frame, box: tuple[int, int, int, int] | None = None,
                 view: str = "whole") -> np.ndarray | torch.Tensor:
        """``box``: the content area already found for this frame (stream.routing finds each
        frame's area once for the modality detector and for whichever model reads the frame), or
        the part of it one of the student's views reads (stream.views); ``view`` names that view,
        so that each keeps its own FFmpeg graph instead of rebuilding one at every switch."""
        box = self.area(frame).box if box is None else box
        chw = self.pixels(frame, box, view)
        if chw is None:
            return self._roi_align(frame, box)
        # Planar uint8 first (a copy only for interleaved pixels or a transposed input), then
        # contiguous float arithmetic: ~8x faster than strided float.
        chw = np.ascontiguousarray(chw.transpose(0, 2, 1) if self.transpose else chw)
        if self.device.type == "cpu":
            # numpy, not torch, for this small elementwise step: torch's OpenMP workers cost more
            # than the work here, and far more when other processes share the cores.
            x = chw.astype(np.float32)
            x *= self._np_scale
            x += self._np_shift
            return x
        return self._normalise(self._upload(chw).float())

    def pixels(self, frame: Frame, box: tuple[int, int, int, int], view: str = "whole") -> np.ndarray | None:
        """``box`` of ``frame`` cropped and area-resized to the model's picture size: planar uint8
        (3, h, w), the picture before normalisation (and before a transposed input's swap). None
        where the ``torch`` backend reads an RGB array on its device instead. Training frames
        cut from videos (stream.training_frames) are these pixels, so they are the runtime's."""
        planar = np.empty((3, *self._picture_size), np.uint8)
        cropper = per_stream(self.croppers, (frame.stream_id, view), PictureCropper)
        if frame.picture is not None and cropper(frame, box, planar.transpose(1, 2, 0)):
            return planar  # the cropper wrote each colour plane in place: the model's layout
        if self.backend == "torch":
            return None
        pixels = np.empty((*self._picture_size, 3), np.uint8)  # OpenCV writes interleaved RGB
        resize_area(frame.rgb, box, pixels)
        return pixels.transpose(2, 0, 1)

    def _upload(self, pixels: np.ndarray) -> torch.Tensor:
        u8 = torch.from_numpy(pixels)
        if self.device.type == "cuda":
            u8 = u8.pin_memory()
        return u8.to(self.device, non_blocking=True)

    def _normalise(self, x: torch.Tensor) -> np.ndarray | torch.Tensor:
        out = x * self._scale + self._shift
        return out.numpy() if self.device.type == "cpu" else out

    def _roi_align(self, frame: Frame, box: tuple[int, int, int, int]) -> np.ndarray | torch.Tensor:
        """Upload the RGB frame once and crop + resize it on the device, averaging
        ceil(box/output) samples per output pixel like an area resize."""
        from torchvision.ops import roi_align

        x = self._upload(frame.rgb).permute(2, 0, 1)[None].float()
        roi = torch.tensor([[0, *box]], dtype=torch.float32, device=self.device)
        crop = roi_align(x, roi, self._picture_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)[0]
        return self._normalise(crop.transpose(1, 2) if self.transpose else crop)

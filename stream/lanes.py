"""The models a pipeline runs, one lane each: the WLI student and, when exported beside it, the
fold's NBI teacher (``<stem>.nbi.json``, ``python -m pagkd_core export --teacher``).

A lane is an engine, the preprocessing its input needs and (once started) the batcher that
feeds it. Its ``probs(logits)`` are always over the *student's* class list: the teacher's
classes are placed at their names' positions (a teacher without a ``no_lesion`` output gives
P(no lesion) = 0: NBI is switched on to look at a lesion). One class list means one smoother and
one alert machine per stream whichever model read the frame, and one prediction-log format.

The student may read more than one view of each frame (stream.views: the whole field, and its
central square for a second look at the class): its lane preprocesses every view, the batcher
keeps a frame's views together as one item, the engine reads them all in one call, and
``probs`` fuses them into the frame's one probability vector.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pagkd_core.student import input_transform
from stream.batching import DynamicBatcher
from stream.config import PipelineConfig
from stream.preprocess import Preprocessor
from stream.result import softmax
from stream.views import WHOLE, fuse, resolve_views, view_box

STUDENT, TEACHER = "student", "nbi_teacher"


def open_engine(cfg: PipelineConfig, model):
    """The engine ``cfg`` asks for, on ``model`` (a path or a ModelSource)."""
    from stream.engines import CPU_ENGINE_THREADS, build_engine, resolve_device

    # On CPU the engine gets half the cores by default: decoding and preprocessing run beside it,
    # and extra intra-op threads only spin (measured: docs/stream.md). Thread counts are a CPU
    # notion; the CUDA engines take none.
    threads = {}
    if resolve_device(cfg.device) == "cpu":
        threads = {"threads": cfg.threads or CPU_ENGINE_THREADS}
    return build_engine(cfg.engine, model, device=cfg.device, max_batch=cfg.batch, precision=cfg.precision, **threads)


def teacher_path(cfg: PipelineConfig, student_engine) -> Path | None:
    """The NBI teacher to load: ``cfg.nbi_teacher`` if a path, else (``auto``) the one exported
    beside the student, if any; None for ``none`` or when there is none."""
    if cfg.nbi_teacher in ("", "none"):
        return None
    if cfg.nbi_teacher != "auto":
        return Path(cfg.nbi_teacher)
    stem = getattr(student_engine.source, "stem", None)
    if stem is None:  # an in-memory student has no "beside"
        return None
    from pagkd_core.student import teacher_stem  # the training core owns the file layout

    t = teacher_stem(stem)
    js = t.with_name(t.name + ".json")
    return js if js.is_file() else None


@dataclass
class Lane:
    name: str
    engine: object
    pre: Preprocessor
    to_student: np.ndarray | None = None  # student-class index of each of this model's outputs
    n_student: int = 0
    owned: bool = False  # the engine was built for this lane, and is closed with it
    views: tuple[str, ...] = (WHOLE,)  # what the model reads of each frame (stream.views)
    batcher: DynamicBatcher | None = field(default=None, repr=False)

    def input(self, frame, area: tuple[int, int, int, int]):
        """The model input of ``frame`` whose content area is ``area``: (3, H, W), or (V, 3, H, W)
        with more than one view."""
        if len(self.views) == 1:
            return self.pre(frame, area)
        xs = [self.pre(frame, view_box(v, area), view=v) for v in self.views]
        if isinstance(xs[0], np.ndarray):
            return np.stack(xs)
        import torch  # GPU preprocessing: the views stay on their device

        return torch.stack(xs)

    def infer(self, batch) -> np.ndarray:
        """Logits of a batch of items: (N, K), or (N, V, K) with V views (one engine call)."""
        if len(self.views) == 1:
            return self.engine.infer(batch)
        n, v = batch.shape[:2]
        return np.asarray(self.engine.infer(batch.reshape(n * v, *batch.shape[2:]))).reshape(n, v, -1)

    def read(self, logits) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
        """One item's logits -> (softmax over the student's classes, float32 like the engines'
        logits, the views fused; each view's own softmax by name for the prediction log, None
        with one view). Each view's softmax is computed once for both."""
        z = np.asarray(logits, dtype=np.float32).reshape(len(self.views), -1)
        each = np.stack([softmax(row) for row in z])
        p = fuse(each, self.engine.class_names)
        if self.to_student is not None:
            p, mapped = np.zeros(self.n_student, np.float32), p
            p[self.to_student] = mapped
        return p, (dict(zip(self.views, each)) if len(self.views) > 1 else None)

    def probs(self, logits) -> np.ndarray:
        """The frame's softmax over the student's classes (``read``'s first part)."""
        return self.read(logits)[0]

    def start(self, max_batch: int, max_wait_ms: float, max_queue: int) -> None:
        self.batcher = DynamicBatcher(self.infer, max_batch=max_batch, max_wait_ms=max_wait_ms,
                                      max_queue=max_queue, name=f"batcher-{self.name}")

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        if self.owned:
            self.engine.close()


def preprocessor(cfg: PipelineConfig, engine) -> Preprocessor:
    return Preprocessor.for_model(engine.source.meta, engine.input_size, device=engine.device, detect=cfg.detect_area,
                                  detect_every=cfg.detect_every, backend=cfg.preprocess_backend)


def student_views(cfg: PipelineConfig, engine) -> tuple[str, ...]:
    """The views the student reads: ``cfg.views``, or (``auto``) its metadata's ``views``, or the
    whole field alone."""
    return resolve_views(cfg.views, engine.source.meta)


def student_lane(cfg: PipelineConfig, engine) -> Lane:
    return Lane(STUDENT, engine, preprocessor(cfg, engine), views=student_views(cfg, engine))


def teacher_lane(cfg: PipelineConfig, student: Lane, teacher=None) -> Lane | None:
    """The NBI teacher's lane (``teacher``: an engine, or None to load it as ``cfg`` says), or
    None when there is none or it cannot serve: a warning of one line says why, and NBI frames
    are then shown as "NBI: not analysed"."""
    where, owned = "the NBI teacher", teacher is None
    try:
        if teacher is None:
            path = teacher_path(cfg, student.engine)
            if path is None:
                return None
            where = str(path)
            teacher = open_engine(cfg, path)
        names = list(student.engine.class_names)
        unknown = [c for c in teacher.class_names if c not in names]
        if unknown:
            raise ValueError(f"its classes {unknown} are not among the student's {names}; export the teacher "
                             f"of the same training run (python -m pagkd_core export --teacher)")
        same_input = (tuple(teacher.input_size) == tuple(student.engine.input_size)
                      and input_transform(teacher.source.meta) == input_transform(student.engine.source.meta)
                      and teacher.device == student.engine.device)
        # The student's preprocessor finds the content area; the teacher's only crops and scales.
        pre = student.pre if same_input else preprocessor(cfg, teacher)
        to_student = np.array([names.index(c) for c in teacher.class_names])
        return Lane(TEACHER, teacher, pre, to_student, len(names), owned)
    except Exception as e:  # noqa: BLE001 - any failure to load it: the session goes on without it
        if owned and teacher is not None:
            teacher.close()
        msg = " ".join(str(e).split())
        warnings.warn(f"NBI teacher not used ({where}): {type(e).__name__}: {msg}", RuntimeWarning, stacklevel=2)
        return None

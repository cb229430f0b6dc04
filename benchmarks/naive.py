"""The naive baseline every end-to-end figure is compared with.

What a first prototype would do: read frames with OpenCV, preprocess each one in numpy,
run the torch model eagerly at batch 1, all in one thread with no batching, no read-ahead
and no frame dropping. Same model weights, input size and views (stream.views) as the real
pipeline: a student that reads the whole field and its central square is run on both here too, as
one batch of two.
"""
from __future__ import annotations

import time

import cv2
import numpy as np
import torch

from benchmarks.timing import rate, summary_ms
from stream.views import WHOLE, parse_views, view_box


class NaiveClassifier:
    def __init__(self, model: torch.nn.Module | None, input_size, mean, std, device: str = "cpu",
                 views=(WHOLE,)):
        # fp32 on the benchmark's device: a prototype would move the model there and stop.
        self.device = device
        self.views = parse_views(views)
        self.model = model.eval().to(device) if model is not None else None
        self.h, self.w = int(input_size[0]), int(input_size[1])
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)

    def preprocess(self, bgr: np.ndarray) -> np.ndarray:
        """(V, 3, H, W): each view of the whole frame (a prototype finds no content area)."""
        rgb = bgr[..., ::-1]
        xs = []
        for view in self.views:
            x0, y0, x1, y1 = view_box(view, (0, 0, rgb.shape[1], rgb.shape[0]))
            small = cv2.resize(rgb[y0:y1, x0:x1], (self.w, self.h), interpolation=cv2.INTER_AREA)
            xs.append(((small.astype(np.float32) / 255.0 - self.mean) / self.std).transpose(2, 0, 1))
        return np.stack(xs)

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.model(torch.from_numpy(self.preprocess(bgr)).to(self.device)).cpu().numpy()


def _open(path: str) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise RuntimeError(f"OpenCV cannot open {path}")
    return cap


def naive_replay(clf: NaiveClassifier, path: str, max_frames: int, loops: int = 1) -> dict:
    """Every frame of the file, one after another, as fast as possible."""
    frames, t0 = 0, time.perf_counter()
    for _ in range(loops):
        cap = _open(path)
        while frames < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            clf(bgr)
            frames += 1
        cap.release()
    elapsed = time.perf_counter() - t0
    return {"frames": frames, "seconds": round(elapsed, 3), "fps": rate(frames, elapsed)}


def naive_paced(clf: NaiveClassifier, paths: list[str], fps: float, frames_per_stream: int) -> dict:
    """``len(paths)`` live feeds at ``fps``, served round-robin by one thread.

    Frame i of each feed becomes available at t0 + i/fps; the naive loop takes it when it
    gets to it, so when it is slower than the feeds its lag grows frame after frame (it
    drops nothing). Latency runs from when the frame would have left the decoder (its
    scheduled time plus its measured decode time, matching the pipeline's ``arrival``) to
    the logits being ready.
    """
    caps = [_open(p) for p in paths]
    lat: list[float] = []
    t0 = time.perf_counter() + 0.05
    # A baseline far behind would take minutes to finish its backlog; it has failed long
    # before then, so stop and report the frames it never got to.
    give_up = t0 + 2 * frames_per_stream / fps + 2.0
    done = 0
    for i in range(frames_per_stream):
        if time.perf_counter() > give_up:
            break
        due = t0 + i / fps
        for cap in caps:
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            td = time.perf_counter()
            ok, bgr = cap.read()
            if not ok:  # loop the file so every feed lasts the whole run
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                td = time.perf_counter()
                ok, bgr = cap.read()
            arrival = due + (time.perf_counter() - td)
            clf(bgr)
            lat.append(time.perf_counter() - arrival)
            done += 1
    for cap in caps:
        cap.release()
    offered = frames_per_stream * len(paths)
    return {"streams": len(paths), "fps": fps, "offered": offered, "processed": done, "dropped": 0,
            "never_reached": offered - done, "latency": summary_ms(lat)}

"""Procedure clips: a camera drifting through the colon, pausing on lesions, with ground truth.

`iter_procedure_frames(cfg)` is the live synthetic source (the runtime imports it);
`write_video(cfg, path)` writes `<path>.mp4` (H.264, PyAV) and `<path>.truth.csv`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from pagkd_core.filetypes import PARTIAL_MARK
from pagkd_core.video_writer import VideoWriter

from .config import VideoConfig
from .nbi import NbiSchedule
from .procedure import Procedure, wave
from .scene import MID_GREY, TubeRenderer, osd_text

# one row per frame; the last four were appended later (keep the order: readers index by name)
TRUTH_COLUMNS = (
    "frame", "pts", "lesion_visible", "lesion_id", "class", "x0", "y0", "x1", "y1",
    "modality", "coverage", "wli_evidence", "lesion_contrast",
)  # fmt: skip
MIN_VISIBLE = 0.004  # a lesion counts as visible from this fraction of the field on


def iter_procedure_frames(
    cfg: VideoConfig, truth_only: bool = False, shade_every: int = 1
) -> Iterator[tuple[np.ndarray | None, dict]]:
    """Yield (rgb uint8 HxWx3, truth dict with the TRUTH_COLUMNS keys) per frame; endless if seconds=0.

    `modality`: the light of this frame (NBI in a WLI clip's NBI stretches, nbi.py);
    `coverage`: the visible lesion's share of the endoscope field (0 when none is visible);
    `wli_evidence`: the share of its class cue it shows in WLI (latent.sample_evidence), a
    property of the lesion, so also on its NBI-stretch rows; empty in pure NBI clips.
    `lesion_contrast`: how much the visible lesion changes the picture, in grey levels
    (scene.TubeRenderer.lesion_contrast); empty without a lesion and on frames not shaded.
    `truth_only`: skip shading (rgb is None): the same truth but lesion_contrast, several times
    faster (story.py).
    `shade_every`: shade only every n-th frame (the others as `truth_only`): training frames
    from a procedure's camera path (video_frames.py) at a fraction of the cost; the exposure
    and the motion blur follow the camera over the skipped frames too."""
    proc, lights = Procedure(cfg), NbiSchedule(cfg)
    tube = TubeRenderer(proc.patient, cfg.modality, cfg.width, cfg.height, cfg.render_scale, cfg.difficulty)
    noise_rng = np.random.default_rng([cfg.seed, 1])
    n_frames = round(cfg.seconds * cfg.fps) if cfg.seconds > 0 else None
    dt, f, prev_fwd, gain = 1.0 / cfg.fps, 0, None, 1.0
    shade_every = max(1, shade_every)
    step = dt * shade_every  # time between shaded frames: the exposure's lag is in seconds

    def auto_exposure(luma: float) -> float:
        # chases mid-grey with a lag, plus lamp flicker: the exposure keeps moving
        nonlocal gain
        gain += (np.clip(MID_GREY / luma, 0.4, 3.0) - gain) * min(1.0, 3.0 * step)
        flick = 1.0 + cfg.exposure_jitter * (
            0.08 * wave(3.0 * t, proc.waves[6]) + 0.03 * noise_rng.standard_normal()
        )
        return gain * flick

    while n_frames is None or f < n_frames:
        t = f * dt
        cam = proc.step(t, dt)
        light = lights.light(t)
        if truth_only or f % shade_every:
            out, tr = None, tube.cast(cam, proc.near(light), cfg.border)
        else:
            blur = (0.0, 0.0)
            if prev_fwd is not None and cfg.motion_blur > 0:  # image shift from the camera's turn
                blur = tube.turn_blur(prev_fwd, cam, cfg.motion_blur)
            text = osd_text(light, t) if cfg.text else None
            out, tr = tube.render(
                cam, proc.near(light), auto_exposure, noise_rng,
                blur_px=blur, border=cfg.border, text=text, modality=light, contrast=True,
            )  # fmt: skip
        prev_fwd = cam[1].copy()
        visible = tr.lesion is not None and tr.coverage >= MIN_VISIBLE
        if visible:
            lights.seen(proc, t, tr.lesion.lesion.lesion_id, tr.coverage)
        truth = {c: None for c in TRUTH_COLUMNS}
        truth.update(frame=f, pts=round(t, 6), lesion_visible=0, lesion_id="", modality=light)
        truth.update({"class": "", "coverage": 0.0})
        if visible:
            x0, y0, x1, y1 = tr.box
            lid = tr.lesion.lesion.lesion_id
            truth.update(lesion_visible=1, lesion_id=lid, x0=x0, y0=y0, x1=x1, y1=y1)
            truth.update({"class": tr.lesion.lesion.cls, "coverage": round(tr.coverage, 5)})
            if cfg.modality == "WLI":
                truth["wli_evidence"] = round(proc.evidence[lid]["WLI"], 4)
            if tr.contrast is not None:
                truth["lesion_contrast"] = round(tr.contrast, 3)
        yield out, truth
        f += 1


def h264_writer(path: str | Path, width: int, height: int, fps: int, crf: int = 23) -> VideoWriter:
    """The procedure clips' encoding: H.264 at quality ``crf``, a keyframe every 2 s, pts = frame index."""
    return VideoWriter(path, width, height, fps, "libx264", time_base=Fraction(1, fps),
                       options={"crf": str(crf), "preset": "veryfast", "g": str(2 * fps)})


def write_video(cfg: VideoConfig, path: str | Path, progress: bool = True) -> tuple[Path, Path]:
    """Write `path` (.mp4, H.264) and its `<stem>.truth.csv`; returns both paths. Both are written
    under a `.partial` name (pagkd_core.filetypes.PARTIAL_MARK, which folder listings skip) and
    renamed when complete (the video last), so an interrupted run never leaves a short clip that a
    cache would take for a finished one."""
    from tqdm import tqdm

    path = Path(path)
    truth_path = path.with_suffix(".truth.csv")
    partial, partial_truth = (p.with_name(f"{path.stem}{PARTIAL_MARK}{p.name[len(path.stem):]}") for p in (path, truth_path))
    n = round(cfg.seconds * cfg.fps)
    with (
        h264_writer(partial, cfg.width, cfg.height, cfg.fps, cfg.crf) as out,
        open(partial_truth, "w", newline="") as fh,
    ):
        writer = csv.writer(fh)
        writer.writerow(TRUTH_COLUMNS)
        for rgb, truth in tqdm(
            iter_procedure_frames(cfg), total=n, disable=not progress, unit="frame", desc=f"video {path.name}"
        ):
            out.write(rgb)
            writer.writerow(["" if truth[c] is None else truth[c] for c in TRUTH_COLUMNS])
    partial_truth.replace(truth_path)
    partial.replace(path)
    return path, truth_path

"""The frames int8 calibration and its accuracy check read (benchmarks.int8): a labelled image
set's pictures resized and normalised like the trainer's evaluation path, or a video's frames
through the runtime's preprocessor; calibration on a fold's training lesions, measurement on its
test lesions."""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pagkd_core.data.layouts import DataError, Sample, scan_generic
from pagkd_core.data.splits import select
from pagkd_core.filetypes import VIDEO_EXTENSIONS
from pagkd_core.student import input_transform


def labelled_images(root: Path, class_names: list[str], modality: str = "WLI") -> list[Sample]:
    """The images of ``modality`` and ``class_names`` under ``root``, read by the training core's
    own reader (manifest.csv or <root>/<modality>/<class>/<lesion>_<n>.<ext>). A sample's
    ``patient`` is the split unit a training run's splits.json lists (the lesion when the
    manifest names no patient)."""
    try:
        samples = scan_generic(Path(root)) if Path(root).is_dir() else []
    except DataError as e:
        raise FileNotFoundError(str(e)) from None
    out = [s for s in samples if s.modality == modality and s.cls in class_names]
    if not out:
        raise FileNotFoundError(f"no {modality} images of classes {class_names} under {root} "
                                f"(expected manifest.csv or {modality}/<class>/*.png)")
    return out


def lesion_half(lesion_id: str) -> int:
    """0 or 1, stable per lesion: splits one image set into calibration and evaluation lesions."""
    return zlib.crc32(lesion_id.encode()) & 1


def read_images(paths: list[Path], meta: dict) -> np.ndarray:
    """Resize + normalise exactly like the training core's evaluation path, then lay the pictures
    out as the student reads them (transposed for a ``transpose_hw`` student, as the runtime's
    preprocessor does), so that calibration sees the activations the runtime will."""
    import torch

    from pagkd_core.data.images import read_image
    from pagkd_core.data.transforms import normalize, resize_uint8
    h, w = meta["input_size"]
    if h != w:
        raise ValueError(f"training images are resized square; input_size {meta['input_size']} is not")
    t = input_transform(meta)
    out = [normalize(resize_uint8(read_image(str(p)), h), t["mean"], t["std"])
           for p in tqdm(paths, desc="reading images", leave=False, disable=True if len(paths) < 64 else None)]
    x = torch.stack(out)
    return (x.transpose(2, 3) if t["transpose"] else x).numpy().astype(np.float32)


def video_frames(path: Path, meta: dict, count: int) -> np.ndarray:
    """``count`` evenly spaced frames of a video, cropped/resized/normalised by the runtime."""
    import av

    from stream.frame import Frame
    from stream.preprocess import Preprocessor
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        total = stream.frames or sum(1 for _ in c.decode(video=0))
    keep = set(np.linspace(0, max(total - 1, 0), min(count, max(total, 1))).round().astype(int).tolist())
    pre = Preprocessor.for_model(meta, device="cpu")  # the runtime's input: normalisation, transpose
    out = []
    with av.open(str(path)) as c:
        for i, vf in enumerate(c.decode(video=0)):
            f = Frame(index=i, pts=None, arrival=0.0, rgb=vf.to_ndarray(format="rgb24"))
            pre.area(f)  # every frame feeds the content tracker, as in the live pipeline
            if i in keep:
                out.append(pre(f))
    return np.stack(out).astype(np.float32)


def split_lesions(splits: str | Path, fold: int, part: str) -> set[str]:
    """Split units (patients, else lesions) of one part (train/val/test) of a training run's splits.json."""
    data = json.loads(Path(splits).read_text())
    try:
        return set(data["folds"][fold][part])
    except (KeyError, IndexError):
        raise ValueError(f"{splits}: no fold {fold} part {part!r}") from None


def pick_samples(samples: list[Sample], half: int | None = None, units: set[str] | None = None) -> list[Sample]:
    """Keep the images of the given split units (a split), else of one stable half of the lesions."""
    if units is not None:
        kept = select(samples, list(units))
        if not kept:
            raise ValueError("no image of the split's lesions found; do --splits and the image root match?")
        return kept
    if half is not None:
        return [s for s in samples if lesion_half(s.patient) == half] or samples
    return samples


def calibration_frames(path: str | Path, meta: dict, count: int = 256, seed: int = 0,
                       half: int | None = None, lesions: set[str] | None = None,
                       modality: str = "WLI") -> np.ndarray:
    path = Path(path)
    if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
        return video_frames(path, meta, count)
    samples = pick_samples(labelled_images(path, list(meta["class_names"]), modality), half, lesions)
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(samples), size=min(count, len(samples)), replace=False).tolist())
    return read_images([samples[i].path for i in pick], meta)


@dataclass
class HeldOut:
    """Which images calibrate and which measure the accuracy cost."""

    calib: str                   # image set root (manifest.csv or <modality>/<class>/) or a video
    eval: str | None = None      # labelled image set to measure on; None: calib's other lesions
    splits: str | None = None    # a training run's splits.json: calibrate on the fold's train lesions,
    fold: int = 0                # measure on its test lesions (default: two stable halves of the lesions)
    modality: str = "WLI"        # WLI for students, NBI for a teacher
    count: int = 256             # calibration images
    eval_count: int = 512        # evaluation images at most

    def calibration(self, meta: dict, seed: int = 0) -> np.ndarray:
        """The calibration frames: the fold's training lesions, else half 0 of the lesions."""
        train = split_lesions(self.splits, self.fold, "train") if self.splits else None
        half = 0 if not Path(self.calib).is_file() and not self.eval else None
        return calibration_frames(self.calib, meta, self.count, seed, half, train, self.modality)

    def evaluation(self, meta: dict) -> tuple[np.ndarray, np.ndarray, int] | None:
        """(images, labels, lesion count) to measure on: the fold's test lesions, else the other
        half; None when there are no labelled images (a video calibrates)."""
        root = Path(self.eval or self.calib)
        if root.is_file():
            return None
        test = split_lesions(self.splits, self.fold, "test") if self.splits else None
        class_names = list(meta["class_names"])
        samples = pick_samples(labelled_images(root, class_names, self.modality),
                               half=None if self.eval else 1, units=test)
        picked = [samples[i] for i in np.random.default_rng(1).permutation(len(samples))[:self.eval_count]]
        labels = np.array([class_names.index(s.cls) for s in picked])
        return read_images([s.path for s in picked], meta), labels, len({s.patient for s in picked})

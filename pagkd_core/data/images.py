"""Robust image reading: any PIL mode (grayscale, palette, RGBA, 16-bit) -> RGB uint8 tensor.

Corrupt or unreadable files raise `ImageError` naming the file; `ImageStore.check` drops them
from a dataset with a count in the log (skipping is safe: the sample simply is not used).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from pagkd_core.data.transforms import resize_uint8

log = logging.getLogger("pagkd_core.data")


class ImageError(ValueError):
    pass


def _to_rgb8(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img).astype(np.float64)
        # 16-bit (or 32-bit int/float) grey: rescale its full range to 8 bits, not clip it.
        top = 65535.0 if a.max(initial=0) > 255 or img.mode.startswith("I;16") else 255.0
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[:, :, None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        # Alpha: composite on black, the colour of an endoscope frame's border.
        img = Image.alpha_composite(Image.new("RGBA", img.size, (0, 0, 0, 255)), img.convert("RGBA"))
    return np.asarray(img.convert("RGB"))


def read_image(path: str) -> torch.Tensor:
    """(3, H, W) uint8 RGB."""
    try:
        with Image.open(path) as img:
            img.load()
            arr = _to_rgb8(img)
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: unreadable or corrupt image ({e})") from None
    if arr.ndim != 3 or min(arr.shape[:2]) < 2:
        raise ImageError(f"{path}: degenerate image of shape {arr.shape}")
    return torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1).contiguous()


class ImageStore:
    """Reads and resizes images once; keeps the uint8 result in memory when `cache` is on."""

    def __init__(self, image_size: int, cache: bool = True):
        self.image_size = image_size
        self.cache = cache
        self._mem: dict[str, torch.Tensor] = {}

    def load(self, path: str) -> torch.Tensor:
        img = self._mem.get(path)
        if img is None:
            img = resize_uint8(read_image(path), self.image_size)
            if self.cache:
                self._mem[path] = img
        return img

    def check(self, samples: list, progress: bool = True) -> list:
        """Decode every sample once; return the readable ones, logging how many were dropped."""
        good, bad = [], []
        for s in tqdm(samples, desc="checking images", disable=not progress, leave=False):
            try:
                self.load(s.path)
                good.append(s)
            except ImageError as e:
                bad.append(str(e))
        if bad:
            log.warning("skipped %d unreadable image(s); first: %s", len(bad), bad[0])
        self.skipped = bad
        return good

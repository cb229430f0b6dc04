"""Image transforms: deterministic resize once (cacheable), random geometry per draw, normalise.

Augmentation follows the method spec: rotation in [-180, 180] degrees, horizontal and
vertical flips, resize to the input size, then ImageNet mean/std normalisation; optionally
(``data.jpeg_quality``) a JPEG round trip first, as a stand-in for the video codec. Random draws
use torch's global RNG so a seeded run (and a resumed one) sees the same augmentations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from pagkd_core.student import IMAGENET_MEAN, IMAGENET_STD  # recorded in every exported student


def resize_uint8(img: torch.Tensor, size: int) -> torch.Tensor:
    """(3,H,W) uint8 -> (3,size,size) uint8; aspect ratio is not kept (endoscopy frames are
    close to square after cropping the black border, and the paper resizes the same way)."""
    if img.shape[-2:] == (size, size):
        return img
    out = F.interpolate(
        img[None].float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )[0]
    return out.round().clamp(0, 255).to(torch.uint8)


def augment(img: torch.Tensor) -> torch.Tensor:
    """Random rotation (any angle, zero fill) and flips on a (3,H,W) tensor."""
    angle = float(torch.empty(()).uniform_(-180.0, 180.0))
    img = TF.rotate(img, angle, interpolation=TF.InterpolationMode.BILINEAR)
    if torch.rand(()) < 0.5:
        img = img.flip(-1)
    if torch.rand(()) < 0.5:
        img = img.flip(-2)
    return img


JPEG_BEST = 95  # the top of a codec quality draw: near-lossless


def jpeg_roundtrip(img: torch.Tensor, low: int, high: int = JPEG_BEST) -> torch.Tensor:
    """(3,H,W) uint8 through a JPEG encode and decode at a quality drawn from [low, high]: the block
    DCT quantisation a video codec also applies. Rendered training frames never pass an encoder,
    while the runtime reads H.264 video (docs/training.md, "Codec"), so without this the student
    may lean on fine texture the video does not keep."""
    from torchvision.io import decode_jpeg, encode_jpeg

    quality = int(torch.randint(low, high + 1, ()))
    return decode_jpeg(encode_jpeg(img.contiguous(), quality=quality))


def normalize(img_uint8: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    x = img_uint8.float().div_(255.0)
    m = torch.tensor(mean, dtype=x.dtype).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(-1, 1, 1)
    return (x - m) / s

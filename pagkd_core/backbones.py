"""Backbones of our own, registered in timm's registry so that every network is still built by
name through ``timm.create_model`` (and thus through ``pagkd_core.models.build_model``).

ResNet-10-T at reduced width: the real-time students. On 2 CPU cores the full-width ResNet-10-T
spends most of a 96 px frame's inference in its 48x48 stem and first stage; halving every width
cuts the multiply-adds about 4x (docs/stream.md has the measured frame costs)."""

from __future__ import annotations

from timm.models import register_model
from timm.models.resnet import BasicBlock, ResNet


def _resnet10t(width: float, **kwargs) -> ResNet:
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # timm's, for weight files
        kwargs.pop(key, None)
    channels = tuple(int(c * width) for c in (64, 128, 256, 512))
    return ResNet(**{"block": BasicBlock, "layers": (1, 1, 1, 1), "stem_type": "deep_tiered",
                     "avg_down": True, "stem_width": int(32 * width), "channels": channels, **kwargs})


@register_model
def resnet10t_w50(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-10-T with half the width (stem 12-16-32, stages 32-64-128-256); 1.2 M parameters."""
    if pretrained:
        raise ValueError("resnet10t_w50 has no pretrained weights")
    return _resnet10t(0.5, **kwargs)


@register_model
def resnet10t_w75(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-10-T at three quarters of the width (stages 48-96-192-384); 2.8 M parameters."""
    if pretrained:
        raise ValueError("resnet10t_w75 has no pretrained weights")
    return _resnet10t(0.75, **kwargs)

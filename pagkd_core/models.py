"""LesionNet: any timm backbone's last feature map + 1x1 embedding to d + GAP/linear classifier.

Teacher and student share this class; the distillers need the feature map, the embedding
and the classifier separately (Grad-CAM differentiates `classify(features)`).
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from pagkd_core import backbones  # noqa: F401 - registers our own backbones with timm

# Classifier keys of timm models (and our own head/proj): a pretrained file may carry them; ignored.
_HEAD_PREFIXES = ("fc.", "classifier.", "head.", "last_linear.", "proj.")


class LesionNet(nn.Module):
    def __init__(self, backbone: str, num_classes: int, embed_dim: int = 128, output_stride: int = 32):
        super().__init__()
        extra = {} if output_stride == 32 else {"output_stride": output_stride}
        try:
            self.backbone = timm.create_model(
                backbone, pretrained=False, num_classes=0, global_pool="", **extra
            )
        except RuntimeError as e:  # timm: "Unknown model (...)"
            raise ValueError(f"unknown backbone '{backbone}': {e} (see timm.list_models())") from None
        self.backbone_name = backbone
        self.output_stride = output_stride
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.channels = int(self.backbone.num_features)
        self.proj = nn.Conv2d(self.channels, embed_dim, kernel_size=1)
        self.head = nn.Linear(self.channels, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(features)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.forward_features(x))


def load_backbone_weights(model: LesionNet, path: str | Path) -> None:
    """Load a local timm state dict (.safetensors) into the backbone; the classifier is ours."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights not found: {path} (no download is possible; give a local "
            f".safetensors file or leave model.pretrained empty)"
        )
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: pretrained weights must be a .safetensors file (pickles are not loaded)")
    state = {k.removeprefix("backbone."): v for k, v in load_file(str(path)).items()}
    own = model.backbone.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own and not k.startswith(_HEAD_PREFIXES)]
    bad = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or bad:
        first = (
            f"shape of '{bad[0]}' is {tuple(state[bad[0]].shape)}, expected {tuple(own[bad[0]].shape)}"
            if bad
            else f"missing '{missing[0]}'"
            if missing
            else f"unexpected '{unexpected[0]}'"
        )
        raise ValueError(
            f"{path} does not match backbone '{model.backbone_name}': {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(bad)} mis-shaped keys ({first})"
        )
    model.backbone.load_state_dict({k: state[k] for k in own})


def build_model(
    backbone: str,
    num_classes: int,
    embed_dim: int = 128,
    pretrained: str | Path | None = None,
    output_stride: int = 32,
) -> LesionNet:
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    model = LesionNet(backbone, num_classes, embed_dim, output_stride)
    if pretrained:
        load_backbone_weights(model, pretrained)
    return model


def model_from_config(spec, num_classes: int, embed_dim: int, pretrained: bool = True) -> LesionNet:
    """`spec`: a config.ModelConfig. `pretrained=False` when a checkpoint will overwrite the weights."""
    return build_model(
        spec.backbone, num_classes, embed_dim, spec.pretrained if pretrained else None, spec.output_stride
    )

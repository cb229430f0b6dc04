"""LesionNet: any timm backbone's last feature map + 1x1 embedding to d + a linear classifier
read through a pooling (``POOLS``).

Teacher and student share this class; the distillers need the feature map, the embedding
and the classifier separately (Grad-CAM differentiates `classify(features)`).
"""

from __future__ import annotations

import math
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from pagkd_core import backbones  # noqa: F401 - registers our own backbones with timm
from pagkd_core.config import POOLS
from pagkd_core.outputs import background_index

# POOLS: how the classifier reads the feature map. "mean": the linear head on the average of all regions
# (GAP). "mil": the head on every region, then no_lesion's logit averaged over the regions and each
# lesion class's log-mean-exp (a soft maximum), so one small region that shows a lesion can carry
# the frame: "a lesion is in view" is a question about any part of it (multiple-instance
# learning), "nothing is in view" one about all of it. With one region both are the same.

# Classifier keys of timm models (and our own head/proj): a pretrained file may carry them; ignored.
_HEAD_PREFIXES = ("fc.", "classifier.", "head.", "last_linear.", "proj.")


class LesionNet(nn.Module):
    def __init__(self, backbone: str, num_classes: int, embed_dim: int = 128, output_stride: int = 32,
                 pool: str = "mean", background: int | None = None):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool {pool!r} is not one of {', '.join(POOLS)}")
        if pool == "mil" and background is None:
            raise ValueError("pool 'mil' needs a no_lesion class (its logit is the one averaged over the regions)")
        self.pool = pool
        # no_lesion's column (mil only); no parameter of its own, so either pooling loads the other's weights
        self.background = background if pool == "mil" else None
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
        if self.pool == "mean":
            return self.head(features.mean(dim=(2, 3)))
        # the head on every region (a 1x1 convolution): their mean is exactly "mean"'s logits
        regions = F.conv2d(features, self.head.weight[:, :, None, None], self.head.bias).flatten(2)
        mean = regions.mean(2)
        soft_max = torch.logsumexp(regions, 2) - math.log(regions.shape[2])
        is_background = torch.arange(self.num_classes, device=features.device) == self.background
        return torch.where(is_background, mean, soft_max)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.forward_features(x))


# ``pretrained`` names either a local file or weights on the Hugging Face hub, in timm's terms.
HUB_PREFIXES = ("timm:", "hf-hub:")


def load_backbone_weights(model: LesionNet, source: str | Path) -> None:
    """Load pretrained weights into the backbone; the classifier and embedding are ours.

    ``source``: a local timm state dict (.safetensors), or a timm hub name, ``timm:<model>.<tag>``
    (``timm:resnet50.tv_in1k``) or timm's own ``hf-hub:<org>/<repo>``. A hub name is fetched by
    timm into the Hugging Face cache (``$HF_HOME``, default ~/.cache/huggingface) on first use and
    read from there afterwards, also offline."""
    name = str(source)
    if name.startswith(HUB_PREFIXES):
        _load_state(model, _hub_state(model, name), name)
    else:
        _load_state(model, file_state(Path(source)), source)


def file_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights not found: {path} (give a local .safetensors file, a hub name such "
            f"as timm:resnet50.tv_in1k, or leave model.pretrained empty)"
        )
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: pretrained weights must be a .safetensors file (pickles are not loaded)")
    return {k.removeprefix("backbone."): v for k, v in load_file(str(path)).items()}


def _hub_state(model: LesionNet, name: str) -> dict[str, torch.Tensor]:
    """The state dict of the timm model ``name`` with its pretrained weights. timm resolves the
    name, downloads (or finds in the cache) the weights file and loads it without running code
    (safetensors, else torch.load with weights_only=True)."""
    from timm.models import get_pretrained_cfg, is_model

    timm_name = name.removeprefix("timm:")
    if name.startswith("timm:"):
        arch = timm_name.split(".", 1)[0]
        if not is_model(arch):
            raise ValueError(f"pretrained '{name}': unknown timm model '{arch}' (see timm.list_pretrained())")
        if arch != model.backbone_name:  # before the download: the weights could never load
            raise ValueError(f"pretrained '{name}' holds {arch} weights but the backbone is {model.backbone_name}")
        try:
            cfg = get_pretrained_cfg(timm_name)
        except RuntimeError as e:  # timm: "Invalid pretrained tag (...) for ..."
            raise ValueError(f"pretrained '{name}': {e} (see timm.list_pretrained('{arch}.*'))") from None
        if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
            # timm itself would only warn and leave the network random
            raise ValueError(f"pretrained '{name}': timm has no pretrained weights for it")
        repo = cfg.hf_hub_id or cfg.url or cfg.file
    else:
        repo = timm_name.removeprefix("hf-hub:").split("@", 1)[0]
    try:
        net = timm.create_model(timm_name, pretrained=True, num_classes=0, global_pool="")
    except Exception as e:  # noqa: BLE001 - reported in one line either way, below
        why = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
        # Not reachable, not in the cache, no such repository: the hub client raises OSError
        # subclasses, or its own / its HTTP library's errors, depending on its version.
        if isinstance(e, OSError) or type(e).__module__.split(".")[0] in ("huggingface_hub", "httpx", "requests"):
            raise RuntimeError(
                f"cannot fetch pretrained weights '{name}' ({why}); either download them where the hub is "
                f"reachable (`hf download {repo}` fills the Hugging Face cache, $HF_HOME; copy it here) or "
                f"give a local .safetensors file (model.pretrained=PATH)"
            ) from None
        raise ValueError(f"pretrained '{name}': timm could not build it with its weights ({why})") from None
    return net.state_dict()


def _load_state(model: LesionNet, state: dict[str, torch.Tensor], where: object) -> None:
    """Copy ``state`` into the backbone, refusing any mismatch (a classifier's keys are ignored)."""
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
            f"{where} does not match backbone '{model.backbone_name}': {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(bad)} mis-shaped keys ({first})"
        )
    model.backbone.load_state_dict({k: state[k] for k in own})


def build_model(
    backbone: str,
    num_classes: int,
    embed_dim: int = 128,
    pretrained: str | Path | None = None,
    output_stride: int = 32,
    pool: str = "mean",
    background: int | None = None,
) -> LesionNet:
    """``pool``, ``background``: POOLS; ``background`` is no_lesion's column (pagkd_core.outputs)."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    model = LesionNet(backbone, num_classes, embed_dim, output_stride, pool, background)
    if pretrained:
        load_backbone_weights(model, pretrained)
    return model


def model_from_config(spec, class_names: list[str], embed_dim: int, pretrained: bool = True) -> LesionNet:
    """`spec`: a config.ModelConfig. `pretrained=False` when a checkpoint will overwrite the weights."""
    return build_model(
        spec.backbone, len(class_names), embed_dim, spec.pretrained if pretrained else None, spec.output_stride,
        spec.pool, background_index(class_names),
    )

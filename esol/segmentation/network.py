"""The segmentation network (torchvision DeepLabV3, DeepLab-v2) and its multi-scale + flip inference."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet101
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation import DeepLabV3, deeplabv3_resnet50, deeplabv3_resnet101
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from esol.data.loaders import normalize
from esol.infra.config import ConfigError, ModelConfig, TrainSegConfig
from esol.method.model import SmallResNet, load_resnet_weights

# The ResNet depth behind each ImageNet-initialised architecture (which weights file fits it).
BACKBONE_DEPTH = {"deeplabv3_resnet50": 50, "deeplabv3_resnet101": 101, "deeplabv2_resnet101": 101}
DEEPLABV2_RATES = (6, 12, 18, 24)


class _DictBackbone(nn.Module):
    """Adapts a plain backbone to DeepLabV3's ``{"out": features}`` interface."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.body(x)}


class DeepLabV2Head(nn.Module):
    """DeepLab-v2's ASPP: parallel 3x3 convolutions straight to class scores, one per dilation
    rate, summed (deeplab-pytorch's ``_ASPP``: weights N(0, 0.01), biases 0)."""

    def __init__(self, in_channels: int, num_classes: int, rates: tuple[int, ...] = DEEPLABV2_RATES) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=rate, dilation=rate, bias=True) for rate in rates
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([branch(x) for branch in self.branches]).sum(0)


def backbone_weights_file(cfg: TrainSegConfig, model_cfg: ModelConfig) -> str:
    """The pre-staged backbone weights for ``cfg.arch``: ``train_seg.weights_file`` if set, else
    ``model.weights_file`` when it is a ResNet of the same depth (the classifier's ResNet-50);
    "" for none (ImageNet weights through torchvision when ``model.pretrained``, else random)."""
    if cfg.weights_file:
        return cfg.weights_file
    if not model_cfg.weights_file or cfg.arch == "deeplabv3_small":
        return ""
    if BACKBONE_DEPTH[cfg.arch] == 50 and model_cfg.backbone == "resnet50":
        return model_cfg.weights_file
    raise ConfigError(
        f"train_seg.arch {cfg.arch}: model.weights_file ({model_cfg.weights_file}) is a {model_cfg.backbone} "
        f"backbone; set train_seg.weights_file to a ResNet-{BACKBONE_DEPTH[cfg.arch]} state dict"
    )


def build_seg_model(
    cfg: TrainSegConfig, model_cfg: ModelConfig, num_classes: int, *, init_backbone: bool = True
) -> nn.Module:
    """The network of ``cfg.arch``; every one answers ``{"out": logits at the input's size}`` and
    keeps its new layers in ``.classifier`` (trained at ``lr_head_factor`` times the backbone's lr).

    ``deeplabv3_small``: DeepLabV3 head on the small ResNet (from scratch, synthetic data);
    ``deeplabv3_resnet50`` / ``deeplabv3_resnet101``: torchvision's DeepLabV3 (output stride 8);
    ``deeplabv2_resnet101``: DeepLab-v2, a ResNet-101 dilated to output stride 8 with the
    four-branch ASPP (rates 6/12/18/24). ImageNet backbones come from :func:`backbone_weights_file`
    or torchvision (``model.pretrained``); ``init_backbone=False`` skips both (a checkpoint follows).
    """
    if cfg.arch == "deeplabv3_small":
        body = SmallResNet(model_cfg.width, model_cfg.output_stride)
        return DeepLabV3(_DictBackbone(body), DeepLabHead(body.out_channels, num_classes))
    if cfg.arch == "deeplabv2_resnet101":
        trunk = resnet101(weights=None, replace_stride_with_dilation=[False, True, True])
        model = DeepLabV3(IntermediateLayerGetter(trunk, {"layer4": "out"}), DeepLabV2Head(2048, num_classes))
    elif cfg.arch == "deeplabv3_resnet101":
        model = deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
    else:
        model = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
    if init_backbone:
        # A pre-staged file (no connection opened) or torchvision's ImageNet weights, with a clear
        # error instead of a URLError where neither can be had.
        load_resnet_weights(
            model.backbone, model_cfg.pretrained, backbone_weights_file(cfg, model_cfg), BACKBONE_DEPTH[cfg.arch]
        )
    return model


def _resized(x: torch.Tensor, scale: float) -> torch.Tensor:
    if scale == 1.0:
        return x
    size = [max(round(s * scale), 1) for s in x.shape[-2:]]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def predict_scores(
    model: nn.Module,
    images: list[np.ndarray],
    device: torch.device,
    scales: tuple[float, ...] = (1.0,),
    flip: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class probabilities (B, K, H, W) at the images' size for same-sized images, summed over
    ``scales`` and (``flip``) their horizontal flips; and the plain prediction's probabilities
    (scale 1.0, unflipped: a by-product of the same forward passes), or None without 1.0 in ``scales``.
    """
    x = torch.stack([normalize(img) for img in images]).to(device)
    size = images[0].shape[:2]
    total = plain = None
    for scale in scales:
        xs = _resized(x, scale)
        probs = model(xs)["out"].float().softmax(1)
        if scale == 1.0 and plain is None:
            plain = probs
        if flip:
            probs = probs + model(xs.flip(-1))["out"].float().softmax(1).flip(-1)
        probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
        total = probs if total is None else total + probs
    if plain is not None:
        plain = F.interpolate(plain, size=size, mode="bilinear", align_corners=False)
    return total, plain


def predict(
    model: nn.Module,
    images: list[np.ndarray],
    device: torch.device,
    flip: bool = True,
    scales: tuple[float, ...] = (1.0,),
) -> np.ndarray:
    """Label maps (B, H, W) for same-sized images: the argmax of :func:`predict_scores`."""
    total, _ = predict_scores(model, images, device, scales, flip)
    return labels_of(total)


def labels_of(probs: torch.Tensor) -> np.ndarray:
    """(B, K, H, W) scores -> (B, H, W) uint8 label maps (ties: the first class, as torch.argmax).

    On CPU through numpy: torch's argmax over the channel dimension of an NCHW tensor is several
    times slower there (eval_seg's bench); on a GPU torch's, so that only the labels leave it.
    """
    if probs.device.type == "cpu":
        return probs.numpy().argmax(1).astype(np.uint8)
    return probs.argmax(1).cpu().numpy().astype(np.uint8)

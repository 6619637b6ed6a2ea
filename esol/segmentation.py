"""The segmentation network: torchvision DeepLabV3 trained on pseudo labels."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet50_Weights
from torchvision.models.segmentation import DeepLabV3, deeplabv3_resnet50
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from esol.config import ModelConfig, TrainSegConfig
from esol.data.loaders import normalize
from esol.model import SmallResNet


class _DictBackbone(nn.Module):
    """Adapts a plain backbone to DeepLabV3's ``{"out": features}`` interface."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.body(x)}


def build_seg_model(cfg: TrainSegConfig, model_cfg: ModelConfig, num_classes: int) -> nn.Module:
    """``deeplabv3_small``: DeepLabV3 head on the small ResNet (from scratch, synthetic data);
    ``deeplabv3_resnet50``: torchvision's DeepLabV3-ResNet50, ImageNet backbone if pretrained."""
    if cfg.arch == "deeplabv3_small":
        body = SmallResNet(model_cfg.width, model_cfg.output_stride)
        return DeepLabV3(_DictBackbone(body), DeepLabHead(body.out_channels, num_classes))
    weights = ResNet50_Weights.IMAGENET1K_V1 if model_cfg.pretrained else None
    return deeplabv3_resnet50(weights=None, weights_backbone=weights, num_classes=num_classes, aux_loss=False)


@torch.no_grad()
def predict(model: nn.Module, images: list[np.ndarray], device: torch.device, flip: bool = True) -> np.ndarray:
    """Label maps (B, H, W) for same-sized images, averaging logits over a horizontal flip."""
    x = torch.stack([normalize(img) for img in images]).to(device)
    logits = model(x)["out"].float().softmax(1)
    if flip:
        logits = logits + model(x.flip(-1))["out"].float().softmax(1).flip(-1)
    logits = F.interpolate(logits, size=images[0].shape[:2], mode="bilinear", align_corners=False)
    return logits.argmax(1).cpu().numpy().astype(np.uint8)

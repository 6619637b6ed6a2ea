"""The ESOL classifier (method.md, section 2) and the backbones it runs on.

F   = backbone(x)
o1  = bound(off1(F))                   expansion sampler
F1  = relu(deform_conv(F, o1, W1))
F1c = clip(F1)                         clip_from: expansion = identity until stage 1 (plain CAM)
o2  = bound(off2(F1c))                 shrinkage sampler
F2  = relu(deform_conv(F1c, o2, W2))   W2 is never trained
s   = fc(gap(F2));  CAM_c = relu(fc_c . F2)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.ops import deform_conv2d

from esol.config import ModelConfig

OFFSET_CHANNELS = 18  # 2 * 3 * 3: a (dy, dx) pair per tap of a 3x3 kernel


class SmallResNet(nn.Module):
    """A narrow ResNet built from torchvision's BasicBlock, for training from scratch."""

    def __init__(self, width: int = 32, output_stride: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        widths = [width, 2 * width, 4 * width, 4 * width]
        strides = [1, 2, 2, 2 if output_stride == 16 else 1]
        dilations = [1, 1, 1, 1 if output_stride == 16 else 2]
        layers = []
        in_ch = width
        for out_ch, stride, dilation in zip(widths, strides, dilations, strict=True):
            downsample = None
            if stride != 1 or in_ch != out_ch:
                downsample = nn.Sequential(
                    nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
                )
            block = tv_resnet.BasicBlock(in_ch, out_ch, stride=stride, downsample=downsample)
            if dilation > 1:
                for conv in (block.conv1, block.conv2):
                    conv.dilation, conv.padding = (dilation, dilation), (dilation, dilation)
            layers.append(block)
            in_ch = out_ch
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.out_channels = in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class ResNet50Backbone(nn.Module):
    """torchvision ResNet-50 trunk (no pooling / fc), dilated to the requested output stride."""

    def __init__(self, output_stride: int = 16, pretrained: bool = False, weights_file: str = "") -> None:
        super().__init__()
        dilation = [False, output_stride == 8, True]
        weights = tv_resnet.ResNet50_Weights.IMAGENET1K_V1 if pretrained and not weights_file else None
        net = tv_resnet.resnet50(weights=weights, replace_stride_with_dilation=dilation)
        if weights_file:
            load_backbone_weights(net, weights_file)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = 2048
        # IRN recipe: the stem and layer1 stay at their ImageNet values.
        self.frozen_prefix = (self.stem, self.layer1) if (pretrained or weights_file) else ()
        for module in self.frozen_prefix:
            for p in module.parameters():
                p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def load_backbone_weights(net: nn.Module, path: str | Path) -> None:
    """Load a pre-staged state dict into ``net``; refuse pickled code and mismatched shapes."""
    from esol.checkpoint import safe_load
    from esol.io import InputError

    state = safe_load(path)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = net.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state and not k.startswith("fc.")]
    if mismatched or missing:
        raise InputError(
            f"{path}: weights do not fit the backbone (missing {missing[:3]}, shape mismatch {mismatched[:3]})"
        )
    net.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def build_backbone(cfg: ModelConfig) -> nn.Module:
    if cfg.backbone == "resnet_small":
        return SmallResNet(cfg.width, cfg.output_stride)
    if cfg.backbone == "resnet50":
        return ResNet50Backbone(cfg.output_stride, cfg.pretrained, cfg.weights_file)
    raise ValueError(f"model.backbone: unknown backbone {cfg.backbone!r}")


class GradientReversal(torch.autograd.Function):
    """Identity forward; multiplies the gradient by -scale backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    return GradientReversal.apply(x, scale)


def clip_features(features: torch.Tensor, mode: str, quantile: float, value: float) -> torch.Tensor:
    """Feature clipping: ``min(F, tau)``, tau a per-image per-channel spatial quantile or fixed."""
    if mode == "none":
        return features
    if mode == "fixed":
        return features.clamp(max=value)
    if mode == "quantile":
        b, c = features.shape[:2]
        flat = features.reshape(b, c, -1).float()
        tau = torch.quantile(flat, quantile, dim=2, keepdim=True).to(features.dtype)
        return torch.minimum(features, tau.reshape(b, c, 1, 1).detach())
    raise ValueError(f"model.clip_mode: unknown mode {mode!r}")


def identity_kernel(channels: int) -> torch.Tensor:
    """A C x C x 3 x 3 kernel that copies each channel's centre tap: conv with it is the identity."""
    kernel = torch.zeros(channels, channels, 3, 3)
    kernel[torch.arange(channels), torch.arange(channels), 1, 1] = 1.0
    return kernel


@dataclass
class ESOLOutput:
    logits: torch.Tensor  # (B, K)
    cams: torch.Tensor  # (B, K, h, w), after ReLU
    offset1: torch.Tensor  # (B, 18, h, w), bounded
    offset2: torch.Tensor  # (B, 18, h, w), bounded
    f1c: torch.Tensor  # clipped expanded feature
    f2: torch.Tensor  # shrunk feature


class ESOLNet(nn.Module):
    """Backbone + expansion (off1, W1, clip) + shrinkage (off2, W2) + 1x1 classifier."""

    def __init__(self, cfg: ModelConfig, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg)
        channels = self.backbone.out_channels
        self.off1 = nn.Conv2d(channels, OFFSET_CHANNELS, 3, padding=1)
        self.w1 = nn.Parameter(torch.empty(channels, channels, 3, 3))
        nn.init.kaiming_normal_(self.w1, mode="fan_out", nonlinearity="relu")
        self.off2 = nn.Conv2d(channels, OFFSET_CHANNELS, 3, padding=1)
        self.w2 = nn.Parameter(identity_kernel(channels), requires_grad=False)
        for offset_conv in (self.off1, self.off2):
            nn.init.zeros_(offset_conv.weight)
            nn.init.zeros_(offset_conv.bias)
        self.classifier = nn.Conv2d(channels, num_classes, 1, bias=False)
        self.grl_scale: float | None = None  # set: a gradient-reversal layer behind off1 (stage 1)
        self.clip_quantile: float | None = None  # set: overrides cfg.clip_quantile (stage 1 training)
        self.use_offsets = True  # False: offsets held at zero (stage 0), plain convolutions
        self.clipped = True  # False: F1c = F1 (a model that never went through expansion, model.clip_from)

    def init_w2(self) -> None:
        """Initialise W2 per ``model.w2_init``, when stage 2 starts (W1 is trained by then)."""
        with torch.no_grad():
            if self.cfg.w2_init == "copy_w1":
                self.w2.copy_(self.w1)
            else:
                self.w2.copy_(identity_kernel(self.w2.shape[0]))

    def bound(self, raw: torch.Tensor) -> torch.Tensor:
        return self.cfg.max_offset * torch.tanh(raw)

    def _deform(self, x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if not self.use_offsets:
            return F.conv2d(x, weight, padding=1)
        return deform_conv2d(x, offset.to(x.dtype), weight.to(x.dtype), padding=1)

    def forward(self, x: torch.Tensor, expansion_detached: bool = False) -> ESOLOutput:
        """Run the whole chain. ``expansion_detached`` cuts gradients at F1c (stage 2)."""
        feats = self.backbone(x)
        b, _, h, w = feats.shape
        zeros = feats.new_zeros(b, OFFSET_CHANNELS, h, w)
        if self.use_offsets:
            o1 = self.bound(self.off1(feats))
        else:
            o1 = zeros
        # Reversed only on the way into DCN1: o1 itself (returned, e.g. for an offset penalty) is not.
        sampled = reverse_gradient(o1, self.grl_scale) if self.grl_scale is not None and self.use_offsets else o1
        f1 = F.relu(self._deform(feats, sampled, self.w1))
        quantile = self.cfg.clip_quantile if self.clip_quantile is None else self.clip_quantile
        f1c = clip_features(f1, self.cfg.clip_mode if self.clipped else "none", quantile, self.cfg.clip_value)
        if expansion_detached:
            f1c = f1c.detach()
        o2 = self.bound(self.off2(f1c)) if self.use_offsets else zeros
        f2 = F.relu(self._deform(f1c, o2, self.w2))
        scores = self.classifier(f2)  # fc(gap(F2)) == gap(fc(F2)) for a 1x1 linear classifier
        cams = F.relu(scores)
        logits = scores.mean(dim=(2, 3))
        return ESOLOutput(logits=logits, cams=cams, offset1=o1, offset2=o2, f1c=f1c, f2=f2)

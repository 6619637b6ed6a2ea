"""The ESOL classifier (method.md, section 2) and the backbones it runs on.

F   = backbone(x)
o1  = bound(off1(F))                   expansion sampler
F1  = relu(deform_conv(F, o1, W1))
F1c = clip(F1)                         clip_from: expansion = identity until stage 1 (plain CAM)
o2  = bound(off2(F1c))                 shrinkage sampler
F2  = relu(deform_conv(F1c, o2, W2))   W2 is never trained
s   = fc(gap(F2));  CAM_c = relu(fc_c . F2)

W2 is the identity kernel: deform_conv(F1c, o2, W2) is then F1c sampled bilinearly at the centre
tap's offset, which :func:`sample_at_centre_tap` computes without the dense 2048x2048x3x3
convolution (half of the head's cost at VOC scale; issue 18).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.ops import deform_conv2d

from esol.infra.config import ModelConfig
from esol.infra.numerics import require_finite

OFFSET_CHANNELS = 18  # 2 * 3 * 3: a (dy, dx) pair per tap of a 3x3 kernel
CENTRE_TAP = 4  # tap (1, 1) of the 3x3 kernel, taps in row-major order


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
        net = tv_resnet.resnet50(weights=None, replace_stride_with_dilation=dilation)
        load_resnet_weights(net, pretrained, weights_file)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = 2048
        # As IRN (net/resnet50_cam.py: conv1/bn1 frozen, ``stage2(x).detach()``): the stem, layer1
        # and layer2 keep their ImageNet values; layer3 and layer4 train.
        self.frozen_prefix = (self.stem, self.layer1, self.layer2) if (pretrained or weights_file) else ()
        for module in self.frozen_prefix:
            for p in module.parameters():
                p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def load_resnet_weights(net: nn.Module, pretrained: bool, weights_file: str | Path, depth: int = 50) -> None:
    """Load ``weights_file`` (a pre-staged state dict, no connection opened) or, with ``pretrained``
    and no file, torchvision's ImageNet weights (its cache, else a download) into a ResNet-``depth``
    ``net`` (a full torchvision ResNet or its trunk); keys the net lacks (``fc.*``) are ignored."""
    from esol.infra.io import InputError

    if weights_file:
        load_backbone_weights(net, weights_file)
        return
    if not pretrained:
        return
    import urllib.error

    weights = {50: tv_resnet.ResNet50_Weights, 101: tv_resnet.ResNet101_Weights}[depth].IMAGENET1K_V1
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except (urllib.error.URLError, OSError) as exc:
        raise InputError(
            f"model.pretrained: true needs the ImageNet ResNet-{depth} weights ({weights.url}), which are neither in "
            f"torch's cache ($TORCH_HOME/hub/checkpoints) nor downloadable here ({exc}). Download that file on a "
            "machine with internet and set model.weights_file to its path (or copy it into the cache)."
        ) from exc
    own = net.state_dict()
    net.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)


def load_backbone_weights(net: nn.Module, path: str | Path) -> None:
    """Load a pre-staged state dict into ``net``; refuse pickled code and mismatched shapes."""
    from esol.infra.io import InputError
    from esol.training.checkpoint import safe_load

    state = safe_load(path)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: model.weights_file must hold a state dict (parameter name -> tensor)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = net.state_dict()
    mismatched = [
        f"{k} {tuple(state[k].shape)} (needs {tuple(v.shape)})"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    missing = [k for k in own if k not in state]
    if mismatched or missing:
        raise InputError(
            f"{path}: model.weights_file does not hold torchvision ResNet-50 weights: "
            f"{len(missing)} of {len(own)} tensors missing (e.g. {missing[:3]}), "
            f"{len(mismatched)} of another shape (e.g. {mismatched[:3]})"
        )
    net.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)


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


def clip_features(features: torch.Tensor, mode: str, quantile: float) -> torch.Tensor:
    """Feature clipping: ``min(F, tau)``, tau a per-image per-channel spatial quantile."""
    if mode == "none":
        return features
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


def is_identity_kernel(kernel: torch.Tensor) -> bool:
    """Whether ``kernel`` (C x C x 3 x 3) is :func:`identity_kernel` exactly."""
    channels = kernel.shape[0]
    if kernel.shape != (channels, channels, 3, 3):
        return False
    centre = kernel[:, :, 1, 1]
    eye = torch.eye(channels, dtype=kernel.dtype, device=kernel.device)
    return bool(torch.equal(centre, eye)) and int(torch.count_nonzero(kernel)) == channels


def sample_at_centre_tap(x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``deform_conv2d(x, offset, identity_kernel(C), padding=1)`` without the convolution.

    With the identity kernel only the centre tap counts: output (h, w) is ``x`` sampled
    bilinearly at (h + dy, w + dx), (dy, dx) = ``offset[:, 8:10]`` (torchvision's layout: a
    (dy, dx) pair per tap, taps in row-major order), corners outside the map read as zero.
    Computed as torchvision does (pixel coordinates, the four corners weighted), so values and
    gradients, with respect to ``x`` and to ``offset``, agree to rounding, on the border too.
    """
    b, c, h, w = x.shape
    # As torchvision under autocast: computed in float32 (coordinates in bfloat16 would be off by
    # up to 1/8 cell at 32 cells), returned in the input's dtype.
    dtype = torch.promote_types(x.dtype, torch.float32)
    given, x = x.dtype, x.to(dtype)
    y = torch.arange(h, device=x.device, dtype=dtype).view(1, h, 1) + offset[:, 2 * CENTRE_TAP].to(dtype)
    x_pos = torch.arange(w, device=x.device, dtype=dtype).view(1, 1, w) + offset[:, 2 * CENTRE_TAP + 1].to(dtype)
    y_low, x_low = torch.floor(y), torch.floor(x_pos)
    frac_y, frac_x = y - y_low, x_pos - x_low  # the gradient reaches the offsets through these
    y_low, x_low = y_low.long(), x_low.long()
    flat = x.reshape(b, c, h * w)
    out = None
    for rows, weight_y in ((y_low, 1 - frac_y), (y_low + 1, frac_y)):
        for cols, weight_x in ((x_low, 1 - frac_x), (x_low + 1, frac_x)):
            inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
            index = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).view(b, 1, h * w).expand(b, c, h * w)
            weight = (weight_y * weight_x * inside.to(x.dtype)).view(b, 1, h, w)
            term = flat.gather(2, index).view(b, c, h, w) * weight
            out = term if out is None else out + term
    return out.to(given)


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
        self.use_offsets = True  # False: offsets held at zero (stage 0), plain convolutions
        self.clipped = True  # False: F1c = F1 (a model that never went through expansion, model.clip_from)
        self.dense_w2 = False  # True: W2 as a dense deformable convolution even when it is the identity (bench)
        self._w2_identity: tuple[tuple, bool] | None = None  # (W2's storage and version, is it the identity)

    def bound(self, raw: torch.Tensor) -> torch.Tensor:
        return self.cfg.max_offset * torch.tanh(raw)

    def w2_is_identity(self) -> bool:
        """Whether W2 is the identity kernel; rechecked only after W2 changed (in-place writes
        such as :meth:`init_w2` and ``load_state_dict`` bump its version counter)."""
        key = (self.w2.data_ptr(), self.w2.device, self.w2._version)
        if self._w2_identity is None or self._w2_identity[0] != key:
            self._w2_identity = (key, is_identity_kernel(self.w2.detach()))
        return self._w2_identity[1]

    def shrink(self, f1c: torch.Tensor, o2: torch.Tensor) -> torch.Tensor:
        """F2 before its ReLU: deform_conv(F1c, o2, W2), by sampling when W2 is the identity."""
        if self.dense_w2 or not self.w2_is_identity():
            return self._deform(f1c, o2, self.w2, "DCN2 (shrinkage)")
        if not self.use_offsets:
            return f1c  # the identity convolution
        require_finite(o2, "DCN2 (shrinkage) offsets")
        return sample_at_centre_tap(f1c, o2)

    def _deform(self, x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, name: str) -> torch.Tensor:
        if not self.use_offsets:
            return F.conv2d(x, weight, padding=1)
        # deform_conv2d reads memory at the offsets: NaN ones crash the process (SIGSEGV) instead of raising.
        require_finite(offset, f"{name} sampling offsets")
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
        f1 = F.relu(self._deform(feats, sampled, self.w1, "DCN1 (expansion)"))
        f1c = clip_features(f1, self.cfg.clip_mode if self.clipped else "none", self.cfg.clip_quantile)
        if expansion_detached:
            f1c = f1c.detach()
        o2 = self.bound(self.off2(f1c)) if self.use_offsets else zeros
        f2 = F.relu(self.shrink(f1c, o2))
        scores = self.classifier(f2)  # fc(gap(F2)) == gap(fc(F2)) for a 1x1 linear classifier
        cams = F.relu(scores)
        logits = scores.mean(dim=(2, 3))
        return ESOLOutput(logits=logits, cams=cams, offset1=o1, offset2=o2, f1c=f1c, f2=f2)

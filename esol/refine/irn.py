"""IRN's inter-pixel relation network (Ahn, Cho, Kwak, CVPR 2019) and its training losses.

Two branches read five levels of a backbone (the stem and the four residual stages):

- boundary detection: each level -> 1x1 conv (32 channels), GroupNorm, resized to the stride-4
  grid, ReLU; concatenated -> 1x1 conv -> one boundary logit per cell;
- displacement field: the two shallow levels on the stride-4 grid, the three deep ones fused on
  the stride-8 grid and upsampled, -> two channels (dy, dx in grid cells), the offset from each
  cell to its instance's centroid.

Losses (from IR labels, pairs within a radius, see esol.refine.affinity): the affinity of a pair
is 1 - the largest boundary probability on its path; -log(a) on same-class pairs (background and
foreground pairs averaged separately, then halved), -log(1 - a) on different-class pairs; the
displacement difference of a foreground pair should equal its offset, of a background pair 0
(L1). Total: (pos + neg) / 2 + (dp_fg + dp_bg) / 2, IRN's weights.

The backbone is ImageNet's, frozen, as in IRN, unless ``train_backbone`` (a backbone without
pretrained weights: the synthetic default); the displacement branch then reads it detached, so
the boundaries, the only output the semantic masks use, are trained by the affinity loss alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from esol.infra.config import ModelConfig
from esol.method.model import build_backbone
from esol.refine.affinity import PairOffsets, affinity_labels, pair_destinations, path_affinity

EDGE_WIDTH = 32
# Displacement-branch width per backbone: IRN's 256 on ResNet-50; a quarter on the small ResNet
# (whose deepest level has 4 * model.width channels), which keeps it CPU-sized.
DP_WIDTH = {"resnet50": 256, "resnet_small": 64}


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resampling to ``size`` (a 2x reduction is the mean of each 2x2 block)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _unit(in_ch: int, out_ch: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.GroupNorm(groups, out_ch))


def _groups(channels: int) -> int:
    """GroupNorm groups as IRN sets them: 8 for 64 channels, 16 from 128 on."""
    return max(1, min(16, channels // 8))


def backbone_levels(backbone: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The stem's and each residual stage's output (a backbone with ``stem``, ``layer1..4``)."""
    levels = [backbone.stem(x)]
    for layer in (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4):
        levels.append(layer(levels[-1]))
    return levels


def level_channels(backbone: nn.Module) -> list[int]:
    """Channels of the five levels, from one small forward pass in eval mode."""
    mode = backbone.training
    backbone.eval()
    with torch.no_grad():
        levels = backbone_levels(backbone, torch.zeros(1, 3, 64, 64))
    backbone.train(mode)
    return [int(level.shape[1]) for level in levels]


class IRNet(nn.Module):
    """Boundary and displacement branches on a backbone's five levels; outputs on the stride-4 grid."""

    def __init__(self, backbone: nn.Module, train_backbone: bool = False, dp_width: int = 256) -> None:
        super().__init__()
        self.backbone, self.train_backbone = backbone, train_backbone
        for p in backbone.parameters():
            p.requires_grad_(train_backbone)
        c = level_channels(backbone)
        self.edge_levels = nn.ModuleList(_unit(ch, EDGE_WIDTH, 4) for ch in c)
        self.edge_out = nn.Conv2d(EDGE_WIDTH * len(c), 1, 1, bias=True)
        # IRN's widths for dp_width 256: 64 and 128 on the stride-4 levels, 256 elsewhere.
        w, quarter, half = dp_width, dp_width // 4, dp_width // 2
        self.dp_fine = nn.ModuleList([_unit(c[0], quarter, _groups(quarter)), _unit(c[1], half, _groups(half))])
        self.dp_coarse = nn.ModuleList(_unit(ch, w, _groups(w)) for ch in c[2:])
        self.dp_fuse = _unit(3 * w, w, _groups(w))
        self.dp_out = nn.Sequential(
            _unit(quarter + half + w, w, _groups(w)), nn.ReLU(inplace=True), nn.Conv2d(w, 2, 1, bias=False)
        )

    def branch_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(boundary branch, displacement branch) parameters: IRN trains the second at 10x the lr."""
        edge = [*self.edge_levels.parameters(), *self.edge_out.parameters()]
        dp = [*self.dp_fine.parameters(), *self.dp_coarse.parameters(), *self.dp_fuse.parameters()]
        return edge, dp + list(self.dp_out.parameters())

    def train(self, mode: bool = True) -> IRNet:
        super().train(mode)
        if not self.train_backbone:
            self.backbone.eval()  # frozen, BatchNorm statistics included
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, H, W) -> boundary logits (B, 1, h, w), displacements (B, 2, h, w);
        h, w = ceil(H / 4), ceil(W / 4)."""
        fine = (-(-x.shape[-2] // 4), -(-x.shape[-1] // 4))
        coarse = (-(-fine[0] // 2), -(-fine[1] // 2))
        with torch.set_grad_enabled(self.train_backbone and torch.is_grad_enabled()):
            levels = backbone_levels(self.backbone, x)
        edges = [F.relu(_resize(unit(level), fine)) for unit, level in zip(self.edge_levels, levels, strict=True)]
        edge = self.edge_out(torch.cat(edges, dim=1))
        levels = [level.detach() for level in levels]
        dp_fine = [F.relu(_resize(unit(level), fine)) for unit, level in zip(self.dp_fine, levels[:2], strict=True)]
        dp_coarse = [
            F.relu(_resize(unit(level), coarse)) for unit, level in zip(self.dp_coarse, levels[2:], strict=True)
        ]
        fused = F.relu(_resize(self.dp_fuse(torch.cat(dp_coarse, dim=1)), fine))
        displacement = self.dp_out(torch.cat([*dp_fine, fused], dim=1))
        return edge, displacement


def build_irn(model_cfg: ModelConfig, train_backbone: bool) -> IRNet:
    """IRNet on the classifier's backbone kind (``model.backbone``), with its weights loaded as the
    classifier loads them: ImageNet or ``model.weights_file`` for ResNet-50, none for the small one."""
    return IRNet(build_backbone(model_cfg), train_backbone=train_backbone, dp_width=DP_WIDTH[model_cfg.backbone])


@dataclass
class IRNLosses:
    total: torch.Tensor
    pos_bg: torch.Tensor
    pos_fg: torch.Tensor
    neg: torch.Tensor
    dp_fg: torch.Tensor
    dp_bg: torch.Tensor

    def scalars(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k).detach() for k in ("pos_bg", "pos_fg", "neg", "dp_fg", "dp_bg")}


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / (mask.sum() + 1e-5)


def irn_losses(
    edge_logits: torch.Tensor, displacement: torch.Tensor, labels: torch.Tensor, pairs: PairOffsets
) -> IRNLosses:
    """IRN's affinity and displacement losses for a batch; ``labels`` (B, h, w): IR labels on the grid."""
    pair = affinity_labels(labels, pairs)
    bg, fg, neg = (m.float() for m in (pair.bg_pos, pair.fg_pos, pair.neg))
    affinity = path_affinity(torch.sigmoid(edge_logits.float()[:, 0]), pairs)  # (B, P, h, w)
    pos_loss = -torch.log(affinity + 1e-5)
    neg_loss = -torch.log(1.0 + 1e-5 - affinity)
    pos_bg, pos_fg = _masked_mean(pos_loss, bg), _masked_mean(pos_loss, fg)
    neg_mean = _masked_mean(neg_loss, neg)
    disp = displacement.float()
    pair_disp = disp.unsqueeze(2) - pair_destinations(disp, pairs, 0.0)  # (B, 2, P, h, w)
    target = pairs.as_tensor(disp.device).T[None, :, :, None, None]  # (1, 2, P, 1, 1)
    # Summed over both coordinates, divided by twice the pair count (IRN's normalisation).
    dp_fg = _masked_mean((pair_disp - target).abs(), fg.unsqueeze(1)) / 2
    dp_bg = _masked_mean(pair_disp.abs(), bg.unsqueeze(1)) / 2
    total = ((pos_bg + pos_fg) / 2 + neg_mean) / 2 + (dp_fg + dp_bg) / 2
    return IRNLosses(total=total, pos_bg=pos_bg, pos_fg=pos_fg, neg=neg_mean, dp_fg=dp_fg, dp_bg=dp_bg)


@torch.no_grad()
def predict_boundary(model: IRNet, image: torch.Tensor) -> torch.Tensor:
    """Boundary probabilities (h, w) of one normalised image (3, H, W): the logits of the image
    and its mirror image averaged, then the sigmoid (IRN's inference)."""
    x = torch.stack([image, image.flip(-1)])
    edge, _ = model(x)
    edge = edge.float()[:, 0]
    return torch.sigmoid((edge[0] + edge[1].flip(-1)) / 2)

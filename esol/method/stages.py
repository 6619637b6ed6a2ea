"""The three classifier training stages (method.md, section 3): what trains, and the losses.

| stage | trains                                | frozen                      | loss               |
| 0     | backbone, W1, classifier (offsets 0)  | off1, off2, W2              | L_cls              |
| 1     | off1 (gradient reversed), classifier  | backbone, W1, W2, off2      | L_cls (off1: max)  |
| 2     | off2, classifier                      | everything up to F1c, W2    | L_cls + la*L_area  |
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from esol.method.model import ESOLNet

STAGES = ("train_cam", "train_expansion", "train_shrinkage")


def set_trainable(model: ESOLNet, stage: str) -> None:
    """Freeze everything, then unfreeze exactly the parameters ``stage`` trains; set modes."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.grl_scale = None
    model.use_offsets = stage != "train_cam"
    if stage == "train_cam":
        frozen = {id(p) for m in getattr(model.backbone, "frozen_prefix", ()) for p in m.parameters()}
        for p in model.backbone.parameters():
            p.requires_grad_(id(p) not in frozen)
        model.w1.requires_grad_(True)
    elif stage == "train_expansion":
        for p in model.off1.parameters():
            p.requires_grad_(True)
    elif stage == "train_shrinkage":
        for p in model.off2.parameters():
            p.requires_grad_(True)
    else:
        raise ValueError(f"unknown stage {stage!r}")
    for p in model.classifier.parameters():
        p.requires_grad_(True)


def set_train_mode(model: ESOLNet, stage: str, freeze_bn: bool) -> None:
    """Train mode, with BatchNorm statistics frozen wherever the backbone is not learning."""
    model.train()
    if stage != "train_cam" or freeze_bn:
        model.backbone.eval()


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.multilabel_soft_margin_loss(logits.float(), labels.float())


def normalized_cams(cams: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each CAM divided by its spatial maximum (values in [0, 1])."""
    peak = cams.flatten(2).amax(dim=2)[..., None, None]
    return cams / (peak + eps)


def area_loss(
    cams: torch.Tensor,
    labels: torch.Tensor,
    form: str = "mean",
    expanded: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_area over the image's positive classes of max-normalised CAMs.

    * ``mean``: the spatial mean of the normalised CAM (pays for every activated pixel);
    * ``outside_expansion``: the same, charged only where the expansion-stage CAM is low
      (``expanded``: normalised stage-1 CAMs, detached), so shrinkage cuts what expansion spilt
      beyond the object, not the object itself.
    """
    norm = normalized_cams(cams.float())
    if form == "outside_expansion":
        if expanded is None:
            raise ValueError("area_form outside_expansion needs the expansion CAMs")
        norm = norm * (1 - expanded.float())
    per_class = norm.flatten(2).mean(dim=2)
    positives = labels.float()
    return (per_class * positives).sum() / positives.sum().clamp(min=1)


def mean_offset(offset: torch.Tensor) -> float:
    """Mean Euclidean length of the (dy, dx) sampling offsets, in feature-map cells."""
    return float(mean_offset_tensor(offset))


def mean_offset_tensor(offset: torch.Tensor) -> torch.Tensor:
    """:func:`mean_offset` as a 0-d tensor on the offsets' device (read it without a host sync per step)."""
    b, _, h, w = offset.shape
    pairs = offset.detach().float().reshape(b, -1, 2, h, w)
    return pairs.norm(dim=2).mean()


def stage_step(
    model: ESOLNet,
    stage: str,
    batch: tuple[torch.Tensor, torch.Tensor],
    to_device,
    cfg: Any,
    forward: torch.nn.Module | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward one batch for ``stage``; returns the loss to minimise and scalars to log (0-d tensors,
    read once per epoch by :func:`esol.training.loop.run_epoch`).

    ``forward``: the module to run the forward pass through, when not ``model`` itself (its
    DistributedDataParallel wrapper).
    """
    images, labels = (to_device(t) for t in batch)
    out = (forward or model)(images, expansion_detached=stage == "train_shrinkage")
    loss = classification_loss(out.logits, labels)
    scalars = {"cls_loss": loss.detach()}
    if stage == "train_expansion":
        scalars["offset1"] = mean_offset_tensor(out.offset1)
    if stage == "train_shrinkage":
        expanded = (
            normalized_cams(F.relu(model.classifier(out.f1c))).detach()
            if cfg.area_form == "outside_expansion"
            else None
        )
        area = area_loss(out.cams, labels, cfg.area_form, expanded)
        loss = loss + cfg.area_weight * area
        scalars.update(area_loss=area.detach(), offset2=mean_offset_tensor(out.offset2))
    return loss, scalars

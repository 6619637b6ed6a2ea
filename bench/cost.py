"""Cost of the ESOL classifier at VOC scale against IRN's CAM network and the method's floor.

Three networks on the same ResNet-50 trunk (random weights, output stride 16, the ``voc12``
recipe's model; 20 classes), timed side by side, batch 1:

- ``esol``: :class:`esol.method.model.ESOLNet` as the pipeline runs it (W2, the identity, by sampling);
- ``esol_dense``: the same with W2 computed as a dense 2048->2048 3x3 deformable convolution
  (``ESOLNet.dense_w2``: the form before issue 18), for before/after in one run;
- ``irn``: IRN's CAM network: the trunk, global average pooling, a 1x1 classifier;
- ``floor``: IRN's network plus W1 alone: one 2048->2048 3x3 ``deform_conv2d`` with its offset
  branch (the least any method with a learned deformable layer pays).

For each image size, ``forward`` times a no-grad forward in eval mode (CAM inference) and
``forward+backward`` a training step's forward and backward in train mode (every parameter but
W2 trainable). Figures: ESOL over the floor (target <= 1.10); printed beside them: ESOL over IRN,
the dense form over the floor, and the head's share of ESOL's step, 1 - irn / esol.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

from bench import common

TARGET = "<= 1.10"
SIZES = {"512x512": (512, 512), "500x375": (375, 500)}  # name -> (height, width); VOC's usual image
QUICK_SIZES = {"32x32": (32, 32), "32x24": (24, 32)}
NUM_CLASSES = 20


class IrnCamNet(nn.Module):
    """IRN's ``resnet50_cam.Net``: trunk, global average pooling, 1x1 classifier without bias."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Conv2d(backbone.out_channels, num_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x).mean(dim=(2, 3), keepdim=True)
        return self.classifier(feats).flatten(1)


class FloorNet(IrnCamNet):
    """IRN's network with W1 before the classifier: offsets from a 3x3 conv, one deformable conv."""

    def __init__(self, backbone: nn.Module, num_classes: int, max_offset: float) -> None:
        super().__init__(backbone, num_classes)
        channels = backbone.out_channels
        self.max_offset = max_offset
        self.off1 = nn.Conv2d(channels, 18, 3, padding=1)
        self.w1 = nn.Parameter(torch.empty(channels, channels, 3, 3))
        nn.init.kaiming_normal_(self.w1, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        offset = self.max_offset * torch.tanh(self.off1(feats))
        f1 = F.relu(deform_conv2d(feats, offset, self.w1, padding=1))
        return self.classifier(f1).mean(dim=(2, 3))


def build_networks(dense: bool) -> dict[str, nn.Module]:
    """The networks to time, on the voc12 recipe's model with random weights."""
    from esol.infra.config import params_from_dict
    from esol.method.model import ESOLNet, ResNet50Backbone

    raw = common.params_dict(False, {"dataset": {"name": "voc12"}})
    raw["recipes"]["voc12"]["model"]["pretrained"] = False
    cfg = params_from_dict(raw).model
    torch.manual_seed(0)
    nets: dict[str, nn.Module] = {"esol": ESOLNet(cfg, NUM_CLASSES)}
    if dense:
        nets["esol_dense"] = ESOLNet(cfg, NUM_CLASSES)
        nets["esol_dense"].dense_w2 = True
    nets["irn"] = IrnCamNet(ResNet50Backbone(cfg.output_stride), NUM_CLASSES)
    nets["floor"] = FloorNet(ResNet50Backbone(cfg.output_stride), NUM_CLASSES, cfg.max_offset)
    for net in nets.values():
        for name, module in net.named_modules():
            if name.startswith("off"):  # non-zero offsets: the samplers read between cells, as after training
                nn.init.normal_(module.weight, std=1e-3)
    return nets


def logits_of(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = net(x)
    return out if isinstance(out, torch.Tensor) else out.logits


def make_side(net: nn.Module, x: torch.Tensor, labels: torch.Tensor, backward: bool) -> Callable[[], None]:
    """One timed call: a no-grad eval forward, or a train-mode forward and backward."""
    cuda = x.device.type == "cuda"

    def forward() -> None:
        net.eval()
        with torch.no_grad():
            logits_of(net, x)
        if cuda:
            torch.cuda.synchronize()

    def step() -> None:
        net.train()
        net.zero_grad(set_to_none=True)
        loss = F.multilabel_soft_margin_loss(logits_of(net, x), labels)
        loss.backward()
        if cuda:
            torch.cuda.synchronize()

    return step if backward else forward


def measure(device: torch.device, sizes: dict, reps: int, warmup: bool, dense: bool) -> tuple[list, dict]:
    """Figures and context lines for one device."""
    nets = {name: net.to(device) for name, net in build_networks(dense).items()}
    for net in nets.values():
        if hasattr(net, "w2"):
            net.w2.requires_grad_(False)  # never trained
    figures, extra = [], {}
    g = torch.Generator().manual_seed(0)
    for size_name, (h, w) in sizes.items():
        x = torch.randn(1, 3, h, w, generator=g).to(device)
        labels = torch.zeros(1, NUM_CLASSES, device=device)
        labels[0, :2] = 1
        for mode, backward in (("forward", False), ("forward+backward", True)):
            sides = {name: make_side(net, x, labels, backward) for name, net in nets.items()}
            times = common.interleaved(sides, reps, warmup=warmup)
            tag = f"{device.type},{size_name},{mode}"
            over_floor = common.ratios(times["esol"], times["floor"])
            over_irn = common.ratios(times["esol"], times["irn"])
            share = common.stats([1 - i / e for i, e in zip(times["irn"], times["esol"], strict=True)])
            line = {name: f"{common.stats(t).median:.3g} s" for name, t in times.items()}
            line.update(esol_over_irn=f"{over_irn.median:.3g}", head_share=f"{share.median:.0%}")
            detail = f"esol {line['esol']}, floor {line['floor']}, irn {line['irn']}"
            if dense:
                dense_over_floor = common.ratios(times["esol_dense"], times["floor"])
                line["esol_dense_over_floor"] = f"{dense_over_floor.median:.3g}"
                detail += f"; dense W2 (before) {line['esol_dense']}: {dense_over_floor.median:.3g} x the floor"
            extra[f"[{tag}] per image"] = ", ".join(f"{k} {v}" for k, v in line.items())
            figures.append(
                common.Figure(
                    f"cost.esol_over_floor[{tag}]",
                    over_floor.median,
                    TARGET,
                    detail=detail,
                    spread=f"[{over_floor.low:.3g}, {over_floor.high:.3g}]",
                )
            )
    return figures, extra


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(__doc__)
    ap.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CPU, and CUDA when present"
    )
    ap.add_argument("--size", action="append", choices=sorted(SIZES), help="image size(s) to time (default: both)")
    ap.add_argument("--no-dense", action="store_true", help="leave out the dense-W2 side (the form before issue 18)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed first call of each side")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(False)
    sizes = QUICK_SIZES if args.quick else {name: SIZES[name] for name in (args.size or SIZES)}
    devices = ["cpu"] if args.device in ("auto", "cpu") else []
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append("cuda")
    title = "Cost: ESOL classifier vs IRN's CAM network vs the floor (IRN + W1), ResNet-50, batch 1"
    figures, extra = [], {}
    for device in devices:
        if device == "cuda" and not torch.cuda.is_available():
            figures.append(common.Figure("cost.esol_over_floor[cuda]", None, TARGET))
            continue
        if device == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        more_figures, more_extra = measure(
            torch.device(device),
            sizes,
            common.reps(args, default=3),
            not (args.no_warmup or args.quick),
            not args.no_dense,
        )
        figures += more_figures
        extra.update(more_extra)
    common.report(title, args, figures, **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())

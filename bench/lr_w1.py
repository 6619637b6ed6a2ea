"""How ``train_cam.lr_w1`` of the VOC recipe was chosen (docs/protocol.md, "lr_w1").

Eight stage-0 SGD steps of the voc12 recipe, shrunk as in tests/test_real_e2e.py (crop 128,
batch 4), on the same batches (the small VOC-layout tree of tests/real_trees.py, a ResNet-50
with measured BatchNorm statistics), for several learning rates of W1 (the classifier keeps
1.0): the first, largest and last loss of each. Not a timing: the figure is the largest rate
whose eight losses stay finite and never rise above the first (a spike above the starting loss is
the start of the divergence seen at 1.0).

    python -m bench.lr_w1 [--steps 8] [--rates 1.0 0.3 0.1]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
from pathlib import Path


def measure(rate: float, momentum: float, steps: int, root: Path, weights: Path) -> list[float]:
    import torch

    from esol.data.layout import Dataset
    from esol.data.loaders import ClassificationSet
    from esol.infra.config import params_from_dict
    from esol.method.model import ESOLNet
    from esol.method.stages import classification_loss, set_train_mode, set_trainable
    from esol.training.classifier import param_groups
    from esol.training.loop import TrainSpec, make_optimizer
    from tests.conftest import smoke_params_dict

    raw = smoke_params_dict()
    raw["dataset"]["name"] = "voc12"
    raw["model"]["weights_file"] = str(weights)
    raw["recipes"]["voc12"]["train_cam"].update(crop_size=128, batch_size=4, lr_w1=rate, momentum=momentum)
    params = params_from_dict(raw)
    cfg = params.train_cam
    torch.manual_seed(0)
    model = ESOLNet(params.model, 20)
    set_trainable(model, "train_cam")
    set_train_mode(model, "train_cam", freeze_bn=True)
    spec = TrainSpec(
        "train_cam", param_groups(model, "train_cam", cfg), cfg.momentum, cfg.weight_decay, 1, 4, 0, ""
    )
    optimizer = make_optimizer(spec)
    data = ClassificationSet(Dataset(root), "train_aug", cfg.crop_size, 0, cfg.resize_long)
    losses = []
    for step in range(steps):
        batch = [data[(step, i)] for i in range(4)]
        images, labels = torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])
        loss = classification_loss(model(images).logits, labels)
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rates", type=float, nargs="+", default=[1.0, 0.3, 0.1])
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    from esol.data import real
    from tests.real_trees import build_voc_tree, write_resnet50_weights

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; python {sys.version.split()[0]}"
    )
    print(f"command: python -m bench.lr_w1 {' '.join(argv or sys.argv[1:])}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_voc_tree(tmp / "staged")
        os.environ[real.DATA_DIR_ENV] = str(tmp / "staged")
        real.convert(real.download("voc12", tmp / "downloads", sbd=False), tmp / "dataset")
        weights = write_resnet50_weights(tmp / "resnet50.pth")
        chosen = None
        runs = [(rate, 1e-4) for rate in args.rates] + [(args.rates[0], 0.9)]
        for rate, momentum in runs:
            losses = measure(rate, momentum, args.steps, tmp / "dataset", weights)
            ok = len(losses) == args.steps and all(map(math.isfinite, losses)) and max(losses) <= losses[0]
            print(
                f"lr_w1 {rate:g}, momentum {momentum:g}: first {losses[0]:.4g}, max {max(losses):.4g}, "
                f"last {losses[-1]:.4g} ({len(losses)} steps){'' if ok else '  rises above its first loss'}"
            )
            if ok and momentum == 1e-4 and chosen is None:
                chosen = rate
        print(f"FIGURE lr_w1.largest_stable: {chosen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

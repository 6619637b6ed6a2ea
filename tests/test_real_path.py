"""The VOC/COCO training path read against IRN (docs/protocol.md): divergence guard, augmentation
with data-loader workers, IRN's classifier input pipeline, optimiser groups, frozen layers, and
the ImageNet weights read offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models import resnet18, resnet50

from esol.data.loaders import ClassificationSet, normalize
from esol.infra.config import params_from_dict
from esol.infra.io import InputError
from esol.infra.numerics import NonFiniteError, TrainingDiverged
from esol.infra.runtime import make_runtime
from esol.method import stages
from esol.method.model import ESOLNet
from esol.method.stages import set_trainable
from esol.segmentation.network import build_seg_model
from esol.training.classifier import param_groups, train_stage
from esol.training.loop import EpochPermutation, TrainSpec, make_optimizer, train

from .conftest import smoke_params_dict


@pytest.fixture(scope="session")
def resnet50_file(tmp_path_factory):
    """A torchvision ResNet-50 state dict on disk (random weights), as an offline user stages one."""
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.manual_seed(0)
    torch.save(resnet50().state_dict(), path)
    return path


def voc_params(weights_file, **sections):
    raw = smoke_params_dict()
    raw["dataset"]["name"] = "voc12"
    raw["model"]["weights_file"] = str(weights_file)
    for name, values in sections.items():
        raw.setdefault("recipes", {}).setdefault("voc12", {}).setdefault(name, {}).update(values)
    return params_from_dict(raw)


# ------------------------------------------------------------------------------- divergence


def test_a_diverging_step_stops_training_and_writes_no_model(smoke_dataset, tmp_path, monkeypatch):
    calls = []
    real_loss = stages.classification_loss

    def diverging(logits, labels):
        calls.append(1)
        loss = real_loss(logits, labels)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(stages, "classification_loss", diverging)
    params = params_from_dict(smoke_params_dict())
    with pytest.raises(TrainingDiverged) as caught:
        train_stage(
            "train_cam",
            params,
            data_dir=smoke_dataset.root,
            init_model=None,
            out_model=tmp_path / "cam.pt",
            metrics=tmp_path / "cam.json",
            live_dir=tmp_path / "live",
            checkpoint_dir=tmp_path / "checkpoints",
        )
    message = str(caught.value)
    assert f"train_cam, epoch 1/{params.train_cam.epochs}, step 3/" in message
    assert "the loss is nan" in message and "last finite loss 0." in message
    assert not (tmp_path / "cam.pt").exists() and not (tmp_path / "cam.json").exists()
    assert not (tmp_path / "checkpoints" / "last.pt").exists()  # no epoch finished


def test_nan_offsets_never_reach_deform_conv(smoke_params):
    model = ESOLNet(smoke_params.model, 2).eval()
    set_trainable(model, "train_expansion")  # offsets in use
    with torch.no_grad():
        model.off1.bias[0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"DCN1 \(expansion\) sampling offsets"):
        model(torch.zeros(1, 3, 64, 64))


# ------------------------------------------------------------------------- data augmentation


class _Recorder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))


def test_workers_augment_each_epoch_afresh(smoke_dataset, smoke_params, tmp_path):
    """Persistent workers keep their own dataset copy: the epoch must reach them with each index."""
    train_set = ClassificationSet(smoke_dataset, "train", crop_size=40, seed=7)  # 64 px images: crops vary
    seen: list[torch.Tensor] = []

    def step(batch, net):
        seen.append(batch[0].clone())
        return (net.weight * batch[0].mean()).sum() + 1.0, {}

    spec = TrainSpec("workers", [{"params": [], "lr": 0.1}], 0.9, 0.0, 2, len(train_set), 7, "f")
    model = _Recorder()
    spec.param_groups[0]["params"] = list(model.parameters())
    runtime = make_runtime(smoke_params.runtime, 7)
    train(spec, model, train_set, step, runtime, tmp_path / "ckpt", tmp_path / "live", num_workers=2)
    assert len(seen) == 2
    sampler = EpochPermutation(len(train_set), 7)
    for epoch, batch in enumerate(seen):
        sampler.epoch = epoch
        expected = torch.stack([train_set[(epoch, index)][0] for index in sampler])
        torch.testing.assert_close(batch, expected, rtol=0, atol=0)
    index = 0
    first, second = train_set[(0, index)][0], train_set[(1, index)][0]
    assert not torch.equal(first, second)


class _FakeDataset:
    """A VOC-sized image (375 x 500) with a horizontal ramp, so flips and placement can be read back."""

    def __init__(self, h: int = 375, w: int = 500) -> None:
        ramp = np.linspace(30, 230, w).astype(np.uint8)
        self.img = np.repeat(np.repeat(ramp[None, :, None], h, 0), 3, 2)

    def ids(self, split):
        return [f"img{i}" for i in range(200)]

    def image(self, image_id):
        return self.img

    def multi_hot(self, image_id):
        return np.ones(20, dtype=np.float32)


def test_classifier_input_follows_irn_over_many_draws():
    """Long side in [320, 640], random flip, image anywhere inside the 512 crop, 0 padding after normalising."""
    data = _FakeDataset()
    train_set = ClassificationSet(data, "train_aug", crop_size=512, seed=0, resize_long=(320, 640))
    longs, tops, lefts, flips = [], [], [], []
    for index in range(200):
        x = train_set[(0, index)][0].numpy()
        assert x.shape == (3, 512, 512)
        content = np.abs(x).sum(0) > 0  # the ramp never normalises to exactly 0
        rows, cols = np.nonzero(content.any(1))[0], np.nonzero(content.any(0))[0]
        h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        assert content[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all()  # one rectangle, 0 around it
        assert (x[:, ~content] == 0).all()
        longs.append(w)
        tops.append(rows[0])
        lefts.append(cols[0])
        flips.append(x[0, rows[0], cols[0]] > x[0, rows[0], cols[-1]])
        if w < 512:  # the whole resized width is in the crop: its height follows the aspect ratio
            assert abs(h - w * 375 / 500) <= 1.5
    longs = np.array(longs)
    assert longs.min() >= 320 and longs.max() == 512  # 320..640, clipped by the crop
    assert (longs < 400).any() and ((longs > 480) & (longs < 512)).any()
    assert 0.3 < np.mean(flips) < 0.7
    assert len(set(tops)) > 50 and min(tops) == 0 and max(tops) > 150  # placed anywhere, not top-left
    assert len(set(lefts)) > 20


def test_synthetic_default_input_is_the_whole_image(smoke_dataset):
    """crop = image size, no rescale (the synthetic default): the item is the normalised image, maybe flipped."""
    train_set = ClassificationSet(smoke_dataset, "train_aug", crop_size=64, seed=3)
    image = smoke_dataset.image(train_set.ids[5])
    x = train_set[(2, 5)][0]
    assert torch.equal(x, normalize(image)) or torch.equal(x, normalize(image[:, ::-1]))


# --------------------------------------------------------------------- optimiser, frozen layers


def test_voc_recipe_optimiser_groups_follow_irn(resnet50_file):
    params = voc_params(resnet50_file)
    cfg = params.train_cam
    model = ESOLNet(params.model, 20)
    set_trainable(model, "train_cam")
    groups = param_groups(model, "train_cam", cfg)
    spec = TrainSpec("train_cam", groups, cfg.momentum, cfg.weight_decay, 1, 2, 0, "f")
    optimizer = make_optimizer(spec)
    found = [(g["lr"], g["momentum"], g["weight_decay"], len(g["params"])) for g in optimizer.param_groups]
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    assert found == [(0.1, 1e-4, 1e-4, len(backbone)), (0.1, 1e-4, 1e-4, 1), (1.0, 1e-4, 1e-4, 1)]
    assert optimizer.param_groups[1]["params"][0] is model.w1
    assert optimizer.param_groups[2]["params"][0] is model.classifier.weight  # 10x only on the 1x1 classifier


def test_voc_recipe_stage0_trains_layer3_and_layer4_only(resnet50_file):
    params = voc_params(resnet50_file)
    model = ESOLNet(params.model, 20)
    set_trainable(model, "train_cam")
    stages.set_train_mode(model, "train_cam", freeze_bn=True)
    out = model(torch.randn(2, 3, 64, 64))
    stages.classification_loss(out.logits, torch.ones(2, 20)).backward()
    grads = {name.split(".")[0] for name, p in model.backbone.named_parameters() if p.grad is not None}
    assert grads == {"layer3", "layer4"}
    assert all(p.grad is not None for p in model.backbone.layer3.parameters())
    assert model.w1.grad is not None and model.classifier.weight.grad is not None


# ----------------------------------------------------------------------------- offline weights


def test_segmentation_backbone_loads_the_weights_file_offline(resnet50_file, no_network, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    params = voc_params(resnet50_file)
    model = build_seg_model(params.train_seg, params.model, 21)
    state = torch.load(resnet50_file)
    torch.testing.assert_close(model.backbone.conv1.weight, state["conv1.weight"], rtol=0, atol=0)
    torch.testing.assert_close(model.backbone.layer4[2].bn3.running_var, state["layer4.2.bn3.running_var"])
    classifier = ESOLNet(params.model, 20)
    torch.testing.assert_close(classifier.backbone.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    assert no_network == []


def test_imagenet_weights_without_network_or_file_say_what_to_do(no_network, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    params = voc_params("")
    with pytest.raises(InputError, match=r"model.pretrained: true needs the ImageNet ResNet-50 weights.*weights_file"):
        ESOLNet(params.model, 20)
    with pytest.raises(InputError, match=r"model\.weights_file"):
        build_seg_model(params.train_seg, params.model, 21)
    assert no_network  # it did try, and was refused


def test_weights_of_another_architecture_name_the_file_and_the_mismatch(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18().state_dict(), path)
    params = voc_params(path)
    with pytest.raises(InputError) as caught:
        ESOLNet(params.model, 20)
    message = str(caught.value)
    assert str(path) in message and "not hold torchvision ResNet-50 weights" in message
    assert "layer1.0.conv1.weight (64, 64, 3, 3) (needs (64, 64, 1, 1))" in message


# ------------------------------------------------------------------------- download_data, synthetic


def test_synthetic_needs_no_download_and_prepare_refuses_another_datasets_manifest(tmp_path, no_network):
    from esol.steps import download_data, prepare_data

    params = params_from_dict(smoke_params_dict())
    manifest = download_data.run(params, out=tmp_path / "sources.json")
    assert manifest == {"dataset": "synthetic", "roots": {}, "sources": []}
    summary = prepare_data.run(
        params, sources=tmp_path / "sources.json", out_dir=tmp_path / "d", metrics=tmp_path / "m.json"
    )
    assert summary["splits"]["train_aug"] == params.synthetic.num_train_aug
    voc = voc_params("")
    with pytest.raises(InputError, match=r"sources\.json: lists dataset 'synthetic', not 'voc12'; run download_data"):
        prepare_data.run(voc, sources=tmp_path / "sources.json", out_dir=tmp_path / "v", metrics=tmp_path / "v.json")
    assert not (tmp_path / "v").exists() and no_network == []

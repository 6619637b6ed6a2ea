"""Segmentation inference (multi-scale + flip, dense-CRF post-processing) and the networks."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from esol.data.loaders import normalize
from esol.infra.config import ConfigError
from esol.refine.crf import crf_from_probs
from esol.segmentation.network import DEEPLABV2_RATES, backbone_weights_file, build_seg_model, predict, predict_scores

CPU = torch.device("cpu")


@pytest.fixture
def small_net(smoke_params):
    torch.manual_seed(0)
    net = build_seg_model(smoke_params.train_seg, smoke_params.model, 3)
    return net.eval()


def images(n=2, h=40, w=52):
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_one_scale_without_flip_is_plain_inference(small_net):
    batch = images()
    with torch.no_grad():
        logits = small_net(torch.stack([normalize(i) for i in batch]))["out"]
    total, plain = predict_scores(small_net, batch, CPU, scales=(1.0,), flip=False)
    assert torch.equal(total, logits.softmax(1))
    assert torch.equal(plain, total)
    assert np.array_equal(predict(small_net, batch, CPU, flip=False), logits.argmax(1).numpy())


def test_one_scale_with_flip_is_the_former_flip_averaged_prediction_bit_for_bit(small_net):
    batch = images()
    x = torch.stack([normalize(i) for i in batch])
    with torch.no_grad():
        former = small_net(x)["out"].softmax(1) + small_net(x.flip(-1))["out"].softmax(1).flip(-1)
        former = F.interpolate(former, size=batch[0].shape[:2], mode="bilinear", align_corners=False)
    total, plain = predict_scores(small_net, batch, CPU, scales=(1.0,), flip=True)
    assert torch.equal(total, former)
    with torch.no_grad():
        assert torch.equal(plain, small_net(x)["out"].softmax(1))  # the unflipped view, from the same pass


def test_multi_scale_sums_every_view_at_the_image_size(small_net):
    batch = images(1)
    total, plain = predict_scores(small_net, batch, CPU, scales=(0.5, 1.0, 1.5), flip=True)
    assert total.shape == (1, 3, 40, 52)
    assert torch.allclose(total.sum(1), torch.full((1, 40, 52), 6.0), atol=1e-4)  # 3 scales x 2 flips
    assert plain.shape == (1, 3, 40, 52)
    assert predict_scores(small_net, batch, CPU, scales=(0.75,), flip=False)[1] is None


def test_crf_leaves_a_confident_prediction_unchanged(smoke_params):
    label = np.zeros((48, 64), np.int64)
    label[8:30, 10:40] = 1
    label[28:46, 40:60] = 2
    palette = np.array([[20, 20, 20], [220, 60, 60], [60, 60, 220]], np.uint8)
    probs = np.full((3, 48, 64), 0.01, np.float32)
    np.put_along_axis(probs, label[None], 0.98, axis=0)
    out = crf_from_probs(palette[label], probs, smoke_params.eval_seg)
    assert out.dtype == np.uint8
    assert np.array_equal(out, label)


def test_crf_changes_an_unsure_prediction_towards_the_image(smoke_params):
    """The post-processing is not a no-op: where the net is unsure, the image's edges decide."""
    label = np.zeros((48, 64), np.int64)
    label[8:40, 10:50] = 1
    probs = np.where(label[None] == np.arange(2)[:, None, None], 0.9, 0.1).astype(np.float32)
    probs[:, 8:40, 30:50] = np.array([0.55, 0.45], np.float32)[:, None, None]  # unsure, the wrong way round
    image = np.where(label[..., None] == 1, 230, 20).astype(np.uint8).repeat(3, -1)
    assert (probs.argmax(0) != label).sum() == 32 * 20
    assert np.array_equal(crf_from_probs(image, probs, smoke_params.eval_seg), label)


def test_deeplabv2_has_output_stride_8_and_a_four_branch_summed_aspp(smoke_params):
    cfg = dataclasses.replace(smoke_params.train_seg, arch="deeplabv2_resnet101")
    net = build_seg_model(cfg, dataclasses.replace(smoke_params.model, pretrained=False), 21).eval()
    branches = net.classifier.branches
    assert [b.dilation for b in branches] == [(r, r) for r in DEEPLABV2_RATES]
    assert all(b.kernel_size == (3, 3) and b.out_channels == 21 and b.in_channels == 2048 for b in branches)
    x = torch.randn(1, 3, 81, 97)
    with torch.no_grad():
        features = net.backbone(x)["out"]
        head = net.classifier(features)
        out = net(x)["out"]
    assert features.shape == (1, 2048, 11, 13)  # ceil(81 / 8), ceil(97 / 8)
    assert head.shape == (1, 21, 11, 13)
    assert torch.allclose(head, sum(b(features) for b in branches), atol=1e-5)
    assert out.shape == (1, 21, 81, 97)


def test_seg_backbone_weights_come_from_the_segmentation_file(smoke_params, tmp_path):
    from torchvision.models import resnet101

    torch.manual_seed(3)
    trunk = resnet101()
    path = tmp_path / "r101.pth"
    torch.save(trunk.state_dict(), path)
    cfg = dataclasses.replace(smoke_params.train_seg, arch="deeplabv2_resnet101", weights_file=str(path))
    net = build_seg_model(cfg, smoke_params.model, 21)
    assert torch.equal(net.backbone.layer3[5].conv2.weight, trunk.layer3[5].conv2.weight)
    # The classifier's ResNet-50 file does not fit a ResNet-101: refused by name, not loaded half.
    r50_model = dataclasses.replace(smoke_params.model, backbone="resnet50", weights_file="r50.pth")
    with pytest.raises(ConfigError, match=r"train_seg\.weights_file"):
        backbone_weights_file(dataclasses.replace(cfg, weights_file=""), r50_model)
    assert backbone_weights_file(dataclasses.replace(cfg, arch="deeplabv3_resnet50", weights_file=""), r50_model) == (
        "r50.pth"
    )


def test_eval_seg_crf_workers_give_the_serial_scores(smoke_params, smoke_dataset, tmp_path):
    import multiprocessing as mp

    from esol.steps import eval_seg
    from esol.training import checkpoint

    torch.manual_seed(0)
    net = build_seg_model(smoke_params.train_seg, smoke_params.model, smoke_dataset.num_classes)
    checkpoint.save(tmp_path / "seg.pt", {"model": net.state_dict(), "meta": {}})
    results = [
        eval_seg.run(
            smoke_params,
            data=smoke_dataset.root,
            model=tmp_path / "seg.pt",
            metrics=tmp_path / f"m{threads}.json",
            predictions=tmp_path / f"pred{threads}",
            variant="cam",
            threads=threads,
        )
        for threads in (1, 2)
    ]
    assert results[0] == results[1]
    assert results[0]["variant"] == "cam" and "miou_crf" in results[0] and "miou_single_scale" in results[0]
    assert not mp.active_children()

"""The ESOL model and its training stages do what method.md says."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from esol.method.model import ESOLNet, clip_features, identity_kernel, reverse_gradient, sample_at_centre_tap
from esol.method.stages import area_loss, classification_loss, set_trainable, stage_step

NUM_CLASSES = 3


@pytest.fixture
def model(smoke_params):
    torch.manual_seed(0)
    return ESOLNet(smoke_params.model, NUM_CLASSES)


def batch(n=4, size=48):
    g = torch.Generator().manual_seed(1)
    images = torch.randn(n, 3, size, size, generator=g)
    labels = torch.zeros(n, NUM_CLASSES)
    labels[torch.arange(n), torch.arange(n) % NUM_CLASSES] = 1
    return images, labels


def parameter_groups(model):
    return {
        "backbone": list(model.backbone.parameters()),
        "w1": [model.w1],
        "off1": list(model.off1.parameters()),
        "off2": list(model.off2.parameters()),
        "w2": [model.w2],
        "classifier": list(model.classifier.parameters()),
    }


INTENDED = {
    "train_cam": {"backbone", "w1", "classifier"},
    "train_expansion": {"off1", "classifier"},
    "train_shrinkage": {"off2", "classifier"},
}


def shrinkage_cfg(smoke_params, **changes):
    from dataclasses import replace

    return replace(smoke_params.train_shrinkage, **changes)


@pytest.mark.parametrize("stage", list(INTENDED))
def test_exactly_the_intended_parameters_receive_gradients(model, smoke_params, stage):
    # Non-zero offsets so that gradients can reach every sampler through the bilinear kernel.
    with torch.no_grad():
        model.off1.bias.fill_(0.3)
        model.off2.bias.fill_(-0.2)
    set_trainable(model, stage)
    if stage == "train_expansion":
        model.grl_scale = 1.0
    model.train()
    cfg = smoke_params.section(stage)
    loss, _ = stage_step(model, stage, batch(), lambda t: t, cfg)
    model.zero_grad(set_to_none=True)
    loss.backward()
    for group, params in parameter_groups(model).items():
        has_grad = any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
        assert has_grad == (group in INTENDED[stage]), f"{stage}: {group} gradient={has_grad}"


@pytest.mark.parametrize("stage", list(INTENDED))
def test_one_optimiser_step_changes_exactly_the_intended_parameters(model, smoke_params, stage):
    from esol.training.classifier import param_groups
    from esol.training.loop import TrainSpec, make_optimizer

    with torch.no_grad():
        model.off1.bias.fill_(0.3)
        model.off2.bias.fill_(-0.2)
    set_trainable(model, stage)
    model.train()
    cfg = smoke_params.section(stage)
    before = {k: [p.detach().clone() for p in ps] for k, ps in parameter_groups(model).items()}
    spec = TrainSpec(stage, param_groups(model, stage, cfg), 0.9, 0.0, 1, 4, 0, "")
    optimizer = make_optimizer(spec)
    loss, _ = stage_step(model, stage, batch(), lambda t: t, cfg)
    loss.backward()
    optimizer.step()
    for group, params in parameter_groups(model).items():
        moved = any(not torch.equal(a, b) for a, b in zip(before[group], params, strict=True))
        assert moved == (group in INTENDED[stage]), f"{stage}: {group} moved={moved}"


def test_expansion_sampler_gradient_is_reversed(model):
    """With the reversal layer, off1's gradient is minus (scale x) the plain gradient."""
    images, labels = batch()
    with torch.no_grad():
        model.off1.bias.fill_(0.3)
    set_trainable(model, "train_expansion")

    def off1_grad(scale):
        model.zero_grad(set_to_none=True)
        model.grl_scale = scale
        classification_loss(model(images).logits, labels).backward()
        return model.off1.weight.grad.clone()

    plain = off1_grad(None)
    reversed_ = off1_grad(2.0)
    assert plain.abs().sum() > 0
    torch.testing.assert_close(reversed_, -2.0 * plain)


def test_gradient_reversal_layer_is_identity_forward():
    x = torch.randn(5, requires_grad=True)
    y = reverse_gradient(x, 0.5)
    assert torch.equal(y, x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full((5,), -0.5))


def test_offsets_stay_within_bound(model):
    with torch.no_grad():
        model.off1.bias.fill_(50.0)
        model.off2.bias.fill_(-50.0)
    out = model(batch()[0])
    bound = model.cfg.max_offset
    assert out.offset1.abs().max() <= bound + 1e-6
    assert out.offset2.abs().max() <= bound + 1e-6
    assert out.offset1.abs().max() > 0.99 * bound


def test_zero_offsets_make_deformable_conv_a_plain_conv(model):
    x = torch.randn(2, 8, 6, 6)
    w = torch.randn(8, 8, 3, 3)
    offsets = torch.zeros(2, 18, 6, 6)
    torch.testing.assert_close(deform_conv2d(x, offsets, w, padding=1), F.conv2d(x, w, padding=1), atol=1e-5, rtol=1e-5)


def test_identity_w2_makes_shrinkage_a_pure_resampler_at_zero_offset(model):
    out = model(batch()[0])  # offsets are zero-initialised
    torch.testing.assert_close(out.f2, out.f1c)
    x = torch.rand(1, 4, 5, 5)
    torch.testing.assert_close(F.conv2d(x, identity_kernel(4), padding=1), x)


def centre_tap_inputs(seed, b=2, c=5, h=7, w=6, reach=4.0, dtype=torch.float64):
    """Random features and offsets reaching up to REACH cells, many beyond the map's border;
    some offsets land exactly on whole cells and on the border."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    offset = (torch.rand(b, 18, h, w, generator=g, dtype=dtype) * 2 - 1) * reach
    offset[:, 8:10, 0, :2] = torch.tensor([-1.0, 0.0], dtype=dtype)[:, None]  # exactly one cell up
    offset[:, 8, -1, -1] = 1.0  # exactly onto the row below the map
    return x.requires_grad_(), offset.requires_grad_()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_centre_tap_sampling_equals_the_identity_deformable_conv_forward_and_backward(seed, dtype):
    x, offset = centre_tap_inputs(seed, dtype=dtype)
    kernel = identity_kernel(x.shape[1]).to(dtype)
    dense = deform_conv2d(x, offset, kernel, padding=1)
    sampled = sample_at_centre_tap(x, offset)
    tol = {"atol": 1e-10, "rtol": 1e-10} if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-5}
    torch.testing.assert_close(sampled, dense, **tol)
    outside = (offset[:, 8].abs() > 3.5) | (offset[:, 9].abs() > 3.5)
    assert outside.any()  # the comparison covers samples beyond the border
    upstream = torch.randn_like(dense)
    grad_dense = torch.autograd.grad(dense, (x, offset), upstream)
    grad_sampled = torch.autograd.grad(sampled, (x, offset), upstream)
    torch.testing.assert_close(grad_sampled[0], grad_dense[0], **tol)  # wrt the features
    torch.testing.assert_close(grad_sampled[1], grad_dense[1], **tol)  # wrt the offsets (only taps 8, 9 nonzero)
    assert grad_sampled[1][:, 8:10].abs().sum() > 0


def test_centre_tap_sampling_of_bfloat16_features_uses_float32_coordinates():
    x, offset = centre_tap_inputs(3, h=40, w=40, dtype=torch.float32)
    x, offset = x.detach(), offset.detach()
    low = sample_at_centre_tap(x.bfloat16(), offset)
    assert low.dtype == torch.bfloat16
    # Only the features are rounded: the result is the float32 sampling of the rounded features.
    expected = sample_at_centre_tap(x.bfloat16().float(), offset).bfloat16()
    torch.testing.assert_close(low, expected, atol=0, rtol=0)


def test_model_shrinks_by_sampling_with_identity_w2_and_dense_otherwise(model):
    with torch.no_grad():
        model.off1.bias.fill_(0.3)
        model.off2.bias.uniform_(-1, 1)
    images = batch()[0]
    assert model.w2_is_identity()
    sampled = model(images)
    model.dense_w2 = True
    dense = model(images)
    torch.testing.assert_close(sampled.f2, dense.f2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sampled.logits, dense.logits, atol=1e-5, rtol=1e-5)
    model.dense_w2 = False
    with torch.no_grad():
        model.w2.mul_(0.5)  # no longer the identity: the dense form again, noticed without being told
    assert not model.w2_is_identity()
    torch.testing.assert_close(model(images).f2, 0.5 * dense.f2, atol=1e-5, rtol=1e-5)


def test_quantile_clip_caps_each_channel_at_its_quantile():
    x = torch.arange(100, dtype=torch.float32).reshape(1, 1, 10, 10).repeat(2, 3, 1, 1)
    x[1] *= 2
    clipped = clip_features(x, "quantile", 0.9)
    tau = torch.quantile(x.reshape(2, 3, -1), 0.9, dim=2)
    assert torch.allclose(clipped.reshape(2, 3, -1).amax(dim=2), tau)
    below = x < tau[..., None, None]
    assert torch.equal(clipped[below], x[below])
    assert torch.equal(clip_features(x, "none", 0.9), x)


def test_area_loss_charges_activated_area_of_positive_classes_only():
    cams = torch.zeros(1, 2, 4, 4)
    cams[0, 0, :2] = 1.0  # class 0: half the map, normalised
    cams[0, 1] = 1.0  # class 1: the whole map, but negative
    labels = torch.tensor([[1.0, 0.0]])
    assert area_loss(cams, labels, "mean").item() == pytest.approx(0.5, rel=1e-4)
    expanded = torch.zeros(1, 2, 4, 4)
    expanded[0, 0, 0] = 1.0  # the expansion map covers one of the two active rows
    assert area_loss(cams, labels, "outside_expansion", expanded=expanded).item() == pytest.approx(0.25, rel=1e-4)
    # scale-invariant: area, not magnitude
    assert area_loss(cams * 7, labels, "mean").item() == pytest.approx(0.5, rel=1e-4)


def test_area_loss_gradient_shrinks_the_map():
    cams = torch.rand(1, 1, 6, 6, requires_grad=True)
    area_loss(cams, torch.ones(1, 1)).backward()
    peak = cams.detach().flatten().argmax()
    grads = cams.grad.flatten()
    others = torch.cat([grads[:peak], grads[peak + 1 :]])
    assert (others > 0).all()  # gradient descent lowers every non-peak activation


def one_epoch_params(**model_changes):
    """The smoke params with ``model_changes`` and every classifier stage cut to one epoch."""
    from esol.infra.config import params_from_dict

    from .conftest import smoke_params_dict

    raw = smoke_params_dict()
    raw["model"].update(model_changes)
    for stage in INTENDED:
        raw[stage]["epochs"] = 1
    return params_from_dict(raw)


def train_chain(params, smoke_dataset, tmp_path, chain, init=None):
    """Train ``chain`` (stage names, each from the previous one's model, the first from ``init``)."""
    from esol.training.classifier import train_stage

    files = []
    for index, stage in enumerate(chain):
        out = tmp_path / f"{index}-{stage}.pt"
        train_stage(
            stage,
            params,
            data_dir=smoke_dataset.root,
            init_model=init,
            out_model=out,
            metrics=tmp_path / f"{index}-{stage}.json",
            live_dir=tmp_path / "live" / f"{index}-{stage}",
            checkpoint_dir=tmp_path / "checkpoints" / f"{index}-{stage}",
        )
        files.append(out)
        init = out
    return files


def test_clip_from_expansion_leaves_cam_and_shrinkage_only_unclipped(smoke_dataset, tmp_path):
    """``clip_from: expansion``: the cam model and the shrinkage-only variant (no expansion) draw
    their CAMs from the unclipped F1; the expansion and esol models from the clipped one."""
    from esol.data.layout import Dataset
    from esol.training.classifier import load_model

    params = one_epoch_params(clip_from="expansion")
    cam, expansion, esol = train_chain(params, smoke_dataset, tmp_path, list(INTENDED))
    (shrinkage,) = train_chain(params, smoke_dataset, tmp_path / "only", ["train_shrinkage"], init=cam)
    dataset = Dataset(smoke_dataset.root)
    images = batch(2, 48)[0]
    clipped = {}
    for name, path in {"cam": cam, "expansion": expansion, "esol": esol, "shrinkage": shrinkage}.items():
        net = load_model(params, dataset, path).eval()
        with torch.no_grad():
            out = net(images)
            feats = net.backbone(images)
            f1 = F.relu(deform_conv2d(feats, out.offset1, net.w1, padding=1))
        clipped[name] = not torch.allclose(out.f1c, f1)
        if clipped[name]:
            cap = torch.quantile(f1.flatten(2), params.model.clip_quantile, dim=2)
            assert (out.f1c.flatten(2).amax(dim=2) <= cap + 1e-5).all()
    assert clipped == {"cam": False, "expansion": True, "esol": True, "shrinkage": False}

    default = one_epoch_params(clip_from="cam")
    (default_cam,) = train_chain(default, smoke_dataset, tmp_path / "default", ["train_cam"])
    assert load_model(default, dataset, default_cam).clipped

"""Numerics per device (issue 18): deterministic on CPU, fast on CUDA unless asked, fp16 with loss scaling."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from esol.infra.runtime import Runtime, make_runtime, wants_determinism
from esol.training.loop import run_epoch

from .test_model import one_epoch_params, train_chain


@pytest.mark.parametrize(
    ("setting", "device", "expected"),
    [("auto", "cpu", True), ("auto", "cuda", False), (True, "cuda", True), (False, "cuda", False), (True, "cpu", True)],
)
def test_runtime_deterministic_is_chosen_per_device(setting, device, expected):
    assert wants_determinism(setting, device) is expected


def test_cpu_runs_deterministic_by_default_and_the_log_says_so(smoke_params, caplog):
    assert smoke_params.runtime.deterministic == "auto"  # the default of params.yaml
    cfg = dataclasses.replace(smoke_params.runtime, device="cpu")
    try:
        torch.use_deterministic_algorithms(False)
        with caplog.at_level(logging.INFO, logger="esol"):
            runtime = make_runtime(cfg, seed=0)
        assert runtime.deterministic and torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.benchmark
        assert "numerics: deterministic algorithms, amp off" in caplog.text
    finally:
        torch.use_deterministic_algorithms(False)


def test_two_trainings_on_cpu_give_bit_identical_weights(smoke_dataset, tmp_path):
    """Stage 0 and stage 2 (its shrinkage samples F1c at the learned offsets) trained twice, with
    the same thread count: the same weights to the bit."""
    params = one_epoch_params()
    chain = ["train_cam", "train_shrinkage"]
    first = train_chain(params, smoke_dataset, tmp_path / "a", chain)
    second = train_chain(params, smoke_dataset, tmp_path / "b", chain)
    from esol.training.checkpoint import safe_load

    for a, b in zip(first, second, strict=True):
        state_a, state_b = safe_load(a)["model"], safe_load(b)["model"]
        assert state_a.keys() == state_b.keys()
        differing = [k for k in state_a if not torch.equal(state_a[k], state_b[k])]
        assert not differing, f"{a.name}: {differing[:5]}"
    off2 = safe_load(second[1])["model"]["off2.weight"]
    assert off2.abs().sum() > 0  # the sampler did train, so the comparison covers the sampling's backward


def test_fp16_scales_the_loss_and_skips_a_step_whose_gradients_overflow():
    """Under fp16 the GradScaler skips the optimizer step on inf gradients; without it the weights break."""
    runtime = Runtime(device=torch.device("cpu"), amp_dtype=torch.float16, channels_last=False)
    assert runtime.grad_scaler().is_enabled()
    assert not dataclasses.replace(runtime, amp_dtype=torch.bfloat16).grad_scaler().is_enabled()

    def overflowing(batch, net):  # a finite loss whose gradients overflow (a non-finite loss is a divergence)
        out = net(batch)
        out.register_hook(lambda grad: grad * float("inf"))
        return out.sum(), {}

    for rt, finite_after in ((runtime, True), (dataclasses.replace(runtime, amp_dtype=None), False)):
        torch.manual_seed(0)
        net = torch.nn.Linear(4, 1)
        before = net.weight.detach().clone()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
        run_epoch([torch.ones(2, 4)], overflowing, optimizer, scheduler, rt, net=net, show=False)
        assert bool(torch.isfinite(net.weight).all()) is finite_after
        if finite_after:
            assert torch.equal(net.weight, before)

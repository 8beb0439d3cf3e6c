"""LossBalancer: a ratio of sums over its window, then fixed scales; zero groups keep 1."""
import pytest
import torch

from tkd_d2.distill.balance import LossBalancer


def _t(x):
    return torch.tensor(float(x))


def test_scales_are_the_share_over_the_windows_ratio_of_sums_then_fixed():
    balancer = LossBalancer({"a": ("loss_a",), "bc": ("loss_b", "loss_c")}, {"a": 0.5, "bc": 0.1}, iters=2)
    assert not balancer.observe({"loss_a": _t(1.0), "loss_b": _t(3.0), "loss_c": _t(1.0)}, _t(2.0))
    assert balancer.scale_of("loss_a") == 1.0  # not yet calibrated
    # a step where loss_a is 0 dilutes its estimate (ratio of sums), it does not dominate it
    assert balancer.observe({"loss_a": _t(0.0), "loss_b": _t(1.0), "loss_c": _t(1.0)}, _t(2.0))
    assert balancer.calibrated
    assert balancer.scale_of("loss_a") == pytest.approx(0.5 * 4.0 / 1.0)
    assert balancer.scale_of("loss_b") == balancer.scale_of("loss_c") == pytest.approx(0.1 * 4.0 / 6.0)
    assert balancer.scale_of("loss_other") == 1.0
    assert balancer.ratios() == pytest.approx({"a": 0.25, "bc": 1.5})
    before = balancer.scales.clone()
    assert not balancer.observe({"loss_a": _t(100.0)}, _t(1.0))  # closed: nothing moves
    assert torch.equal(balancer.scales, before)
    assert "a: 0.25x -> x2 = 0.5x" in balancer.summary()


def test_a_group_that_stays_negligible_keeps_scale_one():
    balancer = LossBalancer({"a": ("loss_a",), "b": ("loss_b",)}, {"a": 0.5, "b": 0.5}, iters=1)
    balancer.observe({"loss_a": _t(1e-9), "loss_b": _t(0.0)}, _t(1.0))
    assert balancer.scale_of("loss_a") == balancer.scale_of("loss_b") == 1.0
    assert "negligible" in balancer.summary()


def test_state_dict_round_trip_keeps_the_calibration():
    groups, targets = {"a": ("loss_a",)}, {"a": 0.2}
    balancer = LossBalancer(groups, targets, iters=1)
    balancer.observe({"loss_a": _t(4.0)}, _t(2.0))
    restored = LossBalancer(groups, targets, iters=1)
    restored.load_state_dict(balancer.state_dict())
    assert restored.calibrated and restored.scale_of("loss_a") == pytest.approx(0.1)
    assert not restored.observe({"loss_a": _t(1.0)}, _t(1.0))


def test_targets_must_be_positive():
    with pytest.raises(ValueError, match="targets"):
        LossBalancer({"a": ("loss_a",)}, {"a": 0.0}, iters=1)

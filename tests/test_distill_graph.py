"""GloRe unit: the functional form equals a module-style reference GloRe; the bank's units are
deterministic, cached per step, never trainable."""
import pytest
import torch
from torch import nn

from tkd_d2.distill.graph import GraphUnitBank, graph_reasoning, graph_unit_sizes


class ModuleGloRe(nn.Module):
    """GloRe written the reference way (1×1 convs, GRN of two Conv1d, BatchNorm in training
    mode with weight 1 / bias 0 / eps 1e-4), loaded with the bank's weights."""

    def __init__(self, unit):
        super().__init__()
        s, c = unit.state_weight.shape
        k = unit.proj_weight.shape[0]
        self.s, self.k = s, k
        self.conv_state = nn.Conv2d(c, s, 1)
        self.conv_proj = nn.Conv2d(c, k, 1)
        self.node_conv = nn.Conv1d(k, k, 1)
        self.state_conv = nn.Conv1d(s, s, 1, bias=False)
        self.conv_extend = nn.Conv2d(s, c, 1, bias=False)
        self.blocker = nn.BatchNorm2d(c, eps=1e-4)
        with torch.no_grad():
            self.conv_state.weight.copy_(unit.state_weight[:, :, None, None])
            self.conv_state.bias.copy_(unit.state_bias)
            self.conv_proj.weight.copy_(unit.proj_weight[:, :, None, None])
            self.conv_proj.bias.copy_(unit.proj_bias)
            self.node_conv.weight.copy_(unit.node_weight[:, :, None])
            self.node_conv.bias.copy_(unit.node_bias)
            self.state_conv.weight.copy_(unit.channel_weight[:, :, None])
            self.conv_extend.weight.copy_(unit.extend_weight[:, :, None, None])

    def forward(self, x):
        n = x.shape[0]
        state = self.conv_state(x).view(n, self.s, -1)
        proj = self.conv_proj(x).view(n, self.k, -1)
        nodes = torch.matmul(state, proj.permute(0, 2, 1)) / state.shape[2]
        h = self.node_conv(nodes.permute(0, 2, 1)).permute(0, 2, 1) + nodes
        h = self.state_conv(torch.relu(h))
        back = torch.matmul(h, proj).view(n, self.s, *x.shape[2:])
        return x + self.blocker(self.conv_extend(back))


@pytest.mark.parametrize("spatial", [(5, 7), (1, 2)], ids=["nodes_first", "states_first"])
def test_functional_equals_module_glore(spatial):
    # 35 positions take the "nodes first" product order, 2 positions the "states first" one
    bank = GraphUnitBank(16, mode="fixed", seed=3)
    unit = bank.units_for_step(None, dtype=torch.float64)
    reference = ModuleGloRe(unit).double().train()
    x = torch.randn(3, 16, *spatial, dtype=torch.float64)
    torch.testing.assert_close(graph_reasoning(x, unit), reference(x))
    # per-sample statistics (norm_dims=(2,)) = the module applied to each sample alone
    per_sample = graph_reasoning(x, unit, norm_dims=(2,))
    torch.testing.assert_close(per_sample, torch.cat([reference(x[i:i + 1]) for i in range(3)]))


def test_reference_sizes_by_default():
    assert graph_unit_sizes(256) == (256, 128)
    assert graph_unit_sizes(36) == (36, 18)
    assert graph_unit_sizes(25) == (24, 12)
    assert graph_unit_sizes(256, 64, 32) == (64, 32)
    bank = GraphUnitBank(256, mode="per_step")
    unit = bank.units_for_step(0)
    assert unit.state_weight.shape == (256, 256) and unit.proj_weight.shape == (128, 256)
    # PyTorch default conv init: |w| <= 1/sqrt(fan_in)
    assert unit.state_weight.abs().max() <= 256 ** -0.5
    assert unit.node_weight.abs().max() <= 128 ** -0.5


def test_per_step_units_are_deterministic():
    a = GraphUnitBank(8, mode="per_step", seed=5)
    b = GraphUnitBank(8, mode="per_step", seed=5)
    ua, ub = a.units_for_step(10), b.units_for_step(10)
    for x, y in zip(ua, ub):
        assert torch.equal(x, y)
    other_step = a.units_for_step(11)
    assert not torch.equal(ua.state_weight, other_step.state_weight)
    other_seed = GraphUnitBank(8, mode="per_step", seed=6).units_for_step(10)
    assert not torch.equal(ua.state_weight, other_seed.state_weight)
    # a resumed run (fresh bank, same step) draws the same unit, also after other steps
    a.units_for_step(12)
    assert torch.equal(a.units_for_step(10).proj_weight, ub.proj_weight)


def test_per_step_draw_is_cached_within_a_step():
    bank = GraphUnitBank(8, mode="per_step")
    first = bank.units_for_step(4)
    assert bank.units_for_step(4) is first
    assert bank.units_for_step(5) is not first
    half = bank.units_for_step(5, dtype=torch.float64)
    assert half.state_weight.dtype == torch.float64
    torch.testing.assert_close(half.state_weight.float(), bank.units_for_step(5).state_weight)


def test_fixed_units_are_the_same_every_step_and_not_parameters():
    bank = GraphUnitBank(8, mode="fixed", seed=1)
    for x, y in zip(bank.units_for_step(0), bank.units_for_step(1000)):
        assert torch.equal(x, y)
    assert list(bank.parameters()) == []
    assert bank.state_dict() == {}  # re-drawn from the seed, not checkpointed
    assert not any(t.requires_grad for t in bank.units_for_step(0))
    with pytest.raises(ValueError):
        GraphUnitBank(8, mode="per_step").units_for_step(None)
    with pytest.raises(ValueError):
        GraphUnitBank(8, mode="random")


def test_gradient_flows_through_reasoning_to_input_only():
    unit = GraphUnitBank(8, mode="per_step").units_for_step(0)
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    graph_reasoning(x, unit).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(t.grad is None for t in unit)


def test_single_position_is_finite():
    unit = GraphUnitBank(4, mode="fixed").units_for_step(None)
    x = torch.randn(1, 4, 1, requires_grad=True)
    out = graph_reasoning(x, unit, norm_dims=(2,))
    torch.testing.assert_close(out, x)  # standardising one value gives 0: only the residual remains
    out.sum().backward()
    assert torch.isfinite(x.grad).all()

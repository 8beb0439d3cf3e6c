"""Expert-prior attention and the separable SSIM."""
import importlib
import math

import pytest
import torch
import torch.nn.functional as F

from tkd_d2.distill.attention import channel_attention, expert_attention, spatial_attention

ssim_module = importlib.import_module("tkd_d2.distill.ssim")


def test_attention_hand_case():
    # channel 0: [1, 3], channel 1: [-1, 1] on a 1×2 map
    feat = torch.tensor([[[[1.0, 3.0]], [[-1.0, 1.0]]]])
    t = 0.5
    # spatial: mean_C |F| = [1, 2] → 2 * softmax([2, 4])
    e2, e4 = math.exp(2), math.exp(4)
    expected_spatial = torch.tensor([[[2 * e2 / (e2 + e4), 2 * e4 / (e2 + e4)]]])
    # channel: mean_HW |F| = [2, 1] → 2 * softmax([4, 2])
    expected_channel = torch.tensor([[2 * e4 / (e2 + e4), 2 * e2 / (e2 + e4)]])
    torch.testing.assert_close(spatial_attention(feat, t), expected_spatial)
    torch.testing.assert_close(channel_attention(feat, t), expected_channel)
    s, c = expert_attention(feat, t)
    torch.testing.assert_close(s, expected_spatial)
    torch.testing.assert_close(c, expected_channel)


def test_attention_means_are_one():
    feat = torch.randn(3, 5, 4, 6)
    assert torch.allclose(spatial_attention(feat).mean(dim=(1, 2)), torch.ones(3))
    assert torch.allclose(channel_attention(feat).mean(dim=1), torch.ones(3))


def direct_ssim(x, y, window_size=11, sigma=1.5):
    """The textbook version: one 2-D Gaussian window, five depthwise convolutions."""
    c = x.shape[1]
    g = torch.tensor([math.exp(-((i - window_size // 2) ** 2) / (2 * sigma ** 2)) for i in range(window_size)],
                     dtype=x.dtype)
    g = g / g.sum()
    window = (g[:, None] * g[None, :]).expand(c, 1, window_size, window_size).contiguous()
    pad = window_size // 2
    blur = lambda z: F.conv2d(z, window, padding=pad, groups=c)  # noqa: E731
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return (((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))).mean()


@pytest.mark.parametrize("banded", [True, False])
def test_ssim_matches_direct_2d_window(banded, monkeypatch):
    if not banded:
        monkeypatch.setattr(ssim_module, "_BANDED_MAX_SIDE", 0)  # force the depthwise-conv path
    g = torch.Generator().manual_seed(0)
    for shape in ((2, 3, 13, 17), (1, 4, 5, 5), (2, 2, 30, 20)):
        x = torch.randn(shape, generator=g)
        y = x + 0.5 * torch.randn(shape, generator=g)
        assert abs(ssim_module.ssim(x, y).item() - direct_ssim(x, y).item()) < 1e-5
        assert ssim_module.ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("banded", [True, False])
def test_ssim_gradient_matches_autograd_of_direct_version(banded, monkeypatch):
    if not banded:
        monkeypatch.setattr(ssim_module, "_BANDED_MAX_SIDE", 0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 2, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ssim_module.ssim, (x, y))
    gx, gy = torch.autograd.grad(ssim_module.ssim(x, y), (x, y))
    rx, ry = torch.autograd.grad(direct_ssim(x, y), (x, y))
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gy, ry)


def test_ssim_window_is_cached():
    ssim_module.gaussian_window_1d.cache_clear()
    ssim_module._banded_filter.cache_clear()
    x = torch.randn(1, 2, 8, 8)
    ssim_module.ssim(x, x)
    ssim_module.ssim(x, x + 1)
    info = ssim_module._banded_filter.cache_info()
    assert info.misses == 1 and info.hits >= 2

"""SSIM of two feature maps with a separable Gaussian window (the DED structural term).

Same statistic as the reference (Wang et al. SSIM, 11×11 Gaussian window of sigma 1.5, zero
padding of half a window, constants C1 = 0.01², C2 = 0.03² i.e. data range 1, mean over
batch, channels and pixels), computed with two 1-D passes instead of one 2-D window.

A 1-D zero-padded Gaussian filter along an axis of length n is a product with a banded
n×n matrix; for feature-map sizes that matrix product is faster on CPU than a depthwise
``conv2d`` (measured ~2× at 25×25), so maps up to ``_BANDED_MAX_SIDE`` use it and larger ones
use two depthwise 1-D convolutions. Both are exact; windows are cached per
(size, sigma, device, dtype).
"""
import functools

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["gaussian_window_1d", "gaussian_blur", "ssim"]

SSIM_C1 = 0.01 ** 2
SSIM_C2 = 0.03 ** 2
_BANDED_MAX_SIDE = 256


@functools.lru_cache(maxsize=64)
def gaussian_window_1d(window_size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Normalised 1-D Gaussian of ``window_size`` taps centred on ``window_size // 2``."""
    offsets = torch.arange(window_size, dtype=torch.float64) - window_size // 2
    weights = torch.exp(-(offsets ** 2) / (2.0 * sigma ** 2))
    return (weights / weights.sum()).to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=64)
def _banded_filter(length: int, window_size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    # M[i, j] = g[j - i + window_size // 2]: row i is the window centred on i, zero-padded ends
    g = gaussian_window_1d(window_size, sigma, torch.device("cpu"), torch.float64)
    index = torch.arange(length)
    tap = index[None, :] - index[:, None] + window_size // 2
    inside = (tap >= 0) & (tap < window_size)
    band = torch.where(inside, g[tap.clamp(0, window_size - 1)], torch.zeros((), dtype=torch.float64))
    return band.to(device=device, dtype=dtype)


def gaussian_blur(x: Tensor, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Zero-padded separable Gaussian filter of every (H, W) map of ``x`` (N, C, H, W)."""
    n, c, h, w = x.shape
    if max(h, w) <= _BANDED_MAX_SIDE:
        rows = _banded_filter(h, window_size, sigma, x.device, x.dtype)
        cols = _banded_filter(w, window_size, sigma, x.device, x.dtype)
        # both passes as one (N*C*H, W) @ (W, W) product each: ``rows @ x`` would broadcast
        # into N*C tiny batched products (~1.7x slower on CPU)
        x = torch.matmul(x, cols.t())
        return torch.matmul(x.transpose(-1, -2), rows.t()).transpose(-1, -2)
    g = gaussian_window_1d(window_size, sigma, x.device, x.dtype)
    pad = window_size // 2
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, window_size, 1), padding=(pad, 0), groups=c)
    return F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, window_size), padding=(0, pad), groups=c)


def _ssim_terms(x: Tensor, y: Tensor, window_size: int, sigma: float):
    # Gaussian moments of x, y, x²+y², x·y in one filtering pass, then the SSIM factors
    c = x.shape[1]
    stacked = torch.empty((x.shape[0], 4 * c) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
    stacked[:, :c] = x
    stacked[:, c:2 * c] = y
    torch.mul(x, x, out=stacked[:, 2 * c:3 * c]).addcmul_(y, y)
    torch.mul(x, y, out=stacked[:, 3 * c:])
    mu_x, mu_y, second_sum, cross = gaussian_blur(stacked, window_size, sigma).split(c, dim=1)
    mu_xy = mu_x * mu_y
    luminance_den = torch.mul(mu_x, mu_x).addcmul_(mu_y, mu_y).add_(SSIM_C1)  # mu_x² + mu_y² + C1
    contrast_num = cross.sub_(mu_xy).mul_(2.0).add_(SSIM_C2)  # 2 cov + C2
    contrast_den = second_sum.sub_(luminance_den).add_(SSIM_C1 + SSIM_C2)  # var_x + var_y + C2
    luminance_num = mu_xy.mul_(2.0).add_(SSIM_C1)  # 2 mu_x mu_y + C1
    inv_den = torch.mul(luminance_den, contrast_den).reciprocal_()
    ssim_map = torch.mul(luminance_num, contrast_num).mul_(inv_den)
    return ssim_map, (mu_x, mu_y, luminance_num, contrast_num, luminance_den, contrast_den, inv_den)


class _SSIMFunction(torch.autograd.Function):
    """Mean SSIM with a hand-written backward (fewer passes over memory than autograd's)."""

    @staticmethod
    def forward(ctx, x, y, window_size, sigma):
        ssim_map, terms = _ssim_terms(x, y, window_size, sigma)
        ctx.window = (window_size, sigma)
        ctx.save_for_backward(x, y, ssim_map, *terms)
        return ssim_map.mean()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        x, y, ssim_map, mu_x, mu_y, lum_num, con_num, lum_den, con_den, inv_den = ctx.saved_tensors
        need_x, need_y = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        c = x.shape[1]
        scale = grad_output / ssim_map.numel()
        # ssim = lum_num con_num inv_den with inv_den = 1 / (lum_den con_den); its partials:
        #   d/d mu_x = 2 mu_y (con_num - lum_num) inv_den + 2 mu_x ssim (lum_den - con_den) inv_den
        #   d/d E[x²+y²] = -ssim lum_den inv_den,   d/d E[xy] = 2 lum_num inv_den
        diff = (con_num - lum_num).mul_(inv_den).mul_(2.0)
        shift = (lum_den - con_den).mul_(ssim_map).mul_(inv_den).mul_(2.0)
        grads = []
        if need_x:
            grads.append(torch.mul(mu_y, diff).addcmul_(mu_x, shift))
        if need_y:
            grads.append(torch.mul(mu_x, diff).addcmul_(mu_y, shift))
        grads.append(torch.mul(ssim_map, lum_den).mul_(inv_den).neg_())  # d/d E[x²+y²] = -ssim/con_den
        grads.append(torch.mul(lum_num, inv_den).mul_(2.0))  # d/d E[xy] = 2 lum_num / den
        blurred = gaussian_blur(torch.cat(grads, dim=1).mul_(scale), *ctx.window).split(c, dim=1)
        blurred_second, blurred_cross = blurred[-2], blurred[-1]
        grad_x = grad_y = None
        if need_x:
            grad_x = torch.addcmul(blurred[0], x, blurred_second, value=2.0).addcmul_(y, blurred_cross)
        if need_y:
            grad_y = torch.addcmul(blurred[1 if need_x else 0], y, blurred_second, value=2.0).addcmul_(x, blurred_cross)
        return grad_x, grad_y, None, None


def ssim(x: Tensor, y: Tensor, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean SSIM of ``x`` and ``y`` (both (N, C, H, W)); 1 when they are equal.

    Differentiable in both inputs (the Gaussian filter is self-adjoint, so the backward pass
    is one more filtering of three or four maps). Half-precision inputs are evaluated in
    float32 (the variance terms cancel badly in fp16).
    """
    if x.shape != y.shape:
        raise ValueError(f"ssim: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.dtype in (torch.float16, torch.bfloat16):
        x, y = x.float(), y.float()
    if y.dtype != x.dtype:
        y = y.to(x.dtype)
    return _SSIMFunction.apply(x, y, window_size, float(sigma))

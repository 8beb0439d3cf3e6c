"""Teacher "expert prior": spatial and channel attention of an FPN feature map.

Both maps are softmax distributions of the mean absolute activation, rescaled so that their
mean is 1 (spatial: times H*W, channel: times C). A low temperature sharpens them.
"""
import torch
from torch import Tensor

__all__ = ["spatial_attention", "channel_attention", "expert_attention"]


def spatial_attention(feat: Tensor, temperature: float = 0.5) -> Tensor:
    """(N, C, H, W) → (N, H, W): ``H*W * softmax_{H*W}(mean_C |F| / T)``."""
    n, _, h, w = feat.shape
    energy = feat.abs().mean(dim=1).reshape(n, h * w)
    return (h * w * torch.softmax(energy / temperature, dim=1)).reshape(n, h, w)


def channel_attention(feat: Tensor, temperature: float = 0.5) -> Tensor:
    """(N, C, H, W) → (N, C): ``C * softmax_C(mean_{H,W} |F| / T)``."""
    c = feat.shape[1]
    energy = feat.abs().mean(dim=(2, 3))
    return c * torch.softmax(energy / temperature, dim=1)


def expert_attention(feat: Tensor, temperature: float = 0.5):
    """Both attentions from one pass over ``|F|``: returns (spatial (N,H,W), channel (N,C))."""
    n, c, h, w = feat.shape
    magnitude = feat.abs()
    spatial = h * w * torch.softmax(magnitude.mean(dim=1).reshape(n, h * w) / temperature, dim=1)
    channel = c * torch.softmax(magnitude.mean(dim=(2, 3)) / temperature, dim=1)
    return spatial.reshape(n, h, w), channel

"""Small feature maps and boxes shared by the distillation tests."""
import torch

STRIDES = (8, 16)


def features(seed=0, n=2, c=8, sizes=((12, 12), (6, 6))):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, c, h, w, generator=g) for h, w in sizes]


def boxes():
    return [torch.tensor([[4.0, 8.0, 40.0, 30.0], [50.0, 50.0, 90.0, 95.0]]), torch.tensor([[10.0, 10.0, 20.0, 60.0]])]

"""tkd_d2.modeling.decode: a batch's deltas decoded against one set of anchors give what
detectron2's ``apply_deltas`` gives on the anchors repeated per image."""
import math

import pytest
import torch

import tkd_d2  # noqa: F401  (detectron2 compatibility, before detectron2 is imported)
from detectron2.modeling.box_regression import Box2BoxTransform, Box2BoxTransformLinear

from tkd_d2.modeling.decode import decode_anchored
from tkd_d2.modeling.fcos import Box2BoxTransformExpLinear


class OwnDecode(Box2BoxTransform):
    """A subclass with its own apply_deltas: decoded by that method, not the broadcast one."""

    def apply_deltas(self, deltas, boxes):
        return super().apply_deltas(deltas, boxes) + 1.0


TRANSFORMS = {
    "retinanet": Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0)),
    "weighted": Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0), scale_clamp=math.log(100.0)),
    "fcos_linear": Box2BoxTransformLinear(normalize_by_size=True),
    "linear_unnormalised": Box2BoxTransformLinear(normalize_by_size=False),
    "fcos_exp": Box2BoxTransformExpLinear(normalize_by_size=True),
    "own": OwnDecode(weights=(1.0, 1.0, 1.0, 1.0)),
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_decode_anchored_is_apply_deltas_per_image(name):
    transform = TRANSFORMS[name]
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 100
    anchors = torch.cat([xy, xy + 4 + torch.rand(50, 2, generator=g) * 60], dim=1)
    deltas = torch.randn(3, 50, 4, generator=g) * 2
    deltas[0, 0, 2:] = 20.0  # beyond the exponent's clamp
    deltas.requires_grad_(True)
    got = decode_anchored(transform, deltas, anchors)
    flat = anchors.unsqueeze(0).expand(3, 50, 4).reshape(-1, 4)
    expected = transform.apply_deltas(deltas.reshape(-1, 4), flat).view(3, 50, 4)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-5)
    # and the same gradient reaches the deltas
    weight = torch.rand(3, 50, 4, generator=g)
    (g_got,) = torch.autograd.grad((got * weight).sum(), deltas)
    (g_expected,) = torch.autograd.grad((expected * weight).sum(), deltas)
    torch.testing.assert_close(g_got, g_expected, rtol=1e-5, atol=1e-5)

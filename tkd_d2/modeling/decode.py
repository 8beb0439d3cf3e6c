"""Decode a batch's deltas against one set of anchors, the anchors' sizes and centres computed
once and broadcast over the images (CRD decodes every anchor of every image, twice a step).

The same arithmetic as detectron2's ``apply_deltas`` of the transform, in the same order, on
(N, R, 4) deltas and (R, 4) anchors instead of (N·R, 4) and (N·R, 4); a transform this module
does not know (or a subclass that overrides ``apply_deltas``) is decoded by its own method.
"""
import functools

import torch
from torch import Tensor
from torch.nn import functional as F

from detectron2.modeling.box_regression import Box2BoxTransform, Box2BoxTransformLinear

from .fcos import Box2BoxTransformExpLinear

__all__ = ["decode_anchored"]


def decode_anchored(transform, deltas: Tensor, anchors: Tensor) -> Tensor:
    """(N, R, 4) deltas, (R, 4) XYXY anchors → (N, R, 4) XYXY boxes: ``transform.apply_deltas``
    of each image's deltas against the anchors."""
    kind = type(transform)
    if kind is Box2BoxTransform:
        return _delta_xywh(transform, deltas, anchors)
    if kind is Box2BoxTransformExpLinear:
        return _ltrb(transform, torch.exp(deltas.clamp(max=transform.scale_clamp)), anchors)
    if kind is Box2BoxTransformLinear:
        return _ltrb(transform, deltas, anchors)
    n, r = deltas.shape[:2]
    flat = anchors.unsqueeze(0).expand(n, r, 4).reshape(-1, 4)
    return transform.apply_deltas(deltas.reshape(-1, 4), flat).view(n, r, 4)


def _delta_xywh(transform, deltas, anchors):
    deltas = deltas.float()  # as detectron2: fp32 for decoding precision
    anchors = anchors.to(deltas.dtype)
    size = anchors[:, 2:] - anchors[:, :2]  # (R, 2) widths, heights
    centre = anchors[:, :2] + 0.5 * size
    wx, wy, ww, wh = transform.weights
    shift = deltas[..., :2] / deltas.new_tensor([wx, wy])
    scale = (deltas[..., 2:] / deltas.new_tensor([ww, wh])).clamp(max=transform.scale_clamp)
    centre = shift * size + centre
    size = torch.exp(scale) * size
    return torch.cat([centre - 0.5 * size, centre + 0.5 * size], dim=-1)


@functools.lru_cache(maxsize=None)
def _linear_scales_per_axis():
    """Whether this detectron2's ``Box2BoxTransformLinear`` scales l, r by the anchor's width and
    t, b by its height (upstream today) or all four by its width (the 2022 release): asked once
    of detectron2 itself, on a 2 x 4 anchor. The two agree on square anchors (FCOS's)."""
    box = Box2BoxTransformLinear(normalize_by_size=True).apply_deltas(
        torch.ones(1, 4), torch.tensor([[0.0, 0.0, 2.0, 4.0]]))
    return bool(box[0, 3] > 5.0)  # y2: 2 + 1 x 4 (the height) per axis, 2 + 1 x 2 by the width


def _ltrb(transform, deltas, anchors):
    deltas = F.relu(deltas)  # a valid box, as detectron2's linear transform
    anchors = anchors.to(deltas.dtype)
    centre = 0.5 * (anchors[:, :2] + anchors[:, 2:])  # (R, 2)
    if transform.normalize_by_size:
        size = anchors[:, 2:] - anchors[:, :2]  # (R, 2) widths, heights
        deltas = deltas * (size.repeat(1, 2) if _linear_scales_per_axis() else size[:, :1])
    return torch.cat([centre - deltas[..., :2], centre + deltas[..., 2:]], dim=-1)

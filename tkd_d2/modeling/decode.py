"""Decode a batch's deltas against one set of anchors, the anchors' sizes and centres computed
once and broadcast over the images (CRD decodes every anchor of every image, twice a step).

The same arithmetic as detectron2's ``apply_deltas`` of the transform, in the same order, on
(N, R, 4) deltas and (R, 4) anchors instead of (N·R, 4) and (N·R, 4); a transform this module
does not know (or a subclass that overrides ``apply_deltas``) is decoded by its own method.
"""
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


def _ltrb(transform, deltas, anchors):
    deltas = F.relu(deltas)  # a valid box, as detectron2's linear transform
    anchors = anchors.to(deltas.dtype)
    centre = 0.5 * (anchors[:, :2] + anchors[:, 2:])  # (R, 2)
    if transform.normalize_by_size:
        deltas = deltas * (anchors[:, 2] - anchors[:, 0]).unsqueeze(1)
    return torch.cat([centre - deltas[..., :2], centre + deltas[..., 2:]], dim=-1)

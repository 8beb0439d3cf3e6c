"""Ground-truth boxes → per-level foreground / background masks, all boxes of a batch at once.

Projection to a level (the reference's convention, FGD-style): a box covers the feature cells
``floor(x1 / s) .. ceil(x2 / s)`` and ``floor(y1 / s) .. ceil(y2 / s)``, both ends inclusive,
clipped to the map. A covered cell gets ``1 / (number of cells the box covers)``, the maximum
where boxes overlap, so each box that is not overlapped carries a foreground mass of exactly 1.
(The reference divides by the unclipped cell count and maps boxes with the un-padded image
size; here boxes are mapped with the level's stride, which is right for padded batches, and
the count is clipped so a box on the border keeps mass 1.)
"""
from typing import Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = ["boxes_with_batch_index", "box_cell_ranges", "foreground_background_masks"]

_MAX_CHUNK_ELEMENTS = 1 << 24  # per-box maps built at once (boxes × H × W)


def _as_tensor(boxes) -> Tensor:
    # detectron2 ``Boxes`` (or anything with ``.tensor``) or a plain (n, 4) tensor
    boxes = getattr(boxes, "tensor", boxes)
    return boxes.reshape(-1, 4)


def boxes_with_batch_index(gt_boxes: Sequence, device=None, dtype=None) -> Tensor:
    """Per-image (n_i, 4) XYXY boxes → one (sum n_i, 5) tensor ``[image index, x1, y1, x2, y2]``.

    This is the ``rois`` layout of :func:`torchvision.ops.roi_align`.
    """
    boxes = [_as_tensor(b) for b in gt_boxes]
    if device is None:
        device = boxes[0].device if boxes else torch.device("cpu")
    if dtype is None:
        # at least float32: fp16 cannot hold pixel coordinates of large images exactly
        dtype = torch.float64 if any(b.dtype == torch.float64 for b in boxes) else torch.float32
    if not boxes:
        return torch.zeros((0, 5), device=device, dtype=dtype)
    counts = torch.tensor([len(b) for b in boxes], device=device)
    index = torch.repeat_interleave(torch.arange(len(boxes), device=device), counts)
    coords = torch.cat([b.to(device=device, dtype=dtype) for b in boxes], dim=0)
    return torch.cat([index.to(dtype)[:, None], coords], dim=1)


def box_cell_ranges(rois: Tensor, feature_hw: Tuple[int, int], stride: Union[float, Sequence[float]]):
    """Inclusive cell ranges ``(x_lo, y_lo, x_hi, y_hi)`` (long, clipped) of each roi on a level.

    ``stride`` is a number or ``(stride_y, stride_x)``. Also returns ``valid`` (bool): the box
    touches the map at all.
    """
    h, w = feature_hw
    stride_y, stride_x = (stride, stride) if not isinstance(stride, (tuple, list)) else stride
    x1, y1, x2, y2 = rois[:, 1], rois[:, 2], rois[:, 3], rois[:, 4]
    x_lo = torch.floor(x1 / stride_x).long()
    y_lo = torch.floor(y1 / stride_y).long()
    x_hi = torch.ceil(x2 / stride_x).long()
    y_hi = torch.ceil(y2 / stride_y).long()
    valid = (x_lo <= w - 1) & (y_lo <= h - 1) & (x_hi >= 0) & (y_hi >= 0) & (x_hi >= x_lo) & (y_hi >= y_lo)
    x_lo, x_hi = x_lo.clamp(0, w - 1), x_hi.clamp(0, w - 1)
    y_lo, y_hi = y_lo.clamp(0, h - 1), y_hi.clamp(0, h - 1)
    return x_lo, y_lo, x_hi, y_hi, valid


def foreground_background_masks(
    gt_boxes: Union[Sequence, Tensor],
    feature_hw: Tuple[int, int],
    stride: Union[float, Sequence[float]],
    num_images: int = None,
    dtype: torch.dtype = torch.float32,
    device=None,
) -> Tuple[Tensor, Tensor]:
    """Foreground and background masks (each (N, H, W)) of one FPN level.

    Args:
        gt_boxes: per-image list of (n_i, 4) XYXY boxes in input-image pixels, or the
            (B, 5) output of :func:`boxes_with_batch_index` (then pass ``num_images``).
        feature_hw: (H, W) of the level.
        stride: the level's stride in input pixels (number, or ``(stride_y, stride_x)``).

    Returns:
        ``fg``: ``1 / cells(box)`` inside each box (max over overlapping boxes), 0 elsewhere;
        ``bg``: 1 where ``fg == 0``, normalised to sum 1 per image (all zero if the boxes
        cover the whole map). Images without boxes: fg all 0, bg uniform ``1 / (H*W)``.
    """
    if isinstance(gt_boxes, Tensor) and gt_boxes.dim() == 2 and gt_boxes.shape[1] == 5:
        rois = gt_boxes
        if num_images is None:
            raise ValueError("num_images is required when gt_boxes is a (B, 5) rois tensor")
    else:
        rois = boxes_with_batch_index(gt_boxes, device=device)
        num_images = len(gt_boxes) if num_images is None else num_images
    device = rois.device if device is None else device
    h, w = feature_hw
    fg = torch.zeros((num_images, h * w), dtype=dtype, device=device)
    if rois.shape[0] > 0:
        x_lo, y_lo, x_hi, y_hi, valid = box_cell_ranges(rois.to(device), feature_hw, stride)
        rows = torch.arange(h, device=device)
        cols = torch.arange(w, device=device)
        inside_y = (rows[None, :] >= y_lo[:, None]) & (rows[None, :] <= y_hi[:, None])  # (B, H)
        inside_x = (cols[None, :] >= x_lo[:, None]) & (cols[None, :] <= x_hi[:, None])  # (B, W)
        cells = ((y_hi - y_lo + 1) * (x_hi - x_lo + 1)).to(dtype)
        value = torch.where(valid, 1.0 / cells, torch.zeros_like(cells))
        image_index = rois[:, 0].to(device).long()
        # per-box (B, H, W) value maps, max-reduced into their images; chunks bound the memory
        chunk = max(1, _MAX_CHUNK_ELEMENTS // (h * w))
        for start in range(0, rois.shape[0], chunk):
            part = slice(start, start + chunk)
            per_box = (inside_y[part, :, None] & inside_x[part, None, :]).to(dtype) * value[part, None, None]
            fg.scatter_reduce_(0, image_index[part, None].expand(-1, h * w), per_box.reshape(-1, h * w),
                               reduce="amax", include_self=True)
    bg = (fg == 0).to(dtype)
    bg = bg / bg.sum(dim=1, keepdim=True).clamp_min(1.0)
    return fg.reshape(num_images, h, w), bg.reshape(num_images, h, w)

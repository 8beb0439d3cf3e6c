"""GT boxes → fg / bg masks: hand cases, invariants, and equality with a per-box loop."""
import math

import pytest
import torch

from tkd_d2.distill.masks import boxes_with_batch_index, foreground_background_masks


def loop_masks(gt_boxes, feature_hw, stride):
    """Plain per-image, per-box version of the documented rule."""
    h, w = feature_hw
    fg = torch.zeros(len(gt_boxes), h, w)
    for i, boxes in enumerate(gt_boxes):
        for x1, y1, x2, y2 in boxes.tolist():
            xl, yl = math.floor(x1 / stride), math.floor(y1 / stride)
            xh, yh = math.ceil(x2 / stride), math.ceil(y2 / stride)
            if xl > w - 1 or yl > h - 1 or xh < 0 or yh < 0:
                continue
            xl, xh = min(max(xl, 0), w - 1), min(max(xh, 0), w - 1)
            yl, yh = min(max(yl, 0), h - 1), min(max(yh, 0), h - 1)
            value = 1.0 / ((yh - yl + 1) * (xh - xl + 1))
            region = fg[i, yl:yh + 1, xl:xh + 1]
            fg[i, yl:yh + 1, xl:xh + 1] = torch.clamp(region, min=value)
    bg = (fg == 0).float()
    for i in range(len(gt_boxes)):
        if bg[i].sum() > 0:
            bg[i] /= bg[i].sum()
    return fg, bg


def test_single_box_hand_case():
    # stride 8: x 8..24 → cells floor(1)..ceil(3) = 1..3, same for y → 3×3 cells of 1/9
    fg, bg = foreground_background_masks([torch.tensor([[8.0, 8.0, 24.0, 24.0]])], (10, 10), 8)
    expected = torch.zeros(10, 10)
    expected[1:4, 1:4] = 1.0 / 9
    torch.testing.assert_close(fg[0], expected)
    assert fg[0].sum().item() == pytest.approx(1.0)
    assert bg[0].sum().item() == pytest.approx(1.0)
    assert (bg[0][1:4, 1:4] == 0).all()
    torch.testing.assert_close(bg[0][0, 0], torch.tensor(1.0 / 91))


def test_each_box_has_mass_one_and_overlap_takes_max():
    big = [0.0, 0.0, 40.0, 40.0]  # cells 0..5 → 36 cells
    small = [8.0, 8.0, 16.0, 16.0]  # cells 1..2 → 4 cells, inside big
    far = [64.0, 64.0, 72.0, 79.0]  # cells x 8..9, y 8..10 (clipped to 9) → 2×2
    fg, _ = foreground_background_masks([torch.tensor([big, small, far])], (10, 10), 8)
    fg = fg[0]
    assert fg[0, 0].item() == pytest.approx(1 / 36)
    assert fg[1, 1].item() == pytest.approx(1 / 4)  # max of 1/36 and 1/4
    assert fg[8:10, 8:10].sum().item() == pytest.approx(1.0)  # border box keeps mass 1
    assert fg[5, 5].item() == pytest.approx(1 / 36)


def test_vectorised_equals_loop_version():
    g = torch.Generator().manual_seed(0)
    gt_boxes = []
    for n in (3, 0, 7, 1):
        xy = torch.rand(n, 2, generator=g) * 90
        wh = torch.rand(n, 2, generator=g) * 40 + 1
        gt_boxes.append(torch.cat([xy, (xy + wh).clamp(max=100)], dim=1))
    for feature_hw, stride in (((13, 13), 8), ((7, 7), 16), ((4, 4), 32)):
        fg, bg = foreground_background_masks(gt_boxes, feature_hw, stride)
        fg_ref, bg_ref = loop_masks(gt_boxes, feature_hw, stride)
        torch.testing.assert_close(fg, fg_ref)
        torch.testing.assert_close(bg, bg_ref)
        assert torch.allclose(bg.sum(dim=(1, 2)), torch.ones(4))


def test_chunked_construction_is_identical(monkeypatch):
    import importlib

    masks_module = importlib.import_module("tkd_d2.distill.masks")
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(2, 9, 2, generator=g) * 60
    gt_boxes = [torch.cat([xy[i], xy[i] + 20], dim=1) for i in range(2)]
    whole = foreground_background_masks(gt_boxes, (10, 10), 8)
    monkeypatch.setattr(masks_module, "_MAX_CHUNK_ELEMENTS", 250)  # 2 boxes per chunk
    chunked = foreground_background_masks(gt_boxes, (10, 10), 8)
    torch.testing.assert_close(whole, chunked)


def test_images_without_boxes():
    boxes = [torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 15.0, 15.0]])]
    fg, bg = foreground_background_masks(boxes, (5, 6), 8)
    assert (fg[0] == 0).all()
    torch.testing.assert_close(bg[0], torch.full((5, 6), 1.0 / 30))
    fg, bg = foreground_background_masks([torch.zeros(0, 4)] * 3, (5, 6), 8)
    assert (fg == 0).all() and torch.isfinite(bg).all()
    torch.testing.assert_close(bg.sum(dim=(1, 2)), torch.ones(3))


def test_fully_covered_image_has_zero_background_not_nan():
    fg, bg = foreground_background_masks([torch.tensor([[0.0, 0.0, 40.0, 40.0]])], (4, 4), 8)
    assert (bg == 0).all() and torch.isfinite(bg).all()
    assert fg.sum().item() == pytest.approx(1.0)


def test_rois_layout():
    rois = boxes_with_batch_index([torch.tensor([[1.0, 2, 3, 4]]), torch.zeros(0, 4), torch.ones(2, 4)])
    assert rois.shape == (3, 5)
    assert rois[:, 0].tolist() == [0.0, 2.0, 2.0]

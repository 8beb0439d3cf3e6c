"""Decoupled expert loss: vanishes at student == teacher, skips unrequested terms, matches the
reference formula, handles images without boxes, and sends gradients to the student only."""
import importlib
import math

import pytest
import torch

from tkd_d2.distill import DecoupledExpertLoss

ded_module = importlib.import_module("tkd_d2.distill.ded")
from distill_data import STRIDES, boxes, features  # noqa: E402


def reference_level(student, teacher, gt_boxes, stride, temperature=0.5):
    """The reference's formula, written plainly: sqrt-weighted features, per-box mask loop."""
    n, c, h, w = teacher.shape
    value = teacher.abs()
    spatial = (h * w * torch.softmax((value.mean(1) / temperature).view(n, -1), 1)).view(n, h, w)
    channel = c * torch.softmax(value.mean((2, 3)) / temperature, 1)
    fg = torch.zeros(n, h, w)
    for i, bxs in enumerate(gt_boxes):
        for x1, y1, x2, y2 in bxs.tolist():
            xl, yl = math.floor(x1 / stride), math.floor(y1 / stride)
            xh, yh = min(math.ceil(x2 / stride), w - 1), min(math.ceil(y2 / stride), h - 1)
            fg[i, yl:yh + 1, xl:xh + 1] = torch.clamp(fg[i, yl:yh + 1, xl:xh + 1],
                                                      min=1.0 / ((yh + 1 - yl) * (xh + 1 - xl)))
    bg = (fg == 0).float()
    bg = bg / bg.sum(dim=(1, 2), keepdim=True).clamp_min(1)
    weight = spatial.sqrt()[:, None] * channel.sqrt()[:, :, None, None]
    fg_loss = ((student * weight * fg.sqrt()[:, None] - teacher * weight * fg.sqrt()[:, None]) ** 2).sum() / n
    bg_loss = ((student * weight * bg.sqrt()[:, None] - teacher * weight * bg.sqrt()[:, None]) ** 2).sum() / n
    return fg_loss, bg_loss


def test_zero_when_student_equals_teacher():
    feats = features()
    losses = DecoupledExpertLoss()(feats, [f.clone() for f in feats], boxes(), STRIDES)
    assert set(losses) == {"fg", "bg", "ssim"}
    for name, value in losses.items():
        assert abs(value.item()) < 1e-6, name


def test_matches_reference_formula_summed_over_levels():
    student, teacher = features(1), features(2)
    losses = DecoupledExpertLoss(temperature=0.5)(student, teacher, boxes(), STRIDES, compute=("fg", "bg"))
    fg_ref = bg_ref = 0.0
    for s, t, stride in zip(student, teacher, STRIDES):
        fg, bg = reference_level(s, t, boxes(), stride)
        fg_ref, bg_ref = fg_ref + fg, bg_ref + bg
    torch.testing.assert_close(losses["fg"], fg_ref)
    torch.testing.assert_close(losses["bg"], bg_ref)
    assert losses["fg"] > 0 and losses["bg"] > 0


def test_unrequested_terms_are_not_computed(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("ssim must not be called")

    monkeypatch.setattr(ded_module, "ssim", boom)
    student, teacher = features(1), features(2)
    losses = DecoupledExpertLoss()(student, teacher, boxes(), STRIDES, compute=("fg", "bg"))
    assert set(losses) == {"fg", "bg"}
    with pytest.raises(AssertionError, match="must not be called"):
        DecoupledExpertLoss()(student, teacher, boxes(), STRIDES, compute=("ssim",))


def test_ssim_only_does_not_build_masks(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("masks must not be built")

    monkeypatch.setattr(ded_module, "foreground_background_masks", boom)
    student, teacher = features(1), features(2)
    losses = DecoupledExpertLoss()(student, teacher, boxes(), STRIDES, compute=("ssim",))
    assert set(losses) == {"ssim"} and 0 < losses["ssim"].item() < 1


@pytest.mark.parametrize("gt_boxes", [
    [torch.zeros(0, 4), torch.tensor([[10.0, 10.0, 20.0, 60.0]])],  # one image without boxes
    [torch.zeros(0, 4), torch.zeros(0, 4)],  # no box in the whole batch
])
def test_images_without_boxes(gt_boxes):
    student = [f.requires_grad_() for f in features(1)]
    teacher = features(2)
    losses = DecoupledExpertLoss()(student, teacher, gt_boxes, STRIDES)
    for value in losses.values():
        assert torch.isfinite(value)
    if all(len(b) == 0 for b in gt_boxes):
        assert losses["fg"].item() == 0.0
    sum(losses.values()).backward()
    assert all(torch.isfinite(f.grad).all() for f in student)
    if len(gt_boxes[1]) > 0:
        # the box-free image adds nothing to fg: batch fg = (fg of image 1 alone) / batch size
        alone = DecoupledExpertLoss()([f[1:] for f in features(1)], [f[1:] for f in teacher], gt_boxes[1:],
                                      STRIDES, compute=("fg",))
        torch.testing.assert_close(losses["fg"].detach(), alone["fg"] / 2)


def test_gradients_reach_student_not_teacher():
    student = [f.requires_grad_() for f in features(1)]
    teacher = [f.requires_grad_() for f in features(2)]
    losses = DecoupledExpertLoss()(student, teacher, boxes(), STRIDES, compute=("fg", "bg", "ssim", "attention"))
    sum(losses.values()).backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in student)
    assert all(f.grad is None for f in teacher)


def test_unknown_term_is_an_error():
    with pytest.raises(ValueError, match="unknown"):
        DecoupledExpertLoss()(features(1), features(2), boxes(), STRIDES, compute=("fgg",))

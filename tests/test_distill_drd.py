"""Dual relation loss: vanishes at student == teacher, equals a per-box loop, is finite without
boxes, sends gradients to the student only, and skips unrequested terms."""
import importlib

import pytest
import torch
from torchvision.ops import roi_align

from tkd_d2.distill import DualRelationLoss
from tkd_d2.distill.drd import enhanced_map
from tkd_d2.distill.graph import graph_reasoning

drd_module = importlib.import_module("tkd_d2.distill.drd")
from distill_data import STRIDES, boxes, features  # noqa: E402


def loss_module(mode="per_step"):
    return DualRelationLoss(in_channels=8, roi_size=3, temperature=0.5, mode=mode, seed=0)


def test_zero_when_student_equals_teacher():
    feats = features()
    losses = loss_module()(feats, [f.clone() for f in feats], boxes(), STRIDES, step=3)
    assert set(losses) == {"instance", "pixel"}
    assert losses["instance"].item() < 1e-10 and losses["pixel"].item() < 1e-10
    different = loss_module()(feats, features(1), boxes(), STRIDES, step=3)
    assert different["instance"] > 0 and different["pixel"] > 0


def test_instance_term_equals_per_box_loop():
    student, teacher = features(1), features(2)
    drd = loss_module()
    got = drd(student, teacher, boxes(), STRIDES, step=7, compute=("instance",))["instance"]
    unit = drd.instance_units.units_for_step(7)
    expected = 0.0
    for s, t, stride in zip(student, teacher, STRIDES):
        crops = {}
        for name, feat in (("s", s), ("t", t)):
            maps = enhanced_map(feat, 0.5)
            per_box = []
            for image, bxs in enumerate(boxes()):
                for box in bxs:
                    crop = roi_align(maps[image:image + 1], [box[None]], 3, 1.0 / stride, 2, True)
                    per_box.append(crop.reshape(9))
            crops[name] = torch.stack(per_box, dim=1)[None]  # (1, 9 cells, boxes)
        relation_s = graph_reasoning(crops["s"], unit)
        relation_t = graph_reasoning(crops["t"], unit)
        expected = expected + ((relation_s - relation_t) ** 2).mean()
    torch.testing.assert_close(got, expected)


def test_pixel_term_is_mse_of_the_same_unit_on_both():
    student, teacher = features(1), features(2)
    drd = loss_module()
    got = drd(student, teacher, boxes(), STRIDES, step=2, compute=("pixel",))["pixel"]
    unit = drd.pixel_units.units_for_step(2)
    expected = sum(((graph_reasoning(s, unit) - graph_reasoning(t, unit)) ** 2).mean()
                   for s, t in zip(student, teacher))
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("gt_boxes", [
    [torch.zeros(0, 4), torch.tensor([[10.0, 10.0, 20.0, 60.0]])],  # one image without boxes, one box in all
    [torch.zeros(0, 4), torch.zeros(0, 4)],  # no box in the whole batch
])
def test_without_boxes_is_finite(gt_boxes):
    student = [f.requires_grad_() for f in features(1)]
    losses = loss_module()(student, features(2), gt_boxes, STRIDES, step=0)
    assert all(torch.isfinite(v) for v in losses.values())
    if all(len(b) == 0 for b in gt_boxes):
        assert losses["instance"].item() == 0.0
    sum(losses.values()).backward()
    assert all(torch.isfinite(f.grad).all() for f in student)


def test_gradients_reach_student_not_teacher_nor_units():
    student = [f.requires_grad_() for f in features(1)]
    teacher = [f.requires_grad_() for f in features(2)]
    drd = loss_module()
    losses = drd(student, teacher, boxes(), STRIDES, step=1)
    losses["instance"].backward(retain_graph=True)
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in student)
    losses["pixel"].backward()
    assert all(f.grad is None for f in teacher)
    assert list(drd.parameters()) == []


def test_unrequested_terms_are_not_computed(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("roi_align must not be called")

    monkeypatch.setattr(drd_module, "roi_align", boom)
    losses = loss_module()(features(1), features(2), boxes(), STRIDES, step=0, compute=("pixel",))
    assert set(losses) == {"pixel"}
    with pytest.raises(AssertionError, match="must not be called"):
        loss_module()(features(1), features(2), boxes(), STRIDES, step=0, compute=("instance",))


def test_modes_and_steps():
    student, teacher = features(1), features(2)
    per_step = loss_module("per_step")
    a = per_step(student, teacher, boxes(), STRIDES, step=1)["pixel"]
    b = loss_module("per_step")(student, teacher, boxes(), STRIDES, step=1)["pixel"]
    c = per_step(student, teacher, boxes(), STRIDES, step=2)["pixel"]
    assert a.item() == b.item() and a.item() != c.item()
    fixed = loss_module("fixed")
    assert fixed(student, teacher, boxes(), STRIDES, step=1)["pixel"].item() == \
        fixed(student, teacher, boxes(), STRIDES, step=99)["pixel"].item()
    with pytest.raises(ValueError):
        per_step(student, teacher, boxes(), STRIDES)  # per_step needs the step


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes(dtype):
    from tkd_d2.distill import DecoupledExpertLoss

    student = [f.to(dtype).requires_grad_() for f in features(1)]
    teacher = [f.to(dtype) for f in features(2)]
    losses = {**DecoupledExpertLoss()(student, teacher, boxes(), STRIDES),
              **loss_module()(student, teacher, boxes(), STRIDES, step=0)}
    for value in losses.values():
        assert torch.isfinite(value)
        assert value.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    sum(losses.values()).backward()
    assert all(f.grad.dtype == dtype and torch.isfinite(f.grad).all() for f in student)

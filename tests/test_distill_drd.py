"""Dual relation loss: vanishes at student == teacher, equals a per-box loop, is finite without
boxes, sends gradients to the student only, and skips unrequested terms."""
import importlib
import math

import pytest
import torch
from torchvision.ops import roi_align

from tkd_d2.distill import DualRelationLoss
from tkd_d2.distill.drd import enhanced_map, quantised_rois
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


# ------------------------------------------------------------------ the reference's instance form
def reference_module(mode="per_step"):
    return DualRelationLoss(in_channels=8, roi_size=3, temperature=0.5, mode=mode, seed=0, instance_form="reference")


def test_quantised_rois_snap_outwards_with_one_cell_margin():
    rois = torch.tensor([[1.0, 4.0, 8.0, 40.0, 30.0], [0.0, 16.0, 16.0, 24.0, 24.0]])
    expected = torch.tensor([[1.0, 0.0, 1.0, 6.0, 5.0], [0.0, 2.0, 2.0, 4.0, 4.0]])
    torch.testing.assert_close(quantised_rois(rois, 8), expected)


def test_reference_unit_has_boxes_as_channels_fresh_per_level_and_step():
    drd = reference_module()
    for num_boxes, nodes in ((1, 1), (2, 1), (3, 1), (6, 3)):
        unit = drd.reference_unit(0, 0, num_boxes)
        assert unit.proj_weight.shape == (nodes, num_boxes) and unit.extend_weight.shape[0] == num_boxes
    same = drd.reference_unit(4, 1, 3)
    assert torch.equal(same.proj_weight, reference_module().reference_unit(4, 1, 3).proj_weight)
    assert not torch.equal(same.proj_weight, drd.reference_unit(4, 0, 3).proj_weight)  # another level
    assert not torch.equal(same.proj_weight, drd.reference_unit(5, 1, 3).proj_weight)  # another step
    fixed = reference_module("fixed")
    assert torch.equal(fixed.reference_unit(4, 1, 3).proj_weight, fixed.reference_unit(9, 1, 3).proj_weight)


def test_reference_instance_term_equals_per_box_loop():
    student, teacher = features(1), features(2)
    drd = reference_module()
    got = drd(student, teacher, boxes(), STRIDES, step=7, compute=("instance",))["instance"]
    num_boxes = sum(len(b) for b in boxes())
    expected = 0.0
    for level, (s, t, stride) in enumerate(zip(student, teacher, STRIDES)):
        unit = drd.reference_unit(7, level, num_boxes)
        relations = []
        for feat in (s, t):
            maps = enhanced_map(feat, 0.5)
            channels = []
            for image, bxs in enumerate(boxes()):
                for x1, y1, x2, y2 in bxs.tolist():
                    cell = torch.tensor([[math.floor(x1 / stride), math.floor(y1 / stride),
                                          math.ceil(x2 / stride) + 1, math.ceil(y2 / stride) + 1]], dtype=torch.float32)
                    channels.append(roi_align(maps[image:image + 1], [cell], 3, 1.0, 2, False).reshape(9))
            relations.append(graph_reasoning(torch.stack(channels)[None], unit))  # (1, boxes, 9 cells)
        expected = expected + ((relations[0] - relations[1]) ** 2).mean()
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("gt_boxes", [
    [torch.tensor([[10.0, 10.0, 20.0, 60.0]]), torch.zeros(0, 4)],  # one box: the reference fails here
    [torch.zeros(0, 4), torch.zeros(0, 4)],
])
def test_reference_form_with_one_box_or_none(gt_boxes):
    student = [f.requires_grad_() for f in features(1)]
    loss = reference_module()(student, features(2), gt_boxes, STRIDES, step=0, compute=("instance",))["instance"]
    assert torch.isfinite(loss)
    loss.backward()
    assert all(f.grad is None or torch.isfinite(f.grad).all() for f in student)
    if len(gt_boxes[0]):
        assert loss > 0 and any(f.grad.abs().sum() > 0 for f in student)
    else:
        assert loss.item() == 0.0


def test_reference_form_vanishes_when_student_equals_teacher():
    feats = features()
    losses = reference_module()(feats, [f.clone() for f in feats], boxes(), STRIDES, step=3)
    assert losses["instance"].item() < 1e-10 and losses["pixel"].item() < 1e-10
    assert reference_module()(feats, features(1), boxes(), STRIDES, step=3)["instance"] > 0


def test_unknown_instance_form_is_an_error():
    with pytest.raises(ValueError, match="'cells'"):
        DualRelationLoss(in_channels=8, instance_form="cells")

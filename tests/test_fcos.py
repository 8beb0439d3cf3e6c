"""FCOS box activation: exp edge distances keep learning where detectron2's relu has died; the
distiller decodes the teacher head's deltas with the teacher's own transform."""
import math

import pytest
import torch

import tkd_d2  # noqa: F401
from detectron2.modeling import build_model
from detectron2.modeling.box_regression import Box2BoxTransformLinear
from detectron2.utils.events import EventStorage

from tkd_d2.modeling.fcos import Box2BoxTransformExpLinear
from test_distiller import SMALL, _batch, _cfg, _distiller_cfg, _teacher_file

FCOS_YAML = "configs/Synthetic/fcos_R_18_FPN.yaml"


def test_exp_transform_decodes_the_exponent_of_the_linear_one():
    anchors = torch.tensor([[0.0, 0.0, 8.0, 8.0], [16.0, 8.0, 32.0, 24.0]])
    distances = torch.tensor([[0.5, 1.0, 2.0, 3.0], [1.5, 0.25, 4.0, 1.0]])
    linear, exp = Box2BoxTransformLinear(normalize_by_size=True), Box2BoxTransformExpLinear()
    torch.testing.assert_close(exp.apply_deltas(distances.log(), anchors), linear.apply_deltas(distances, anchors))
    # targets stay linear distances (the centerness targets are computed from them)
    boxes = linear.apply_deltas(distances, anchors)
    torch.testing.assert_close(exp.get_deltas(anchors, boxes), distances)
    # clamped like detectron2's Box2BoxTransform: no overflow
    huge = exp.apply_deltas(torch.full((1, 4), 1e4), anchors[:1])
    torch.testing.assert_close(huge[0, 2], torch.tensor(4.0 + 8.0 * math.exp(exp.scale_clamp)))


@pytest.mark.parametrize("activation", ["relu", "exp"])
def test_box_regression_with_every_prediction_negative(activation):
    # the state of a dead from-scratch run: relu gets no gradient back, exp does
    cfg = _cfg(FCOS_YAML, SMALL + ["MODEL.FCOS.BOX_ACTIVATION", activation])
    model = build_model(cfg)
    model.train()
    with torch.no_grad():
        model.head.bbox_pred.bias.fill_(-5.0)
    with EventStorage():
        losses = model(_batch())
    losses["loss_fcos_loc"].backward()
    grad = model.head.bbox_pred.weight.grad
    if activation == "relu":
        assert grad is None or grad.abs().max() == 0
    else:
        assert grad.abs().max() > 0


def test_config_rejects_unknown_activation_and_exp_with_smooth_l1():
    with pytest.raises(ValueError, match="BOX_ACTIVATION='sigmoid'"):
        build_model(_cfg(FCOS_YAML, SMALL + ["MODEL.FCOS.BOX_ACTIVATION", "sigmoid"]))
    with pytest.raises(ValueError, match="box-space loss"):
        build_model(_cfg(FCOS_YAML, SMALL + ["MODEL.FCOS.BOX_ACTIVATION", "exp", "MODEL.FCOS.BOX_LOSS", "smooth_l1"]))


def test_fcos_configs_use_exp():
    assert isinstance(build_model(_cfg(FCOS_YAML, SMALL)).box2box_transform, Box2BoxTransformExpLinear)


def test_crd_decodes_with_the_teachers_transform(tmp_path, monkeypatch):
    import tkd_d2.modeling.distiller as distiller_module

    # a relu teacher (detectron2's FCOS) distilled into an exp student
    weights, teacher_yaml = _teacher_file(tmp_path, FCOS_YAML, SMALL + ["MODEL.FCOS.BOX_ACTIVATION", "relu"])
    model = build_model(_distiller_cfg(FCOS_YAML, teacher_yaml, weights, SMALL))
    assert isinstance(model.student.box2box_transform, Box2BoxTransformExpLinear)
    assert not isinstance(model.teacher.box2box_transform, Box2BoxTransformExpLinear)
    model.train()
    decoded = []
    real = distiller_module.decode_anchored

    def spy(transform, deltas, anchors):
        decoded.append(transform)
        return real(transform, deltas, anchors)

    monkeypatch.setattr(distiller_module, "decode_anchored", spy)
    with EventStorage():
        losses = model(_batch())
    assert torch.isfinite(losses["loss_crd_box"])
    # the cross head's deltas and the teacher's, both with the teacher's transform
    assert decoded == [model.teacher.box2box_transform] * 2


def _detectron2_assignment(model, anchors, instances):
    """detectron2's own FCOS assignment (matched box index per point, -1: background) for
    one image, through whichever helper this build has: the 2022 snapshot's
    ``match_anchors`` or upstream's ``_match_anchors`` quality matrix."""
    from detectron2.modeling.meta_arch.fcos import FCOS

    if hasattr(FCOS, "_match_anchors"):
        quality = FCOS._match_anchors(model, instances.gt_boxes, anchors)
        best, index = quality.max(dim=0)
        index[best < 1e-5] = -1
        return index
    return FCOS.match_anchors(model, anchors, [instances])[0]


def test_assignment_equals_detectrons_own_and_handles_empty_images():
    from detectron2.structures import Boxes, Instances

    model = build_model(_cfg("configs/Synthetic/fcos_R_18_FPN.yaml", SMALL))
    size = 256
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(12, 2, generator=g) * size * 0.7
    boxes = torch.cat([xy, xy + 8 + torch.rand(12, 2, generator=g) * size * 0.5], dim=1).clamp(max=size)
    boxes[5] = boxes[4]  # overlapping duplicates and nested boxes: the smaller box wins
    boxes[6] = torch.tensor([10.0, 10.0, 240.0, 240.0])
    boxes[7] = torch.tensor([40.0, 40.0, 80.0, 80.0])
    with_boxes = Instances((size, size), gt_boxes=Boxes(boxes), gt_classes=torch.arange(12) % 6)
    empty = Instances((size, size), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.long))
    features = [torch.zeros(1, 1, size // s, size // s) for s in (8, 16, 32, 64, 128)]
    anchors = model.anchor_generator(features)
    labels, matched = model.label_anchors(anchors, [with_boxes, empty])

    expected = _detectron2_assignment(model, anchors, with_boxes)
    assert (expected >= 0).sum() > 20  # the case has positives on several levels
    assert torch.equal(labels[0] == model.num_classes, expected < 0)
    positive = expected >= 0
    assert torch.equal(labels[0][positive], with_boxes.gt_classes[expected[positive]])
    assert torch.equal(matched[0][positive], boxes[expected[positive]])
    # an image without boxes: every point background, boxes a plain zero tensor
    assert torch.equal(labels[1], torch.full_like(labels[1], model.num_classes))
    assert isinstance(matched[1], torch.Tensor) and not matched[1].any()
    with EventStorage():
        model.train()
        losses = model(_batch())  # one image with boxes, one without
    assert all(torch.isfinite(v) for v in losses.values())

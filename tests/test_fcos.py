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


def test_crd_decodes_with_the_teachers_transform(tmp_path):
    # a relu teacher (detectron2's FCOS) distilled into an exp student
    weights, teacher_yaml = _teacher_file(tmp_path, FCOS_YAML, SMALL + ["MODEL.FCOS.BOX_ACTIVATION", "relu"])
    model = build_model(_distiller_cfg(FCOS_YAML, teacher_yaml, weights, SMALL))
    assert isinstance(model.student.box2box_transform, Box2BoxTransformExpLinear)
    assert not isinstance(model.teacher.box2box_transform, Box2BoxTransformExpLinear)
    model.train()
    decoded = []
    real = model.teacher.box2box_transform.apply_deltas

    def spy(deltas, boxes):
        decoded.append(deltas.shape)
        return real(deltas, boxes)

    model.teacher.box2box_transform.apply_deltas = spy
    with EventStorage():
        losses = model(_batch())
    assert torch.isfinite(losses["loss_crd_box"])
    assert len(decoded) == 2  # the cross head's deltas and the teacher's

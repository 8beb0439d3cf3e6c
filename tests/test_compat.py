"""The compatibility layer: detectron2 imports and unusable ops fail clearly."""
import pytest

import tkd_d2  # noqa: F401  (applies the shims)
from tkd_d2 import compat


def test_detectron2_modules_import():
    import inspect
    import sys

    from PIL import Image

    import detectron2.data.transforms as T  # (PIL.Image.LINEAR default argument)
    import detectron2.evaluation.fast_eval_api  # noqa: F401  (imports _C)
    import detectron2.layers  # noqa: F401  (imports _C)
    import detectron2.model_zoo  # noqa: F401  (imports pkg_resources)
    from detectron2.engine import DefaultTrainer

    # the default that named the removed alias is a real resampling filter (bilinear, as upstream)
    default = inspect.signature(T.ResizeTransform.__init__).parameters["interp"].default
    assert default in (None, Image.BILINEAR), default
    assert callable(sys.modules["pkg_resources"].resource_filename)
    assert callable(DefaultTrainer.train)


@pytest.mark.skipif(compat.HAS_C_EXTENSION, reason="detectron2 here has its C++ extension")
def test_missing_c_op_raises_clear_error():
    import torch
    from detectron2.layers.rotated_boxes import pairwise_iou_rotated

    boxes = torch.tensor([[10.0, 10.0, 4.0, 4.0, 0.0]])
    with pytest.raises(compat.MissingCExtensionError, match="box_iou_rotated.*without its C\\+\\+ extension"):
        pairwise_iou_rotated(boxes, boxes)


@pytest.mark.skipif(compat.HAS_C_EXTENSION, reason="detectron2 here has its C++ extension")
def test_missing_registered_op_raises_clear_error():
    # upstream calls its ops as torch.ops.detectron2.<op>, bypassing detectron2._C
    import torch

    with pytest.raises(compat.MissingCExtensionError, match="nms_rotated.*without its C\\+\\+ extension"):
        torch.ops.detectron2.nms_rotated


def test_shims_are_applied_only_where_the_build_needs_them():
    # decided by what the build does, never by its version string (snapshot and upstream both say 0.6)
    if "PIL.Image.LINEAR" in compat.applied_shims:
        assert "Image.LINEAR" in compat._detectron2_source("data/transforms/transform.py")
    if "RetinaNetHead GN type probe" in compat.applied_shims:
        assert "get_norm(norm, 1)" in compat._detectron2_source("modeling/meta_arch/retinanet.py")
    assert ("detectron2._C stand-in" in compat.applied_shims) == (not compat.HAS_C_EXTENSION)


def test_apply_is_idempotent():
    before = list(compat.applied_shims)
    compat.apply()
    assert compat.applied_shims == before


def test_retinanet_head_accepts_group_norm():
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.meta_arch.retinanet import RetinaNetHead

    head = RetinaNetHead(
        input_shape=[ShapeSpec(channels=64)] * 2, num_classes=3, num_anchors=1,
        conv_dims=[64, 64], norm="GN",
    )
    assert any(type(m).__name__ == "GroupNorm" for m in head.cls_subnet)

"""INPUT.RANDOM_ORIENTATION: all 8 orientations of a training image, boxes moving with the
pixels; off by default and never at test time."""
import cv2
import numpy as np
import pytest

import tkd_d2  # noqa: F401
from tkd_d2.config import load_config
from tkd_d2.data import TKDDatasetMapper
from tkd_d2.data.orientation import TransposeTransform
from tkd_d2.errors import ConfigError

H, W = 60, 90  # not square: a transpose shows in the shape
BOX = [10.0, 5.0, 40.0, 20.0]  # x1, y1, x2, y2: a white rectangle on black, off every axis of symmetry


def _record(tmp_path):
    image = np.zeros((H, W, 3), np.uint8)
    x1, y1, x2, y2 = map(int, BOX)
    image[y1:y2, x1:x2] = 255
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), image)
    return {"file_name": str(path), "height": H, "width": W, "image_id": 0,
            "annotations": [{"bbox": list(BOX), "bbox_mode": 0, "category_id": 0}]}


def _cfg(opts=()):
    # no resize (the image stays at its size, so the box can be checked on pixels)
    return load_config("configs/Synthetic/fcos_R_18_FPN.yaml",
                       ["INPUT.MIN_SIZE_TRAIN", "(60,)", "INPUT.MAX_SIZE_TRAIN", 1000,
                        "INPUT.MIN_SIZE_TEST", 60, "INPUT.MAX_SIZE_TEST", 1000, *opts],
                       device="cpu", register_datasets=False)


def test_all_eight_orientations_and_the_box_follows_the_pixels(tmp_path):
    mapper = TKDDatasetMapper(_cfg(["INPUT.RANDOM_ORIENTATION", True]), is_train=True)
    record = _record(tmp_path)
    seen = set()
    np.random.seed(0)
    for _ in range(200):
        out = mapper(dict(record))
        image = out["image"].numpy()[0]  # (h, w)
        (x1, y1, x2, y2), = out["instances"].gt_boxes.tensor.round().int().tolist()
        white = np.argwhere(image > 127)
        # the white pixels are exactly the box's
        assert (white[:, 0].min(), white[:, 1].min(), white[:, 0].max() + 1, white[:, 1].max() + 1) == (y1, x1, y2, x2)
        seen.add((image.shape, (x1, y1)))
    assert len(seen) == 8
    assert {shape for shape, _ in seen} == {(H, W), (W, H)}


def test_off_by_default_and_at_test_time(tmp_path):
    record = _record(tmp_path)
    for mapper in (TKDDatasetMapper(_cfg(), is_train=True),
                   TKDDatasetMapper(_cfg(["INPUT.RANDOM_ORIENTATION", True]), is_train=False)):
        shapes = {tuple(mapper(dict(record))["image"].shape[1:]) for _ in range(20)}
        assert shapes == {(H, W)}


def test_needs_the_horizontal_flip():
    with pytest.raises(ConfigError, match="INPUT.RANDOM_ORIENTATION needs INPUT.RANDOM_FLIP"):
        TKDDatasetMapper(_cfg(["INPUT.RANDOM_ORIENTATION", True, "INPUT.RANDOM_FLIP", "none"]), is_train=True)


def test_transpose_is_its_own_inverse_on_coordinates():
    t = TransposeTransform()
    coords = np.array([[1.0, 2.0], [3.0, 5.0]])
    assert np.array_equal(t.apply_coords(coords), [[2.0, 1.0], [5.0, 3.0]])
    assert np.array_equal(t.inverse().apply_coords(t.apply_coords(coords)), coords)

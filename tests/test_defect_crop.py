"""INPUT.DEFECT_CROP: crops keep their chosen box, the background share holds, boxes the crop
cuts below MIN_VISIBLE are dropped and the rest clipped, bad values name their key, and the
detectors and the distiller train on the crops."""
import cv2
import numpy as np
import pytest
import torch

import tkd_d2  # noqa: F401  (adapts detectron2 first)
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from tkd_d2.config import load_config
from tkd_d2.data import TKDDatasetMapper
from tkd_d2.data.crop import DefectCrop, visible_share
from tkd_d2.errors import ConfigError


def _image_record(tmp_path, boxes, size=(300, 400)):
    h, w = size
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), np.full((h, w, 3), 80, np.uint8))
    return {"file_name": str(path), "height": h, "width": w, "image_id": 0,
            "annotations": [{"bbox": list(map(float, b)), "bbox_mode": 0, "category_id": 0} for b in boxes]}


def _cfg(opts=(), yaml="configs/Synthetic/fcos_R_18_FPN.yaml"):
    # no resize: the crop works on the image's own pixels
    return load_config(yaml, ["INPUT.MIN_SIZE_TRAIN", "(300,)", "INPUT.MAX_SIZE_TRAIN", 1000,
                              "INPUT.MIN_SIZE_TEST", 300, "INPUT.MAX_SIZE_TEST", 1000,
                              "INPUT.DEFECT_CROP.ENABLED", True, "INPUT.DEFECT_CROP.SIZE", 100, *opts],
                       device="cpu", register_datasets=False)


def test_the_crop_sits_after_the_resize_and_holds_the_chosen_box_whole(tmp_path):
    mapper = TKDDatasetMapper(_cfg(["INPUT.DEFECT_CROP.BACKGROUND_PROB", 0.0]), is_train=True)
    kinds = [type(a) for a in mapper.augmentations.augs]
    assert kinds.index(DefectCrop) == kinds.index(T.ResizeShortestEdge) + 1
    record = _image_record(tmp_path, [[250, 200, 290, 230]])
    np.random.seed(0)
    corners = set()
    for _ in range(100):
        out = mapper(dict(record))
        assert tuple(out["image"].shape[1:]) == (100, 100)
        box, = out["instances"].gt_boxes.tensor.tolist()
        assert box[2] - box[0] == pytest.approx(40) and box[3] - box[1] == pytest.approx(30)  # whole
        corners.add(tuple(round(v) for v in box[:2]))
    assert len(corners) > 20  # jittered: not always in the middle


def test_background_share(tmp_path):
    mapper = TKDDatasetMapper(_cfg(["INPUT.DEFECT_CROP.BACKGROUND_PROB", 0.3]),
                              is_train=True)
    record = _image_record(tmp_path, [[10, 10, 20, 20]], size=(1000, 1000))
    np.random.seed(0)
    without = sum(len(mapper(dict(record))["instances"]) == 0 for _ in range(400))
    assert 0.2 <= without / 400 <= 0.4  # 0.3 of the crops anywhere, which rarely hit a 10 px box


def test_cut_boxes_below_min_visible_are_dropped_and_the_rest_clipped(tmp_path, monkeypatch):
    monkeypatch.setattr(DefectCrop, "get_transform", lambda self, image, boxes: T.CropTransform(0, 0, 100, 100))
    mapper = TKDDatasetMapper(_cfg(["INPUT.DEFECT_CROP.MIN_VISIBLE", 0.5, "INPUT.RANDOM_FLIP", "none"]),
                              is_train=True)
    inside, quarter, three_quarters = [10, 10, 30, 30], [90, 10, 130, 30], [70, 50, 110, 70]
    out = mapper(_image_record(tmp_path, [inside, quarter, three_quarters]))
    assert out["instances"].gt_boxes.tensor.tolist() == [inside, [70, 50, 100, 70]]


def test_visible_share():
    before = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [5, 5, 5, 9]], dtype=float)
    after = np.array([[0, 0, 10, 10], [0, 0, 5, 10], [5, 5, 5, 9]], dtype=float)
    assert visible_share(before, after).tolist() == [1.0, 0.5, 1.0]


@pytest.mark.parametrize("opts, key", [
    (["INPUT.DEFECT_CROP.SIZE", 0], "INPUT.DEFECT_CROP.SIZE"),
    (["INPUT.DEFECT_CROP.BACKGROUND_PROB", -0.1], "INPUT.DEFECT_CROP.BACKGROUND_PROB"),
    (["INPUT.DEFECT_CROP.MIN_VISIBLE", 1.5], "INPUT.DEFECT_CROP.MIN_VISIBLE"),
])
def test_bad_values_name_their_key(opts, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        TKDDatasetMapper(_cfg(opts), is_train=True)


def test_a_crop_larger_than_the_image_names_the_key_and_the_size(tmp_path):
    mapper = TKDDatasetMapper(_cfg(["INPUT.DEFECT_CROP.SIZE", 350]), is_train=True)
    with pytest.raises(ConfigError, match=r"INPUT\.DEFECT_CROP\.SIZE 350 px .* \(400x300\)"):
        mapper(_image_record(tmp_path, [[10, 10, 20, 20]]))


def test_no_crop_at_test_time(tmp_path):
    out = TKDDatasetMapper(_cfg(), is_train=False)(_image_record(tmp_path, [[10, 10, 20, 20]]))
    assert tuple(out["image"].shape[1:]) == (300, 400)


@pytest.mark.parametrize("family", ["retinanet", "fcos"])
def test_detectors_and_the_distiller_train_on_crops(tmp_path, family):
    from test_distiller import SMALL, _teacher_file

    yaml = f"configs/Synthetic/{family}_R_18_FPN.yaml"
    mapper = TKDDatasetMapper(_cfg(yaml=yaml), is_train=True)
    np.random.seed(0)
    batch = [mapper(_image_record(tmp_path, [[250, 200, 290, 230], [20, 20, 60, 50]])) for _ in range(2)]
    weights, teacher_yaml = _teacher_file(tmp_path, yaml, SMALL)
    cfg = _cfg([*SMALL, "MODEL.META_ARCHITECTURE", "TKDDistiller", "MODEL.TKD.WARMUP_ITERS", 0,
                "MODEL.TKD.STUDENT_META_ARCHITECTURE", "RetinaNet" if family == "retinanet" else "FCOSDetector",
                "MODEL.TKD.TEACHER.CONFIG", teacher_yaml, "MODEL.TKD.TEACHER.WEIGHTS", weights], yaml=yaml)
    model = build_model(cfg).train()
    with EventStorage():
        losses = model(batch)
    total = sum(losses.values())
    assert torch.isfinite(total) and any(k.startswith("loss_crd") for k in losses)
    total.backward()

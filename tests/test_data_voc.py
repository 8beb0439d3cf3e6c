"""VOC / COCO loading, registration from the config, the mapper's errors, and real NEU-DET."""
import collections
import json
import logging
import os

import cv2
import numpy as np
import pytest

import tkd_d2  # noqa: F401  (compat shims before detectron2.data)
from tkd_d2.config import add_tkd_config
from tkd_d2.data import (
    GC10_DET_CLASSES,
    NEU_DET_CLASSES,
    DatasetFormatError,
    DatasetNotRegisteredError,
    ImageReadError,
    TKDDatasetMapper,
    assert_datasets_registered,
    coco_category_names,
    load_coco_instances,
    load_voc_instances,
    parse_custom_entry,
    register_all,
    register_coco,
    register_from_cfg,
    register_voc,
    write_voc_annotation,
)
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

CLASSES = ("crazing", "inclusion", "scratches")


def _xml(objects, size=(200, 200), depth=1, filename=None, raw_size=None):
    """VOC XML text; objects = [(name, (xmin, ymin, xmax, ymax))] or raw '<object>' strings."""
    parts = ["<annotation>"]
    if filename is not None:
        parts.append(f"<filename>{filename}</filename>")
    if raw_size is not None:
        parts.append(raw_size)
    elif size is not None:
        parts.append(
            f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>{depth}</depth></size>"
        )
    for obj in objects:
        if isinstance(obj, str):
            parts.append(obj)
            continue
        name, (x0, y0, x1, y1) = obj
        parts.append(
            f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin>"
            f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        )
    parts.append("</annotation>")
    return "\n".join(parts)


def _make_voc(root, annotations, image_size=(200, 200), images=None):
    """Write ``root/IMAGES`` (3-channel JPEGs) + ``root/ANNOTATIONS`` from {stem: xml_text}."""
    images_dir, annotations_dir = root / "IMAGES", root / "ANNOTATIONS"
    images_dir.mkdir(parents=True)
    annotations_dir.mkdir(parents=True)
    for stem, text in annotations.items():
        (annotations_dir / f"{stem}.xml").write_text(text)
    for stem in annotations if images is None else images:
        w, h = image_size
        cv2.imwrite(str(images_dir / f"{stem}.jpg"), np.full((h, w, 3), 128, np.uint8))
    return str(images_dir), str(annotations_dir)


@pytest.fixture
def restore_registrations():
    """Tests that re-register builtin names put the defaults back afterwards."""
    yield
    register_all()


# ------------------------------------------------------------------------------ loader
def test_boxes_follow_detectron2_voc_convention_and_class_comes_from_name(tmp_path):
    images_dir, annotations_dir = _make_voc(
        tmp_path,
        {
            # an "inclusion" box in a scratches image: the class is the <name>, not the prefix
            "scratches_2": _xml([("inclusion", (11, 21, 50, 60)), ("scratches", (1, 1, 200, 200))]),
            "crazing_1": _xml([("crazing", (2, 2, 193, 194))]),
        },
    )
    dicts = load_voc_instances(images_dir, annotations_dir, CLASSES)

    assert [os.path.basename(d["file_name"]) for d in dicts] == ["crazing_1.jpg", "scratches_2.jpg"]
    assert [d["image_id"] for d in dicts] == [0, 1]
    scratches = dicts[1]
    assert (scratches["width"], scratches["height"]) == (200, 200)
    assert [a["category_id"] for a in scratches["annotations"]] == [1, 2]
    # xmin/ymin - 1 (1-based inclusive pixels); xmax/ymax unchanged; (1, W) = the whole image
    assert scratches["annotations"][0]["bbox"] == [10.0, 20.0, 50.0, 60.0]
    assert scratches["annotations"][1]["bbox"] == [0.0, 0.0, 200.0, 200.0]
    assert all(a["bbox_mode"] == BoxMode.XYXY_ABS for d in dicts for a in d["annotations"])


def test_split_file_selects_and_orders_images(tmp_path):
    stems = ["a_1", "a_2", "b_1"]
    images_dir, annotations_dir = _make_voc(
        tmp_path, {s: _xml([("crazing", (1, 1, 10, 10))]) for s in stems}
    )
    split = tmp_path / "train.txt"
    split.write_text("b_1\n\n# a comment\na_1.xml\n")
    dicts = load_voc_instances(images_dir, annotations_dir, CLASSES, split_file=str(split))
    assert [os.path.basename(d["file_name"]) for d in dicts] == ["b_1.jpg", "a_1.jpg"]


def test_split_line_without_xml_names_the_line(tmp_path):
    images_dir, annotations_dir = _make_voc(tmp_path, {"a_1": _xml([])})
    split = tmp_path / "test.txt"
    split.write_text("a_1\nghost_7\n")
    with pytest.raises(
        DatasetFormatError, match=r"test\.txt: line 2 names 'ghost_7'.*ghost_7\.xml"
    ):
        load_voc_instances(images_dir, annotations_dir, CLASSES, split_file=str(split))


def test_malformed_xml_names_the_file(tmp_path):
    images_dir, annotations_dir = _make_voc(
        tmp_path, {"ok_1": _xml([]), "broken_1": "<annotation><size>"}
    )
    with pytest.raises(DatasetFormatError, match=r"broken_1\.xml: malformed XML"):
        load_voc_instances(images_dir, annotations_dir, CLASSES)


BOX = "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox>"


@pytest.mark.parametrize(
    "obj, raw_size, message",
    [
        ("<object><name>crazing</name></object>", None, r"has no <bndbox>"),
        (
            "<object><name>crazing</name><bndbox><xmin>1</xmin><ymin>1</ymin><ymax>9</ymax>"
            "</bndbox></object>",
            None,
            r"has no <xmax>",
        ),
        (
            "<object><name>crazing</name><bndbox><xmin>1</xmin><ymin>one</ymin><xmax>9</xmax>"
            "<ymax>9</ymax></bndbox></object>",
            None,
            r"<ymin> is 'one', not a number",
        ),
        (f"<object>{BOX}</object>", None, r"has no <name>"),
        (
            f"<object><name>crazing</name>{BOX}</object>",
            "<size><width>wide</width><height>200</height></size>",
            r"<size> <width> is 'wide', not a number",
        ),
    ],
)
def test_missing_or_non_numeric_fields_name_the_file(tmp_path, obj, raw_size, message):
    images_dir, annotations_dir = _make_voc(tmp_path, {"bad_3": _xml([obj], raw_size=raw_size)})
    with pytest.raises(DatasetFormatError, match=r"bad_3\.xml: .*" + message):
        load_voc_instances(images_dir, annotations_dir, CLASSES)


@pytest.mark.parametrize(
    "raw_size", ["", "<size><width>0</width><height>0</height><depth>1</depth></size>"]
)
def test_absent_or_zero_size_is_read_from_the_image_header(tmp_path, raw_size):
    images_dir, annotations_dir = _make_voc(
        tmp_path, {"nosize_1": _xml([("crazing", (1, 1, 10, 10))], raw_size=raw_size)}, (64, 48)
    )
    (record,) = load_voc_instances(images_dir, annotations_dir, CLASSES)
    assert (record["width"], record["height"]) == (64, 48)


def test_unknown_class_lists_the_known_ones(tmp_path):
    images_dir, annotations_dir = _make_voc(tmp_path, {"x_1": _xml([("dent", (1, 1, 5, 5))])})
    with pytest.raises(
        DatasetFormatError, match=r"x_1\.xml: .*'dent'.*\['crazing', 'inclusion', 'scratches'\]"
    ):
        load_voc_instances(images_dir, annotations_dir, CLASSES)


def test_missing_image_is_named(tmp_path):
    images_dir, annotations_dir = _make_voc(
        tmp_path, {"here_1": _xml([]), "gone_1": _xml([])}, images=["here_1"]
    )
    with pytest.raises(
        DatasetFormatError, match=r"gone_1\.xml: its image .*gone_1\.jpg does not exist"
    ):
        load_voc_instances(images_dir, annotations_dir, CLASSES)


def test_image_found_through_filename_tag_with_or_without_extension(tmp_path):
    images_dir, annotations_dir = _make_voc(
        tmp_path,
        {
            # NEU-DET quirk: some <filename> values lack the extension
            "crazing_12": _xml([], filename="crazing_12"),
            "anno_7": _xml([], filename="photo_7.jpg"),
        },
        images=["crazing_12", "photo_7"],
    )
    dicts = load_voc_instances(images_dir, annotations_dir, CLASSES)
    assert [os.path.basename(d["file_name"]) for d in dicts] == ["photo_7.jpg", "crazing_12.jpg"]


def test_boxes_are_clipped_to_the_image(tmp_path, caplog):
    images_dir, annotations_dir = _make_voc(
        tmp_path,
        {
            "c_1": _xml(
                [("crazing", (-5, 0, 250, 120)), ("scratches", (7, 7, 7, 9))], size=(200, 100)
            )
        },
    )
    with caplog.at_level(logging.WARNING, logger="tkd_d2.data.voc"):
        (record,) = load_voc_instances(images_dir, annotations_dir, CLASSES, bad_box_policy="drop")
    assert [a["bbox"] for a in record["annotations"]] == [
        [0.0, 0.0, 200.0, 100.0],
        [6.0, 6.0, 7.0, 9.0],
    ]
    # the partly outside box is counted in one warning naming it
    (warning,) = [r.getMessage() for r in caplog.records if "outside" in r.getMessage()]
    assert "Clipped 1 box(es)" in warning and "c_1.xml" in warning and "crazing" in warning
    # ... and refused under the error policy, naming the file, the object and the image
    with pytest.raises(DatasetFormatError, match=r"c_1\.xml: <object> #1 \(crazing\).*c_1\.jpg reaches outside the 200x100"):
        load_voc_instances(images_dir, annotations_dir, CLASSES, bad_box_policy="error")


def _degenerate_dataset(tmp_path):
    return _make_voc(
        tmp_path,
        {
            # xmax < xmin (VOC xmin == xmax is a valid 1-pixel-wide box)
            "d_1": _xml([("crazing", (12, 10, 10, 30)), ("inclusion", (1, 1, 20, 20))]),
            "d_2": _xml(
                [("scratches", (300, 10, 320, 30))]
            ),  # outside the image: empty when clipped
        },
    )


def test_bad_box_policy_drop_logs_one_warning_with_the_count(tmp_path, caplog):
    images_dir, annotations_dir = _degenerate_dataset(tmp_path)
    with caplog.at_level(logging.WARNING, logger="tkd_d2.data.voc"):
        dicts = load_voc_instances(images_dir, annotations_dir, CLASSES, bad_box_policy="drop")
    assert [[a["category_id"] for a in d["annotations"]] for d in dicts] == [[1], []]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Dropped 2 box(es)" in warnings[0].getMessage()
    assert "d_1.xml" in warnings[0].getMessage()


def test_bad_box_policy_error_names_the_file(tmp_path):
    images_dir, annotations_dir = _degenerate_dataset(tmp_path)
    with pytest.raises(
        DatasetFormatError, match=r"d_1\.xml: <object> #1 \(crazing\).*zero or negative size"
    ):
        load_voc_instances(images_dir, annotations_dir, CLASSES, bad_box_policy="error")


def test_unknown_bad_box_policy_is_rejected(tmp_path):
    with pytest.raises(DatasetFormatError, match="BAD_BOX_POLICY"):
        load_voc_instances(str(tmp_path), str(tmp_path), CLASSES, bad_box_policy="ignore")


def test_writer_round_trips_through_the_loader(tmp_path):
    images_dir, annotations_dir = _make_voc(tmp_path, {}, images=["w_1"])
    boxes = [("scratches", (0.0, 3.0, 40.0, 17.0)), ("crazing", (5.5, 6.25, 7.5, 199.0))]
    write_voc_annotation(os.path.join(annotations_dir, "w_1.xml"), "w_1.jpg", 200, 200, boxes)
    (record,) = load_voc_instances(images_dir, annotations_dir, CLASSES)
    assert [(CLASSES[a["category_id"]], tuple(a["bbox"])) for a in record["annotations"]] == boxes


# ------------------------------------------------------------------------------ registration
def test_register_voc_is_lazy_and_replaces_an_earlier_registration(tmp_path):
    name = "tkd_test_lazy_voc"
    register_voc(name, str(tmp_path / "no_images"), str(tmp_path / "no_xml"), ["a", "b"])
    assert MetadataCatalog.get(name).thing_classes == ["a", "b"]
    with pytest.raises(DatasetFormatError, match="no_xml"):
        DatasetCatalog.get(name)

    images_dir, annotations_dir = _make_voc(
        tmp_path / "real", {"x_1": _xml([("crazing", (1, 1, 5, 5))])}
    )
    register_voc(name, images_dir, annotations_dir, CLASSES)
    assert MetadataCatalog.get(name).thing_classes == list(CLASSES)
    assert MetadataCatalog.get(name).evaluator_type == "coco"
    assert len(DatasetCatalog.get(name)) == 1
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_gc10_det_loader_on_a_tiny_voc_layout(tmp_path, restore_registrations):
    gc10 = tmp_path / "GC10-DET"
    _make_voc(
        gc10,
        {
            "img_01_1": _xml(
                [("1_chongkong", (10, 10, 40, 40)), ("10_yaozhe", (1, 1, 2048, 100))], (2048, 1000)
            ),
            "img_02_2": _xml([("6_siban", (100, 200, 300, 400))], (2048, 1000)),
        },
        image_size=(2048, 1000),
    )
    (gc10 / "ImageSets").mkdir()
    (gc10 / "ImageSets" / "train.txt").write_text("img_01_1\n")
    (gc10 / "ImageSets" / "test.txt").write_text("img_02_2\n")
    register_all(str(tmp_path))

    train, test = DatasetCatalog.get("gc10_det_train"), DatasetCatalog.get("gc10_det_test")
    assert MetadataCatalog.get("gc10_det_train").thing_classes == list(GC10_DET_CLASSES)
    assert len(GC10_DET_CLASSES) == 10
    assert [a["category_id"] for a in train[0]["annotations"]] == [0, 9]
    assert train[0]["annotations"][1]["bbox"] == [0.0, 0.0, 2048.0, 100.0]
    assert [a["category_id"] for a in test[0]["annotations"]] == [5]


def test_builtin_dataset_with_missing_folder_says_where_to_put_it(tmp_path, restore_registrations):
    register_all(str(tmp_path))
    with pytest.raises(DatasetFormatError, match=r"'neu_det_train'.*NEU-DET.*DETECTRON2_DATASETS"):
        DatasetCatalog.get("neu_det_train")


def _cfg(**datasets):
    cfg = get_cfg()
    add_tkd_config(cfg)
    for key, value in datasets.items():
        node, attr = cfg.DATASETS, key
        if "." in key:
            sub, attr = key.split(".")
            node = getattr(cfg.DATASETS, sub)
        setattr(node, attr, value)
    return cfg


def _coco_fixture(tmp_path):
    images = tmp_path / "coco_images"
    images.mkdir()
    for i in (1, 2):
        cv2.imwrite(str(images / f"im{i}.jpg"), np.zeros((50, 60, 3), np.uint8))
    coco = {
        "images": [
            {"id": 1, "file_name": "im1.jpg", "width": 60, "height": 50},
            {"id": 2, "file_name": "im2.jpg", "width": 60, "height": 50},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "bbox": [5, 5, 10, 20],
                "category_id": 3,
                "iscrowd": 0,
                "area": 200,
            },
            {
                "id": 2,
                "image_id": 2,
                "bbox": [50, 40, 30, 30],
                "category_id": 7,
                "iscrowd": 0,
                "area": 900,
            },
            {
                "id": 3,
                "image_id": 2,
                "bbox": [70, 10, 5, 5],
                "category_id": 3,
                "iscrowd": 0,
                "area": 25,
            },
        ],
        "categories": [{"id": 3, "name": "dent"}, {"id": 7, "name": "rust"}],
    }
    json_file = tmp_path / "coco.json"
    json_file.write_text(json.dumps(coco))
    return str(images), str(json_file)


def test_custom_entries_from_cfg_register_voc_and_coco(tmp_path, restore_registrations, caplog):
    voc_images, voc_annotations = _make_voc(
        tmp_path / "voc",
        {"p_1": _xml([("dent", (1, 1, 30, 30))]), "p_2": _xml([("rust", (5, 5, 9, 9))])},
    )
    split = tmp_path / "voc" / "val.txt"
    split.write_text("p_2\n")
    coco_images, coco_json = _coco_fixture(tmp_path)
    cfg = _cfg(
        **{
            "CUSTOM.ENTRIES": [
                f"my_voc:voc:{voc_images}:{voc_annotations}",
                f"my_voc_val:voc:{voc_images}:{voc_annotations}:{split}",
                f"my_coco:coco:{coco_images}:{coco_json}",
            ],
            "CUSTOM.CLASSES": ["dent", "rust"],
        }
    )
    assert register_from_cfg(cfg, root=str(tmp_path)) == ["my_voc", "my_voc_val", "my_coco"]
    assert_datasets_registered(["my_voc", "my_voc_val", "my_coco"])

    assert [len(d["annotations"]) for d in DatasetCatalog.get("my_voc")] == [1, 1]
    assert [os.path.basename(d["file_name"]) for d in DatasetCatalog.get("my_voc_val")] == [
        "p_2.jpg"
    ]
    assert MetadataCatalog.get("my_voc").thing_classes == ["dent", "rust"]

    with caplog.at_level(logging.WARNING, logger="tkd_d2.data.coco"):
        coco = DatasetCatalog.get("my_coco")
    meta = MetadataCatalog.get("my_coco")
    assert (meta.evaluator_type, meta.json_file, meta.thing_classes) == (
        "coco",
        coco_json,
        ["dent", "rust"],
    )
    # XYWH → XYXY, clipped to the 60x50 image; the box fully outside is dropped and counted
    assert coco[0]["annotations"][0]["bbox"] == [5.0, 5.0, 15.0, 25.0]
    assert [(a["bbox"], a["category_id"]) for a in coco[1]["annotations"]] == [
        ([50.0, 40.0, 60.0, 50.0], 1)
    ]
    assert any("Dropped 1 box(es)" in r.getMessage() for r in caplog.records)
    # the partly outside box is clipped and counted, once, naming annotation and image
    assert [r.getMessage() for r in caplog.records if "Clipped" in r.getMessage()] == [
        f"Clipped 1 box(es) reaching outside their image in {coco_json} (e.g. annotation 2 of "
        f"image {coco_images}/im2.jpg (60x50): box [50.0, 40.0, 30.0, 30.0])."
    ]

    cfg.DATASETS.BAD_BOX_POLICY = "error"
    register_from_cfg(cfg, root=str(tmp_path))
    with pytest.raises(DatasetFormatError, match=r"coco\.json: annotation 2 of image .*im2\.jpg .* reaches outside the image"):
        DatasetCatalog.get("my_coco")
    for name in ("my_voc", "my_voc_val", "my_coco"):
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


@pytest.mark.parametrize(
    "entry",
    [
        "lonely",
        "x:xml:imgs:ann",
        "x:coco:imgs",
        "x:voc:imgs:ann:split:extra",
        "x:voc::ann",
        ":coco:imgs:a.json",
    ],
)
def test_malformed_custom_entry_is_named(tmp_path, entry, restore_registrations):
    cfg = _cfg(**{"CUSTOM.ENTRIES": [entry], "CUSTOM.CLASSES": ["a"]})
    with pytest.raises(
        DatasetFormatError, match="ENTRIES item '" + entry.replace(".", r"\.") + "'"
    ):
        register_from_cfg(cfg, root=str(tmp_path))


def test_voc_entry_without_classes_and_duplicate_names_are_errors(tmp_path, restore_registrations):
    cfg = _cfg(**{"CUSTOM.ENTRIES": ["v:voc:imgs:ann"]})
    with pytest.raises(
        DatasetFormatError, match=r"'v' is a VOC dataset but DATASETS\.CUSTOM\.CLASSES is empty"
    ):
        register_from_cfg(cfg, root=str(tmp_path))
    cfg = _cfg(**{"CUSTOM.ENTRIES": ["d:coco:i:a.json", "d:coco:j:b.json"]})
    with pytest.raises(DatasetFormatError, match=r"names \['d'\] more than once"):
        register_from_cfg(cfg, root=str(tmp_path))


def test_entry_paths_may_carry_windows_drive_letters():
    entry = parse_custom_entry(r"d:voc:C:\data\imgs:D:/data/xml:split.txt")
    assert (entry["name"], entry["images_dir"], entry["annotations"], entry["split_file"]) == (
        "d",
        r"C:\data\imgs",
        "D:/data/xml",
        "split.txt",
    )


def test_cfg_sets_synthetic_sizes_and_seed(tmp_path, restore_registrations):
    cfg = _cfg(
        **{
            "SYNTHETIC.NUM_TRAIN": 7,
            "SYNTHETIC.NUM_TEST": 3,
            "SYNTHETIC.IMAGE_SIZE": 64,
            "SYNTHETIC.SEED": 5,
        }
    )
    register_from_cfg(cfg, root=str(tmp_path))
    assert not (tmp_path / "synthetic_defects").exists()  # lazy
    train, test = DatasetCatalog.get("synthetic_defects_train"), DatasetCatalog.get(
        "synthetic_defects_test"
    )
    assert (len(train), len(test)) == (7, 3)
    assert {(d["width"], d["height"]) for d in train + test} == {(64, 64)}
    assert MetadataCatalog.get("synthetic_defects_train").synthetic_params["seed"] == 5
    assert MetadataCatalog.get("synthetic_defects_test").thing_classes == list(NEU_DET_CLASSES)


def test_unregistered_dataset_error_lists_the_registered_ones():
    assert_datasets_registered(("neu_det_train", "synthetic_defects_test"))
    with pytest.raises(DatasetNotRegisteredError) as info:
        assert_datasets_registered(("neu_det_train", "steel_2099_train"))
    assert isinstance(info.value, KeyError)
    message = str(info.value)
    assert "'steel_2099_train'" in message and "neu_det_train" in message
    assert "DATASETS.CUSTOM.ENTRIES" in message and "register_voc" in message


# ------------------------------------------------------------------------------ error paths
def _one_line_error(call, pattern):
    """``call()`` raises a DatasetFormatError matching ``pattern``, on one line."""
    with pytest.raises(DatasetFormatError, match=pattern) as info:
        call()
    assert "\n" not in str(info.value), str(info.value)
    return str(info.value)


def test_missing_coco_json_names_the_file_and_dataset(tmp_path, restore_registrations):
    images, _ = _coco_fixture(tmp_path)
    missing = str(tmp_path / "gone.json")
    _one_line_error(lambda: load_coco_instances(missing, images), r"gone\.json does not exist")
    # as a training meets it: a config entry, loaded on first use
    register_from_cfg(_cfg(**{"CUSTOM.ENTRIES": [f"mine:coco:{images}:{missing}"]}), root=str(tmp_path))
    _one_line_error(lambda: DatasetCatalog.get("mine"), r"gone\.json does not exist \(dataset 'mine'\)")


def test_missing_coco_image_folder_names_the_folder_and_json(tmp_path):
    _, json_file = _coco_fixture(tmp_path)
    _one_line_error(lambda: load_coco_instances(json_file, str(tmp_path / "no_images")),
                    r"image folder .*no_images of .*coco\.json does not exist")


def test_malformed_coco_json_names_the_file(tmp_path):
    images, json_file = _coco_fixture(tmp_path)
    text = open(json_file).read()
    with open(json_file, "w") as f:
        f.write(text[: len(text) // 2])  # a file cut short, as by an interrupted copy
    _one_line_error(lambda: load_coco_instances(json_file, images),
                    r"coco\.json: not a valid COCO detection file \(JSONDecodeError")
    _one_line_error(lambda: coco_category_names(json_file),
                    r"coco\.json: cannot read its 'categories'.*JSONDecodeError")


@pytest.mark.parametrize("with_annotations", [True, False])
def test_coco_json_with_empty_categories_names_the_key(tmp_path, with_annotations):
    images, json_file = _coco_fixture(tmp_path)
    data = json.loads(open(json_file).read())
    data["categories"] = []
    if not with_annotations:
        data["annotations"] = []
    with open(json_file, "w") as f:
        json.dump(data, f)
    name = f"tkd_test_no_categories_{with_annotations}"
    register_coco(name, json_file, images)
    try:
        for call in (lambda: DatasetCatalog.get(name), lambda: coco_category_names(json_file)):
            _one_line_error(call, r"coco\.json: 'categories' is empty")
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


@pytest.mark.parametrize("classes, pattern", [
    ([], r"the class list \(DATASETS\.CUSTOM\.CLASSES .*\) is empty"),
    (["crazing", "inclusion", "crazing"], r"class names \['crazing'\] are listed more than once"),
])
def test_empty_or_duplicated_voc_class_list_is_refused(tmp_path, classes, pattern, restore_registrations):
    images_dir, annotations_dir = _make_voc(tmp_path, {"x_1": _xml([("crazing", (1, 1, 5, 5))])})
    _one_line_error(lambda: register_voc("tkd_test_classes", images_dir, annotations_dir, classes),
                    "dataset 'tkd_test_classes': " + pattern)
    # the loader alone too: a duplicate would otherwise map every 'crazing' to its last id
    _one_line_error(lambda: load_voc_instances(images_dir, annotations_dir, classes),
                    r"annotations folder .*ANNOTATIONS: " + pattern)
    if classes:  # from the config (an empty CLASSES has its own message there)
        cfg = _cfg(**{"CUSTOM.ENTRIES": [f"v:voc:{images_dir}:{annotations_dir}"], "CUSTOM.CLASSES": classes})
        _one_line_error(lambda: register_from_cfg(cfg, root=str(tmp_path)), "dataset 'v': " + pattern)


def test_empty_split_file_names_the_file(tmp_path):
    images_dir, annotations_dir = _make_voc(tmp_path, {"a_1": _xml([("crazing", (1, 1, 5, 5))])})
    split = tmp_path / "val.txt"
    split.write_text("\n# no images yet\n   \n")
    _one_line_error(lambda: load_voc_instances(images_dir, annotations_dir, CLASSES, split_file=str(split)),
                    r"split file .*val\.txt lists no images")


# ------------------------------------------------------------------------------ mapper
def test_mapper_names_an_unreadable_image(tmp_path):
    mapper = TKDDatasetMapper(is_train=True, augmentations=[], image_format="BGR")
    good = tmp_path / "good.jpg"
    cv2.imwrite(str(good), np.full((40, 50), 90, np.uint8))  # grayscale file, BGR requested
    record = {
        "file_name": str(good),
        "width": 50,
        "height": 40,
        "annotations": [
            {"bbox": [1.0, 2.0, 20.0, 30.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}
        ],
    }
    out = mapper(record)
    assert tuple(out["image"].shape) == (3, 40, 50)
    assert out["instances"].gt_boxes.tensor.tolist() == [[1.0, 2.0, 20.0, 30.0]]

    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:120])
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("hello")
    for path in (truncated, not_an_image, tmp_path / "missing.jpg"):
        with pytest.raises(ImageReadError, match="could not read image .*" + path.name):
            mapper(dict(record, file_name=str(path)))


# ------------------------------------------------------------------------------ real NEU-DET
def test_real_neu_det_split_classes_and_quirks(neu_det_root, restore_registrations, caplog):
    register_all(neu_det_root)
    with caplog.at_level(logging.WARNING, logger="tkd_d2.data.voc"):
        train, test = DatasetCatalog.get("neu_det_train"), DatasetCatalog.get("neu_det_test")

    assert (len(train), len(test)) == (1440, 360)
    assert not caplog.records  # no box dropped
    assert MetadataCatalog.get("neu_det_test").thing_classes == list(NEU_DET_CLASSES)
    counts = collections.Counter(
        NEU_DET_CLASSES[a["category_id"]] for d in train + test for a in d["annotations"]
    )
    assert counts == {  # README: 4,189 boxes
        "crazing": 689,
        "inclusion": 1011,
        "patches": 881,
        "pitted_surface": 432,
        "rolled-in_scale": 628,
        "scratches": 548,
    }
    # README: 188 boxes carry a class other than the file-name prefix
    foreign = sum(
        NEU_DET_CLASSES[a["category_id"]] != os.path.basename(d["file_name"]).rsplit("_", 1)[0]
        for d in train + test
        for a in d["annotations"]
    )
    assert foreign == 188
    # <depth> 1 in the XML is not trusted: width/height from <size>, boxes inside the image
    assert {(d["width"], d["height"]) for d in train + test} == {(200, 200)}
    boxes = np.array([a["bbox"] for d in train + test for a in d["annotations"]])
    assert boxes.min() >= 0 and boxes.max() <= 200
    assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()
    # byte-identical duplicates are both kept (both in train)
    names = {os.path.basename(d["file_name"]) for d in train}
    assert {"patches_101.jpg", "patches_105.jpg"} <= names
    assert not names & {os.path.basename(d["file_name"]) for d in test}

"""tools/visualize.py and the drawing functions it shares with the pipeline."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import tkd_d2  # noqa: F401  (detectron2 compatibility, before detectron2 is imported)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

import visualize  # noqa: E402  (tools/visualize.py)

STUDENT_CONFIG = str(REPO / "configs" / "Synthetic" / "retinanet_R_18_FPN.yaml")
TKD_CONFIG = str(REPO / "configs" / "Synthetic" / "tkd_retinanet_R_50_to_R_18.yaml")
SMALL = ["INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "160",
         "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0", "MODEL.RETINANET.TOPK_CANDIDATES_TEST", "20",
         "TEST.DETECTIONS_PER_IMAGE", "5"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_image(path, seed, size=(96, 128)):
    import cv2

    rng = np.random.default_rng(seed)
    image = rng.integers(90, 160, size=(*size, 3), dtype=np.uint8)
    cv2.circle(image, (40, 40), 12, (30, 30, 30), -1)
    assert cv2.imwrite(str(path), image)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """An untrained R-18 RetinaNet checkpoint in the format training writes."""
    import torch
    from detectron2.modeling import build_model

    from tkd_d2.config import load_config

    torch.manual_seed(0)
    model = build_model(load_config(STUDENT_CONFIG, SMALL, device="cpu"))
    path = tmp_path_factory.mktemp("weights") / "model_final.pth"
    torch.save({"model": model.state_dict(), "thing_classes": ["a", "b", "c", "d", "e", "f"]}, path)
    return path


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    write_image(folder / "one.jpg", 0)
    write_image(folder / "two.png", 1)
    (folder / "notes.txt").write_text("not an image")
    return folder


def run(*argv):
    return visualize.main([str(a) for a in argv])


def exit_message(excinfo):
    return str(excinfo.value.code)


def test_draws_every_image_of_a_folder(images, weights, tmp_path, capsys):
    import cv2

    out = tmp_path / "out"
    assert run("--config-file", STUDENT_CONFIG, "--weights", weights, "--input", images,
               "--output", out, "--score-thresh", "0.0", *SMALL) == 0
    assert sorted(p.name for p in out.iterdir()) == ["one.png", "two.png"]
    for p in out.iterdir():
        assert p.read_bytes()[:8] == PNG_SIGNATURE
        picture = cv2.imread(str(p))
        # drawn larger than the 96x128 input so that labels stay readable
        assert picture is not None and picture.shape[0] >= 400 and picture.shape[1] > picture.shape[0]
    printed = capsys.readouterr().out
    assert "one.jpg: 5 detection(s)" in printed  # DETECTIONS_PER_IMAGE 5, threshold 0


def test_accepts_files_and_a_tkd_config(images, weights, tmp_path):
    out = tmp_path / "out"
    assert run("--config-file", TKD_CONFIG, "--weights", weights, "--output", out,
               "--dataset", "synthetic_defects_test", "--input", images / "one.jpg", *SMALL) == 0
    assert [p.name for p in out.iterdir()] == ["one.png"]


def test_empty_folder_is_an_error(weights, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(SystemExit) as excinfo:
        run("--config-file", STUDENT_CONFIG, "--weights", weights, "--input", empty,
            "--output", tmp_path / "out")
    assert "holds no images" in exit_message(excinfo) and str(empty) in exit_message(excinfo)
    assert not (tmp_path / "out").exists()


def test_missing_input_is_an_error(weights, tmp_path):
    with pytest.raises(SystemExit) as excinfo:
        run("--config-file", STUDENT_CONFIG, "--weights", weights, "--input",
            tmp_path / "nowhere.jpg", "--output", tmp_path / "out")
    assert "does not exist" in exit_message(excinfo)


def test_unreadable_image_is_an_error(images, weights, tmp_path):
    broken = images / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(SystemExit) as excinfo:
        run("--config-file", STUDENT_CONFIG, "--weights", weights, "--input", broken,
            "--output", tmp_path / "out", *SMALL)
    assert "could not read image" in exit_message(excinfo) and "broken.jpg" in exit_message(excinfo)


def test_weights_that_do_not_fit_are_an_error(images, weights, tmp_path):
    import torch

    checkpoint = torch.load(weights, weights_only=True)
    checkpoint["model"] = {k: v for k, v in checkpoint["model"].items() if "head" not in k}
    partial = tmp_path / "partial.pth"
    torch.save(checkpoint, partial)
    with pytest.raises(SystemExit) as excinfo:
        run("--config-file", STUDENT_CONFIG, "--weights", partial, "--input", images,
            "--output", tmp_path / "out", *SMALL)
    assert "do not fit" in exit_message(excinfo)
    with pytest.raises(SystemExit) as excinfo:
        run("--config-file", STUDENT_CONFIG, "--weights", tmp_path / "none.pth", "--input",
            images, "--output", tmp_path / "out", *SMALL)
    assert "weights file not found" in exit_message(excinfo)


def test_unknown_dataset_is_an_error(images, weights, tmp_path):
    with pytest.raises(SystemExit) as excinfo:
        run("--config-file", STUDENT_CONFIG, "--weights", weights, "--input", images,
            "--output", tmp_path / "out", "--dataset", "no_such_dataset", *SMALL)
    assert "no_such_dataset" in exit_message(excinfo)


# ------------------------------------------------------------------------------ shared drawing
def test_draw_predictions_filters_by_score_and_labels_classes():
    import torch
    from detectron2.structures import Boxes, Instances

    from tkd_d2.visualization import class_metadata, draw_predictions

    image = np.full((100, 100, 3), 128, np.uint8)
    instances = Instances((100, 100))
    instances.pred_boxes = Boxes(torch.tensor([[10.0, 10.0, 60.0, 60.0]]))
    instances.scores = torch.tensor([0.5])
    instances.pred_classes = torch.tensor([1])
    metadata = class_metadata(["crazing", "patches"])
    blank = draw_predictions(image, instances, metadata, score_thresh=0.9, scale=1.0)
    drawn = draw_predictions(image, instances, metadata, score_thresh=0.3, scale=1.0)
    assert blank.shape == drawn.shape == image.shape
    assert np.array_equal(blank, image)  # below the threshold: nothing drawn
    assert not np.array_equal(drawn, image)
    # an outline: the left edge is drawn, the inside of the box is not
    assert not np.array_equal(drawn[35, 9:12], image[35, 9:12])
    assert np.array_equal(drawn[35, 35], image[35, 35])


def test_side_by_side_titles_and_aligns_panels():
    from tkd_d2.visualization import side_by_side

    a = np.zeros((100, 80, 3), np.uint8)
    b = np.zeros((50, 40, 3), np.uint8)  # resized to the tallest panel's height
    row = side_by_side([("ground truth", a), ("teacher", b)], gap=8)
    assert row.shape[0] > 100 and row.shape[1] == 80 + 8 + 80
    assert (row[:10] == 255).mean() > 0.5  # white title bar on top


def test_list_images_sorts_and_checks(images, tmp_path):
    from tkd_d2.visualization import VisualizationError, list_images

    assert [os.path.basename(p) for p in list_images(images)] == ["one.jpg", "two.png"]
    with pytest.raises(VisualizationError, match="not an image file"):
        list_images([images / "notes.txt"])

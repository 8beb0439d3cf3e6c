"""The synthetic defect generator: determinism, exact boxes, every class, caching."""
import collections
import json
import os

import numpy as np
import pytest

import tkd_d2  # noqa: F401  (compat shims before detectron2.data)
from tkd_d2.data import DatasetFormatError, SYNTHETIC_CLASSES, generate_synthetic_defects
from tkd_d2.data import synthetic
from tkd_d2.data.synthetic import register_synthetic_defects, render_defect_image, steel_texture
from detectron2.data import DatasetCatalog, MetadataCatalog

SIZE = 96


def _files(out_dir):
    """{relative path: bytes} of every file in a generated folder."""
    found = {}
    for folder, _, names in os.walk(out_dir):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, out_dir)] = f.read()
    return found


def test_same_seed_gives_byte_identical_files_and_other_seeds_or_splits_differ(tmp_path):
    first = generate_synthetic_defects(tmp_path / "a", 8, SIZE, seed=3)
    second = generate_synthetic_defects(tmp_path / "b", 8, SIZE, seed=3)
    files_a, files_b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(files_a) == 2 * 8 + 1 and files_a == files_b
    assert [d["annotations"] for d in first] == [d["annotations"] for d in second]

    generate_synthetic_defects(tmp_path / "c", 8, SIZE, seed=4)
    other_seed = _files(tmp_path / "c")
    images = [k for k in files_a if k.endswith(".jpg")]
    assert len(images) == 8 and all(files_a[k] != other_seed[k] for k in images)
    other_split = generate_synthetic_defects(tmp_path / "d", 8, SIZE, seed=3, split="test")
    with open(first[0]["file_name"], "rb") as f, open(other_split[0]["file_name"], "rb") as g:
        assert f.read() != g.read()


def test_boxes_are_inside_non_degenerate_and_every_class_appears(tmp_path):
    dicts = generate_synthetic_defects(tmp_path / "s", 12, SIZE, seed=0)
    assert len(dicts) == 12
    per_image = [len(d["annotations"]) for d in dicts]
    assert min(per_image) >= 1 and max(per_image) <= 4
    boxes = np.array([a["bbox"] for d in dicts for a in d["annotations"]])
    assert boxes.min() >= 0 and boxes.max() <= SIZE
    assert (boxes[:, 2] - boxes[:, 0] >= 2).all() and (boxes[:, 3] - boxes[:, 1] >= 2).all()
    classes = collections.Counter(a["category_id"] for d in dicts for a in d["annotations"])
    assert set(classes) == set(range(len(SYNTHETIC_CLASSES)))


@pytest.mark.parametrize("seed", range(6))
def test_boxes_are_tight_around_what_was_drawn(seed):
    image, objects = render_defect_image(np.random.default_rng(seed), SIZE, first_kind=seed)
    background = np.clip(np.rint(steel_texture(np.random.default_rng(seed), SIZE)), 0, 255)
    change = np.abs(image.astype(np.float64) - background)
    inside = np.zeros(change.shape, bool)
    for _, (x0, y0, x1, y1) in objects:
        x0, y0, x1, y1 = int(x0), int(y0), int(x1), int(y1)
        inside[y0:y1, x0:x1] = True
        crop = change[y0:y1, x0:x1] > 2
        # each edge of the box touches a changed pixel: no empty margin
        assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()
    # everything clearly drawn (above the box threshold: 15 % of the largest amplitude) is boxed
    assert not (change[~inside] > 14).any()
    assert objects[0][0] == SYNTHETIC_CLASSES[seed]


def test_complete_output_is_reused_without_regenerating(tmp_path, monkeypatch):
    out = tmp_path / "cache"
    fresh = generate_synthetic_defects(out, 6, SIZE, seed=1)
    assert json.loads((out / "DONE").read_text())["num_images"] == 6

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a complete dataset")

    monkeypatch.setattr(synthetic, "_write_dataset", fail)
    assert generate_synthetic_defects(out, 6, SIZE, seed=1) == fresh


def test_other_parameters_in_the_same_folder_regenerate(tmp_path):
    out = tmp_path / "cache"
    generate_synthetic_defects(out, 6, SIZE, seed=1)
    again = generate_synthetic_defects(out, 4, SIZE, seed=2)
    assert len(again) == 4 and len(os.listdir(out / "IMAGES")) == 4
    assert json.loads((out / "DONE").read_text())["seed"] == 2


def test_interrupted_generation_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    out = tmp_path / "cache"
    calls = {"n": 0}
    real_render = synthetic.render_defect_image

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_render(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render_defect_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_defects(out, 6, SIZE, seed=1)
    assert os.listdir(tmp_path) == []  # no half-written folder, no temporary left behind

    monkeypatch.setattr(synthetic, "render_defect_image", real_render)
    assert len(generate_synthetic_defects(out, 6, SIZE, seed=1)) == 6
    assert (out / "DONE").is_file()


def test_partial_folder_without_marker_is_regenerated(tmp_path):
    generate_synthetic_defects(tmp_path / "ref", 6, SIZE)
    reference = _files(tmp_path / "ref")
    out = tmp_path / "cache"
    (out / "IMAGES").mkdir(parents=True)
    (out / "IMAGES" / "synthetic_train_000000.jpg").write_bytes(b"half a jpeg")
    assert len(generate_synthetic_defects(out, 6, SIZE)) == 6
    assert _files(out) == reference


def test_a_folder_with_other_files_is_never_deleted(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetFormatError, match="not a synthetic dataset folder"):
        generate_synthetic_defects(out, 2, SIZE)
    assert (out / "notes.txt").read_text() == "keep me"


def test_registration_is_lazy_and_generates_on_first_get(tmp_path):
    name = "tkd_test_synthetic"
    register_synthetic_defects(name, str(tmp_path), "test", 5, image_size=64, seed=9)
    assert os.listdir(tmp_path) == []
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == 5 and os.path.isfile(
        os.path.join(MetadataCatalog.get(name).dirname, "DONE")
    )
    assert MetadataCatalog.get(name).thing_classes == list(SYNTHETIC_CLASSES)
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_large_image_mode_places_small_defects_on_a_large_surface(tmp_path):
    """DATASETS.SYNTHETIC.DEFECT_SIZE: defects drawn on a small canvas, anywhere on a large image."""
    from tkd_d2.data.synthetic import generate_synthetic_defects, synthetic_cache_dir

    dicts = generate_synthetic_defects(str(tmp_path / "large"), 3, image_size=640, seed=1, defect_size=64)
    boxes = [a["bbox"] for d in dicts for a in d["annotations"]]
    assert all(d["height"] == d["width"] == 640 for d in dicts)
    assert all(len(d["annotations"]) >= 2 for d in dicts)
    assert all(0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 640 and x2 - x1 <= 64 and y2 - y1 <= 64
               for x1, y1, x2, y2 in boxes)
    # spread over the surface, not in one corner
    centres = np.array([[(x1 + x2) / 2, (y1 + y2) / 2] for x1, y1, x2, y2 in boxes])
    assert centres.max() > 320 and centres.min() < 320
    assert synthetic_cache_dir("r", "train", 3, 640, 1, 64) != synthetic_cache_dir("r", "train", 3, 640, 1)
    with pytest.raises(ValueError, match="DATASETS.SYNTHETIC.DEFECT_SIZE"):
        generate_synthetic_defects(str(tmp_path / "bad"), 1, image_size=200, defect_size=200)

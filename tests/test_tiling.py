"""Tiled inference: windows cover the image with the overlap asked, a defect cut at a tile
seam comes back as one whole box, one tile equals untiled, bad values name their key."""
import numpy as np
import pytest
import torch
from torch import nn

import tkd_d2  # noqa: F401  (adapts detectron2 first)
from detectron2.structures import Boxes, Instances
from tkd_d2.config import load_config
from tkd_d2.errors import ConfigError
from tkd_d2.modeling.tiled import TiledDetector, tiled
from tkd_d2.tiling import merge_tiled, seam_cut, tile_windows


@pytest.mark.parametrize("height, width, size, overlap", [(1000, 2048, 512, 64), (300, 300, 128, 32),
                                                          (100, 700, 256, 0), (512, 512, 512, 64)])
def test_windows_cover_the_image_with_the_overlap_flush_with_its_edges(height, width, size, overlap):
    windows = tile_windows(height, width, size, overlap)
    covered = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in windows:
        assert x1 - x0 == min(size, width) and y1 - y0 == min(size, height)
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    for axis in (0, 1):  # consecutive starts overlap by at least ``overlap`` (1 px rounding)
        starts = np.unique(windows[:, axis])
        if len(starts) > 1:
            assert (size - np.diff(starts)).min() >= overlap - 1
            assert starts[-1] + size == (width if axis == 0 else height)


def test_merge_drops_a_seam_fragment_and_a_duplicate_but_not_one_tiles_own_boxes():
    boxes = np.array([[100, 100, 160, 140],   # whole, tile 0
                      [128, 100, 160, 140],   # its fragment, cut at tile 1's seam
                      [101, 100, 160, 141],   # its duplicate, tile 2
                      [100, 100, 150, 140],   # tile 0's own second box: the model's NMS kept it
                      [100, 100, 160, 140]],  # another class
                     dtype=np.float32)
    scores = np.array([0.9, 0.95, 0.8, 0.7, 0.6], np.float32)
    classes = np.array([0, 0, 0, 0, 1])
    tiles = np.array([0, 1, 2, 0, 0])
    cut = np.array([False, True, False, False, False])
    out_boxes, out_scores, out_classes = merge_tiled(boxes, scores, classes, tiles, cut=cut)
    # the fragment goes though it scores highest; the whole box keeps its own extent
    assert out_boxes.tolist() == [[100, 100, 160, 140], [100, 100, 150, 140], [100, 100, 160, 140]]
    assert out_scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert out_classes.tolist() == [0, 0, 1]


def test_a_cut_box_takes_the_whole_views_extent_and_does_not_widen_it():
    windows = np.array([[0, 0, 128, 256], [64, 0, 256, 256]], np.float32)
    boxes = np.array([[90, 100, 128, 140],    # cut at tile 0's right seam; sticks out left of the defect
                      [100, 100, 150, 140]],  # the defect whole, tile 1, lower score
                     np.float32)
    cut = seam_cut(boxes, windows[[0, 1]], height=256, width=256)
    assert cut.tolist() == [True, False]
    out_boxes, out_scores, _ = merge_tiled(boxes, np.array([0.9, 0.8], np.float32), np.zeros(2, int),
                                           np.array([0, 1]), containment_thresh=0.9, cut=cut, windows=windows)
    # the cut box matches the whole one where both tiles see (64-128 px): one box, the whole extent
    assert out_boxes.tolist() == [[100, 100, 150, 140]]
    assert out_scores.tolist() == pytest.approx([0.9])


def test_two_halves_of_a_defect_larger_than_the_overlap_join_into_one_box():
    windows = np.array([[0, 0, 200, 256], [150, 0, 350, 256]], np.float32)
    boxes = np.array([[100, 100, 200, 140],   # cut at tile 0's right seam
                      [150, 100, 260, 140],   # cut at tile 1's left seam
                      [300, 10, 330, 30]],    # another defect of the class, whole in tile 1
                     np.float32)
    tiles = np.array([0, 1, 1])
    cut = seam_cut(boxes, windows[tiles], height=256, width=350)
    assert cut.tolist() == [True, True, False]
    # IoU over the whole boxes is 0.31; inside the 150-200 px both tiles see, 1.0
    out_boxes, _, _ = merge_tiled(boxes, np.array([0.8, 0.7, 0.6], np.float32), np.zeros(3, int), tiles,
                                  cut=cut, windows=windows)
    assert out_boxes.tolist() == [[100, 100, 260, 140], [300, 10, 330, 30]]
    alone, _, _ = merge_tiled(boxes, np.array([0.8, 0.7, 0.6], np.float32), np.zeros(3, int), tiles, cut=cut)
    assert len(alone) == 3  # without the windows they would stay two fragments


def test_merge_never_enlarges_a_whole_box_nor_drops_an_uncut_box_inside_another():
    boxes = np.array([[100, 100, 120, 120],   # a small defect, whole, tile 0
                      [90, 90, 200, 200],     # a larger box around it from tile 1, lower score
                      [99, 100, 121, 121],    # the small defect's duplicate from tile 1
                      [150, 150, 180, 180],   # a whole box, tile 0
                      [150, 150, 170, 180]],  # its fragment cut at tile 1's seam, lower score
                     dtype=np.float32)
    scores = np.array([0.9, 0.3, 0.5, 0.8, 0.6], np.float32)
    tiles = np.array([0, 1, 1, 0, 1])
    cut = np.array([False, False, False, False, True])
    out_boxes, out_scores, _ = merge_tiled(boxes, scores, np.zeros(5, int), tiles, cut=cut)
    # the duplicate and the fragment go; the whole boxes keep their own extent
    assert out_boxes.tolist() == [[100, 100, 120, 120], [150, 150, 180, 180], [90, 90, 200, 200]]
    assert out_scores.tolist() == pytest.approx([0.9, 0.8, 0.3])


def test_a_box_is_cut_when_it_touches_an_inner_edge_of_its_tile_not_the_images():
    windows = np.array([[0, 0, 128, 128]] * 3 + [[96, 0, 224, 128]] * 2, np.float32)
    boxes = np.array([[0, 0, 40, 40],        # at the image's own corner: whole
                      [90, 10, 127, 40],     # ends at the tile's right edge, an inner seam: cut
                      [10, 10, 60, 60],      # well inside
                      [97, 10, 130, 40],     # starts at the second tile's left seam: cut
                      [180, 10, 224, 128]],  # at the image's right and bottom edges: whole
                     np.float32)
    assert seam_cut(boxes, windows, height=128, width=224).tolist() == [False, True, False, True, False]


class WhiteSquareFinder(nn.Module):
    """A stand-in detector: one class-0 box around the bright pixels of each input, if any."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, batched_inputs):
        self.calls.append(len(batched_inputs))
        out = []
        for x in batched_inputs:
            image = x["image"]
            ys, xs = torch.nonzero(image[0] > 127, as_tuple=True)
            h, w = image.shape[-2:]
            boxes = torch.zeros((0, 4)) if len(xs) == 0 else torch.tensor(
                [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)
            inst = Instances((h, w), pred_boxes=Boxes(boxes), scores=torch.full((len(boxes),), 0.9),
                             pred_classes=torch.zeros(len(boxes), dtype=torch.long))
            scale = (x.get("height", h) / h, x.get("width", w) / w)
            inst.pred_boxes.scale(scale[1], scale[0])
            out.append({"instances": inst})
        return out


def _image(h, w, square):
    image = torch.zeros((3, h, w))
    x0, y0, x1, y1 = square
    image[:, y0:y1, x0:x1] = 255
    return image


def test_a_defect_across_a_seam_is_one_whole_box_in_the_original_pixels():
    finder = WhiteSquareFinder()
    model = TiledDetector(finder, size=128, overlap=32, tiles_per_batch=4).eval()
    square = (100, 90, 140, 120)  # crosses the seams of 128 px tiles in x and y
    out, = model([{"image": _image(300, 300, square), "height": 600, "width": 600}])
    assert out["instances"].pred_boxes.tensor.tolist() == [[200, 180, 280, 240]]  # 2x: to the original
    assert finder.calls == [4, 4, 1]  # 9 tiles, batched 4 at a time


def test_an_image_that_fits_one_tile_is_the_untiled_detection():
    finder = WhiteSquareFinder()
    inputs = {"image": _image(120, 100, (10, 10, 30, 40)), "height": 240, "width": 200}
    tiled_out, = TiledDetector(finder, size=128, overlap=32).eval()([inputs])
    plain, = finder([inputs])
    assert tiled_out["instances"].pred_boxes.tensor.tolist() == plain["instances"].pred_boxes.tensor.tolist()


@pytest.mark.parametrize("opts, key", [(["TEST.TILE.SIZE", 128, "TEST.TILE.OVERLAP", 128], "TEST.TILE.OVERLAP"),
                                       (["TEST.TILE.SIZE", 128, "TEST.TILE.OVERLAP", -1], "TEST.TILE.OVERLAP")])
def test_bad_tile_values_name_their_key(opts, key):
    cfg = load_config("configs/Synthetic/fcos_R_18_FPN.yaml", opts, device="cpu", register_datasets=False)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        tiled(cfg, WhiteSquareFinder())


def test_off_by_default():
    cfg = load_config("configs/Synthetic/fcos_R_18_FPN.yaml", [], device="cpu", register_datasets=False)
    finder = WhiteSquareFinder()
    assert tiled(cfg, finder) is finder


def test_the_evaluation_and_the_predictor_run_tiled(monkeypatch, tmp_path):
    from detectron2.engine import DefaultTrainer
    from detectron2.modeling import build_model

    from tkd_d2.checkpoint import SafeCheckpointer
    from tkd_d2.engine import Predictor, Trainer

    cfg = load_config("configs/Synthetic/fcos_R_18_FPN.yaml", ["TEST.TILE.SIZE", 128, "MODEL.FPN.OUT_CHANNELS", 32],
                      device="cpu", register_datasets=False)
    seen = []
    monkeypatch.setattr(DefaultTrainer, "test", classmethod(lambda cls, cfg, model, evaluators=None: seen.append(model)))
    finder = WhiteSquareFinder()
    Trainer.test(cfg, finder)
    assert isinstance(seen[0], TiledDetector) and seen[0].detector is finder and seen[0].size == 128
    SafeCheckpointer(build_model(cfg), str(tmp_path)).save("model")
    predictor = Predictor(cfg, str(tmp_path / "model.pth"))
    assert isinstance(predictor.model, TiledDetector)
    out = predictor(np.zeros((300, 260, 3), np.uint8))  # larger than a tile at the test scale
    assert out["instances"].image_size == (300, 260)

"""TiledDetector: a detector's inference on overlapping tiles of each (test-scale) image,
merged by :mod:`tkd_d2.tiling` (TEST.TILE.*). The eager Predictor and the evaluation wrap
the detector in it; the exported predictor runs the same windows and merge."""
import numpy as np
import torch
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances
from torch import nn

from ..errors import ConfigError
from ..tiling import TILES_PER_BATCH, detect_tiled, tile_windows

__all__ = ["TiledDetector", "tiled"]


class TiledDetector(nn.Module):
    """Args:
        detector: a detectron2 detector in eval mode (``detector(batched_inputs)``).
        size, overlap: tile side and minimum overlap, in px of the test-scale image.
        iou_thresh, containment_thresh: the merge rule's (see :mod:`tkd_d2.tiling`).
        max_detections: kept per image after the merge.
        tiles_per_batch: tiles run through the detector at once.
    """

    def __init__(self, detector, size, overlap, iou_thresh=0.5, containment_thresh=0.7,
                 max_detections=100, tiles_per_batch=TILES_PER_BATCH):
        super().__init__()
        tile_windows(size, size, size, overlap)  # checks size and overlap
        self.detector = detector
        self.size, self.overlap = int(size), int(overlap)
        self.iou_thresh, self.containment_thresh = iou_thresh, containment_thresh
        self.max_detections, self.tiles_per_batch = int(max_detections), int(tiles_per_batch)

    @classmethod
    def from_config(cls, cfg, detector):
        tile = cfg.TEST.TILE
        try:
            return cls(detector, tile.SIZE, tile.OVERLAP, tile.IOU_THRESH, tile.CONTAINMENT_THRESH,
                       cfg.TEST.DETECTIONS_PER_IMAGE)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def forward(self, batched_inputs):
        if self.detector.training:
            raise RuntimeError("TiledDetector is for inference; train the detector itself")
        return [self._one(x) for x in batched_inputs]

    def _one(self, x):
        image = x["image"]
        h, w = image.shape[-2:]
        if len(tile_windows(h, w, self.size, self.overlap)) == 1:  # fits one tile: untiled
            return self.detector([x])[0]

        def detect(windows):
            crops = [{"image": image[:, y0:y1, x0:x1], "height": int(y1 - y0), "width": int(x1 - x0)}
                     for x0, y0, x1, y1 in windows.tolist()]
            out = []
            for start in range(0, len(crops), self.tiles_per_batch):
                for r in self.detector(crops[start:start + self.tiles_per_batch]):
                    inst = r["instances"].to("cpu")
                    out.append((inst.pred_boxes.tensor.numpy(), inst.scores.numpy(),
                                inst.pred_classes.numpy()))
            return out

        boxes, scores, classes = detect_tiled(h, w, self.size, self.overlap, detect, self.iou_thresh,
                                              self.containment_thresh, self.max_detections)
        result = Instances((h, w), pred_boxes=Boxes(torch.from_numpy(np.ascontiguousarray(boxes))),
                           scores=torch.from_numpy(np.ascontiguousarray(scores)),
                           pred_classes=torch.from_numpy(np.ascontiguousarray(classes)).long())
        height, width = x.get("height", h), x.get("width", w)
        return {"instances": detector_postprocess(result, height, width)}


def tiled(cfg, detector):
    """``detector`` wrapped in a TiledDetector when TEST.TILE.SIZE > 0, else itself (also a
    detector whose ``tiles_itself`` is True: an exported model's predictor tiles on its own)."""
    if cfg.TEST.TILE.SIZE <= 0 or isinstance(detector, TiledDetector) or getattr(detector, "tiles_itself", False):
        return detector
    return TiledDetector.from_config(cfg, detector)

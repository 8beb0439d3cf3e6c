"""detectron2's DatasetMapper, with image read failures reported by file name, the project's
random orientations (INPUT.RANDOM_ORIENTATION) and defect-centred crops (INPUT.DEFECT_CROP)."""
import copy

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from PIL import Image

from ..errors import ConfigError, ImageReadError
from .crop import DefectCrop, visible_share
from .orientation import orientation_augmentations

__all__ = ["TKDDatasetMapper"]

# What PIL / detectron2.read_image raise for a missing, truncated or undecodable image
# (FileNotFoundError and PIL.UnidentifiedImageError are OSErrors; PIL raises SyntaxError
# for some broken headers).
_IMAGE_READ_ERRORS = (OSError, SyntaxError, Image.DecompressionBombError)


class TKDDatasetMapper(DatasetMapper):
    """Same mapping as :class:`detectron2.data.DatasetMapper` (same constructor and
    ``from_config``); an image that cannot be read or decoded raises :class:`ImageReadError`
    naming ``file_name`` instead of a bare decoder error deep inside a data-loader worker.

    For training, INPUT.RANDOM_ORIENTATION adds a random transpose and vertical flip to the
    horizontal one (INPUT.RANDOM_FLIP "horizontal"): all 8 orientations, before the resize.
    INPUT.DEFECT_CROP.ENABLED adds a :class:`DefectCrop` right after the resize; the mapper
    then hands the crop the image's boxes and drops the boxes it leaves less than
    ``min_visible`` of (``crop_min_visible``; None: no crop).
    """

    @configurable
    def __init__(self, is_train: bool, *, crop_min_visible=None, **kwargs):
        super().__init__(is_train, **kwargs)
        self.crop_min_visible = crop_min_visible

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        if not is_train:
            return ret
        augs = list(ret["augmentations"])
        crop = cfg.INPUT.DEFECT_CROP
        if crop.ENABLED:
            if not 0.0 <= crop.MIN_VISIBLE <= 1.0:
                raise ConfigError(f"INPUT.DEFECT_CROP.MIN_VISIBLE must be in [0, 1], got {crop.MIN_VISIBLE}")
            at = next((i + 1 for i, a in enumerate(augs) if isinstance(a, T.ResizeShortestEdge)), 0)
            augs.insert(at, DefectCrop(crop.SIZE, crop.BACKGROUND_PROB))
            ret["crop_min_visible"] = float(crop.MIN_VISIBLE)
        if cfg.INPUT.RANDOM_ORIENTATION:
            if cfg.INPUT.RANDOM_FLIP != "horizontal":
                raise ConfigError(
                    f"INPUT.RANDOM_ORIENTATION needs INPUT.RANDOM_FLIP 'horizontal' (it adds the vertical "
                    f"flip and the transpose), not {cfg.INPUT.RANDOM_FLIP!r}")
            augs = orientation_augmentations() + augs
        ret["augmentations"] = augs
        return ret

    def __call__(self, dataset_dict):
        try:
            if self.crop_min_visible is None:
                return super().__call__(dataset_dict)
            return self._map_with_boxes(dataset_dict)
        except _IMAGE_READ_ERRORS as e:
            files = [dataset_dict.get("file_name"), dataset_dict.get("sem_seg_file_name")]
            names = " / ".join(str(f) for f in files if f)
            raise ImageReadError(
                f"could not read image {names} ({type(e).__name__}: {e}). The file is missing, "
                "truncated or not an image: replace it, or remove it from the dataset."
            ) from e

    def _map_with_boxes(self, dataset_dict):
        """detectron2's mapping of a training image, with its boxes in the AugInput (the crop
        centres on them) and the boxes the crop cuts below ``crop_min_visible`` dropped."""
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        annos = [a for a in dataset_dict.pop("annotations", []) if a.get("iscrowd", 0) == 0]
        boxes = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos],
                         dtype=np.float64).reshape(-1, 4)
        aug_input = T.AugInput(image, boxes=boxes)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        h, w = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        whole = aug_input.boxes  # every box through every transform, not clipped
        clipped = np.minimum(whole.clip(min=0), [w, h, w, h])
        keep = visible_share(whole, clipped) >= self.crop_min_visible
        annos = [dict(a, bbox=box, bbox_mode=BoxMode.XYXY_ABS)
                 for a, box, k in zip(annos, clipped, keep) if k]
        for a in annos:
            a.pop("segmentation", None)
            a.pop("keypoints", None)
        instances = utils.annotations_to_instances(annos, (h, w))
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
        return dataset_dict

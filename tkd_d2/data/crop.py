"""Defect-centred crops: train on large images at native scale (issue #27).

:class:`DefectCrop` is a detectron2 ``Augmentation`` that cuts a ``size`` × ``size`` window
(at the scale the resize before it chose) out of the image: with probability
``background_prob`` (or when the image has no box) anywhere, else around one GT box chosen at
random, placed uniformly among the windows that hold the whole box (so the box is not always
in the middle; a box larger than the window gets a window inside it). Boxes the window cuts
keep only if ``min_visible`` of their area is left (:func:`visible_share`), as the mapper
applies it; the others are clipped to the window.
"""
import numpy as np
from detectron2.data import transforms as T

from ..errors import ConfigError

__all__ = ["DefectCrop", "visible_share"]


class DefectCrop(T.Augmentation):
    def __init__(self, size: int, background_prob: float = 0.1):
        super().__init__()
        if size <= 0:
            raise ConfigError(f"INPUT.DEFECT_CROP.SIZE must be > 0 (px), got {size}")
        if not 0.0 <= background_prob <= 1.0:
            raise ConfigError(f"INPUT.DEFECT_CROP.BACKGROUND_PROB must be in [0, 1], got {background_prob}")
        self._init(locals())

    def get_transform(self, image, boxes):
        h, w = image.shape[:2]
        if self.size > h or self.size > w:
            raise ConfigError(
                f"INPUT.DEFECT_CROP.SIZE {self.size} px is larger than a training image at the resized "
                f"scale ({w}x{h}): lower it, or raise INPUT.MIN_SIZE_TRAIN")
        boxes = np.zeros((0, 4)) if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0 or self._rand_range() < self.background_prob:
            x0, y0 = self._rand_range(w - self.size + 1), self._rand_range(h - self.size + 1)
        else:
            x1, y1, x2, y2 = boxes[np.random.randint(len(boxes))]
            x0 = self._offset(x1, x2, w)
            y0 = self._offset(y1, y2, h)
        return T.CropTransform(int(x0), int(y0), self.size, self.size)

    def _offset(self, lo, hi, extent):
        """A window start along one axis, uniform among those that hold [lo, hi] whole (or lie
        inside it when it is longer than the window), within the image."""
        a, b = sorted((hi - self.size, lo))
        first, last = max(int(np.ceil(a)), 0), min(int(np.floor(b)), extent - self.size)
        if first > last:  # no whole-pixel window holds it inside the image: the nearest one
            first = last = min(max(int(np.floor(lo)), 0), extent - self.size)
        return np.random.randint(first, last + 1)


def visible_share(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per box, the area of ``after`` (the box clipped to the crop) over that of ``before``
    (the whole box in the crop's coordinates); 1 for a box of zero area."""
    def area(b):
        return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)

    whole = area(before)
    return np.where(whole > 0, area(after) / np.where(whole > 0, whole, 1.0), 1.0)

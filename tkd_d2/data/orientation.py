"""Random orientations for surface defects, which have none of their own: a random
transpose plus detectron2's horizontal and vertical flips reach all 8 orientations of the
image's dihedral group (the 90° rotations among them), exactly (pixels move, none are
interpolated)."""
import numpy as np
from detectron2.data import transforms as T
from fvcore.transforms.transform import Transform

__all__ = ["TransposeTransform", "RandomTranspose", "orientation_augmentations"]


class TransposeTransform(Transform):
    """Swap the image's x and y axes (a reflection about the main diagonal)."""

    def __init__(self):
        super().__init__()

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        axes = (1, 0) + tuple(range(2, img.ndim))
        return np.ascontiguousarray(img.transpose(axes))

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(coords[:, ::-1])

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation)

    def inverse(self) -> Transform:
        return self


class RandomTranspose(T.Augmentation):
    """Transpose the image with probability ``prob``."""

    def __init__(self, prob: float = 0.5):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        if self._rand_range() < self.prob:
            return TransposeTransform()
        return T.NoOpTransform()


def orientation_augmentations():
    """The augmentations that add INPUT.RANDOM_ORIENTATION to detectron2's default list: a
    random transpose and a vertical flip (the horizontal flip is INPUT.RANDOM_FLIP's)."""
    return [RandomTranspose(), T.RandomFlip(horizontal=False, vertical=True)]

"""detectron2's DatasetMapper, with image read failures reported by file name and the
project's random orientations (INPUT.RANDOM_ORIENTATION)."""
from detectron2.data import DatasetMapper
from detectron2.data import transforms as T
from PIL import Image

from ..errors import ConfigError, ImageReadError
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
    horizontal one (INPUT.RANDOM_FLIP "horizontal"): all 8 orientations, before the resize."""

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        if is_train and cfg.INPUT.RANDOM_ORIENTATION:
            if cfg.INPUT.RANDOM_FLIP != "horizontal":
                raise ConfigError(
                    f"INPUT.RANDOM_ORIENTATION needs INPUT.RANDOM_FLIP 'horizontal' (it adds the vertical "
                    f"flip and the transpose), not {cfg.INPUT.RANDOM_FLIP!r}")
            ret["augmentations"] = orientation_augmentations() + list(ret["augmentations"])
        return ret

    def __call__(self, dataset_dict):
        try:
            return super().__call__(dataset_dict)
        except _IMAGE_READ_ERRORS as e:
            files = [dataset_dict.get("file_name"), dataset_dict.get("sem_seg_file_name")]
            names = " / ".join(str(f) for f in files if f)
            raise ImageReadError(
                f"could not read image {names} ({type(e).__name__}: {e}). The file is missing, "
                "truncated or not an image: replace it, or remove it from the dataset."
            ) from e

"""detectron2's DatasetMapper, with image read failures reported by file name."""
from detectron2.data import DatasetMapper
from PIL import Image

from ..errors import ImageReadError

__all__ = ["TKDDatasetMapper"]

# What PIL / detectron2.read_image raise for a missing, truncated or undecodable image
# (FileNotFoundError and PIL.UnidentifiedImageError are OSErrors; PIL raises SyntaxError
# for some broken headers).
_IMAGE_READ_ERRORS = (OSError, SyntaxError, Image.DecompressionBombError)


class TKDDatasetMapper(DatasetMapper):
    """Same mapping as :class:`detectron2.data.DatasetMapper` (same constructor and
    ``from_config``); an image that cannot be read or decoded raises :class:`ImageReadError`
    naming ``file_name`` instead of a bare decoder error deep inside a data-loader worker."""

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

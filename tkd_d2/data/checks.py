"""Up-front checks of a dataset's images: every image decoded once, in parallel, before
training starts (a truncated JPEG otherwise stops a training mid-way, inside a loader worker)."""
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from ..errors import ImageReadError

__all__ = ["check_image", "find_unreadable_images", "check_images"]

logger = logging.getLogger(__name__)


def check_image(path, width=None, height=None):
    """Why the image at ``path`` cannot be trained on (unreadable, truncated, not the
    ``width`` x ``height`` its annotation says), or None when it decodes fine.

    PIL decodes the whole image (what detectron2's loader does): a truncated JPEG fails here
    (OpenCV would return a partly grey image with only a warning).
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()  # the full decode; PIL releases the GIL while decoding
            size = image.size
    except FileNotFoundError:
        return "file not found"
    except Exception as e:  # noqa: BLE001  (any decoder failure means: unreadable)
        return f"{type(e).__name__}: {e}"
    if width and height and tuple(size) != (int(width), int(height)):
        # detectron2 would refuse it mid-training; EXIF rotation is not applied at this size
        return (f"decoded size {size[0]}x{size[1]} differs from the annotation's "
                f"{int(width)}x{int(height)}")
    return None


def default_workers():
    return max(1, min(8, os.cpu_count() or 1))


def find_unreadable_images(dataset_dicts, workers=None):
    """``[(file_name, reason), ...]`` for every image of ``dataset_dicts`` that does not decode
    (or whose size differs from its record's), checked by ``workers`` threads."""
    records = list(dataset_dicts)
    workers = workers or default_workers()

    def one(record):
        return check_image(record["file_name"], record.get("width"), record.get("height"))

    if workers == 1 or len(records) < 2:
        reasons = [one(r) for r in records]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            reasons = list(pool.map(one, records, chunksize=16))
    return [(r["file_name"], why) for r, why in zip(records, reasons) if why]


def check_images(dataset_dicts, dataset_name="", workers=None, shown=3):
    """Raise :class:`~tkd_d2.errors.ImageReadError` naming the first ``shown`` images of
    ``dataset_dicts`` that cannot be read (see :func:`find_unreadable_images`); returns the
    number of images checked."""
    bad = find_unreadable_images(dataset_dicts, workers)
    if bad:
        listed = "; ".join(f"{f} ({why})" for f, why in bad[:shown])
        more = f" and {len(bad) - shown} more" if len(bad) > shown else ""
        where = f" of dataset {dataset_name!r}" if dataset_name else ""
        raise ImageReadError(
            f"{len(bad)} image(s){where} cannot be read: {listed}{more}. Replace or remove them "
            "(DATASETS.CHECK_IMAGES False skips this check)."
        )
    return len(dataset_dicts)

"""Registering datasets with detectron2's catalogs, and the box checks every format shares."""
from detectron2.data import DatasetCatalog, MetadataCatalog

from ..errors import DatasetFormatError

__all__ = [
    "BAD_BOX_POLICIES",
    "OUTSIDE_TOLERANCE_PX",
    "LOAD_REPORTS",
    "REGISTERED_BY_TKD",
    "check_bad_box_policy",
    "clip_box",
    "replace_registration",
    "unregister_dataset",
]

BAD_BOX_POLICIES = ("drop", "error")
# A box reaching more than this many pixels outside its image counts as outside (less is the
# rounding of x + w, or VOC's 1-based xmax = width + 1: clipped without a word).
OUTSIDE_TOLERANCE_PX = 1.0


def check_bad_box_policy(policy):
    """Return ``policy`` if it is one of :data:`BAD_BOX_POLICIES`, else raise."""
    if policy not in BAD_BOX_POLICIES:
        raise DatasetFormatError(
            f"bad box policy {policy!r} is not one of {list(BAD_BOX_POLICIES)} "
            "(config key DATASETS.BAD_BOX_POLICY)."
        )
    return policy


# dataset name -> what its loader did to the boxes on the last load: {"outside": boxes
# reaching outside the image (clipped), "empty": boxes empty after clipping (dropped)}
LOAD_REPORTS = {}

# Names registered through this package, in registration order (for error messages).
REGISTERED_BY_TKD = {}


def unregister_dataset(name):
    """Remove ``name`` from DatasetCatalog and MetadataCatalog if present (for re-registering)."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    REGISTERED_BY_TKD.pop(name, None)


def replace_registration(name, loader, **metadata):
    """Register ``loader`` (called on ``DatasetCatalog.get``) under ``name``, replacing any
    earlier dataset of that name, and set its metadata."""
    unregister_dataset(name)
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(**metadata)
    REGISTERED_BY_TKD[name] = True


def clip_box(box, width, height):
    """Clip an XYXY box to the ``width`` x ``height`` image; return (box, changed)."""
    x0, y0, x1, y1 = box
    clipped = [
        min(max(x0, 0.0), width),
        min(max(y0, 0.0), height),
        min(max(x1, 0.0), width),
        min(max(y1, 0.0), height),
    ]
    return clipped, clipped != [x0, y0, x1, y1]

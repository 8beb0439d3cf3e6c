"""COCO-json detection datasets: detectron2's loader with clear errors and the bad-box policy."""
import logging
import os

from detectron2.data.datasets import load_coco_json
from detectron2.structures import BoxMode

from ..errors import DatasetFormatError
from .registry import check_bad_box_policy, clip_box, replace_registration

__all__ = ["register_coco", "load_coco_instances"]

logger = logging.getLogger(__name__)


def load_coco_instances(json_file, image_root, dataset_name=None, bad_box_policy="drop"):
    """detectron2's ``load_coco_json`` + boxes clipped to the image (XYXY_ABS) under the policy.

    Only training sees the clipping: COCOEvaluator reads the ground truth from ``json_file``.
    """
    check_bad_box_policy(bad_box_policy)
    if not os.path.isfile(json_file):
        raise DatasetFormatError(
            f"COCO annotation file {json_file} does not exist"
            + (f" (dataset {dataset_name!r})" if dataset_name else "")
            + ". Check the path."
        )
    if not os.path.isdir(image_root):
        raise DatasetFormatError(f"image folder {image_root} of {json_file} does not exist.")
    try:
        dataset_dicts = load_coco_json(
            json_file, image_root, dataset_name, extra_annotation_keys=["id"]
        )
    except (ValueError, KeyError, TypeError, AssertionError) as e:  # JSONDecodeError: ValueError
        raise DatasetFormatError(
            f"{json_file}: not a valid COCO detection file ({type(e).__name__}: {e}). Fix the file."
        ) from e

    dropped, example = 0, None
    for record in dataset_dicts:
        kept = []
        for ann in record.get("annotations", []):
            box = BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYXY_ABS)
            box, _ = clip_box([float(v) for v in box], record["width"], record["height"])
            if box[2] <= box[0] or box[3] <= box[1]:
                if bad_box_policy == "error":
                    raise DatasetFormatError(
                        f"{json_file}: annotation {ann.get('id', '?')} of image "
                        f"{record['file_name']} has a box {ann['bbox']} of zero size after "
                        "clipping to the image. Fix it, or use bad box policy 'drop'."
                    )
                dropped += 1
                example = example or f"annotation {ann.get('id', '?')} of {record['file_name']}"
                continue
            ann["bbox"], ann["bbox_mode"] = box, BoxMode.XYXY_ABS
            kept.append(ann)
        record["annotations"] = kept
    if dropped:
        logger.warning(
            "Dropped %d box(es) of zero size after clipping to the image in %s (e.g. %s). "
            "Use bad box policy 'error' to fail on them instead.",
            dropped,
            json_file,
            example,
        )
    return dataset_dicts


def register_coco(name, json_file, image_root, bad_box_policy="drop", **metadata):
    """Register a COCO-json dataset lazily; re-registering a name replaces it.

    Metadata as detectron2's ``register_coco_instances`` sets it (``json_file``,
    ``image_root``, ``evaluator_type="coco"``); ``thing_classes`` is filled on first load.
    """
    check_bad_box_policy(bad_box_policy)
    replace_registration(
        name,
        lambda: load_coco_instances(json_file, image_root, name, bad_box_policy),
        json_file=json_file,
        image_root=image_root,
        evaluator_type="coco",
        **metadata,
    )

"""COCO-json detection datasets: detectron2's loader with clear errors and the bad-box policy."""
import json
import logging
import os

from detectron2.data.datasets import load_coco_json
from detectron2.structures import BoxMode

from ..errors import DatasetFormatError
from .registry import LOAD_REPORTS, OUTSIDE_TOLERANCE_PX, check_bad_box_policy, replace_registration

__all__ = ["register_coco", "load_coco_instances", "coco_category_names"]

logger = logging.getLogger(__name__)


def coco_category_names(json_file):
    """The class names of a COCO json file in the order detectron2 gives them (by category id),
    read without loading the annotations into dataset dicts."""

    try:
        with open(json_file, encoding="utf-8") as f:
            categories = json.load(f).get("categories")
        names = [c["name"] for c in sorted(categories, key=lambda c: c["id"])]
    except FileNotFoundError:
        raise DatasetFormatError(f"COCO annotation file {json_file} does not exist. Check the path.") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DatasetFormatError(
            f"{json_file}: cannot read its 'categories' (id and name of each class): "
            f"{type(e).__name__}: {e}. Fix the file."
        ) from None
    if not names:
        raise DatasetFormatError(f"{json_file}: 'categories' is empty; list every class with its id and name.")
    return names


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
    except KeyError as e:
        if "category_id" in str(e):
            raise unknown_category_error(json_file) from None
        raise DatasetFormatError(
            f"{json_file}: not a valid COCO detection file (missing key {e}). Fix the file."
        ) from None
    except (ValueError, TypeError, AssertionError) as e:  # JSONDecodeError: ValueError
        if not isinstance(e, json.JSONDecodeError):
            coco_category_names(json_file)  # empty 'categories' (detectron2: "min() arg is an empty sequence")
        raise DatasetFormatError(
            f"{json_file}: not a valid COCO detection file ({type(e).__name__}: {e}). Fix the file."
        ) from None
    counts = apply_box_policy(dataset_dicts, json_file, bad_box_policy)
    if dataset_name:
        LOAD_REPORTS[dataset_name] = counts
    return dataset_dicts


def unknown_category_error(json_file):
    """The error for annotations of ``json_file`` whose category_id is not in its
    'categories': names the first one's annotation id and image, and how many there are."""

    with open(json_file, encoding="utf-8") as f:
        data = json.load(f)
    known = sorted(c["id"] for c in data.get("categories", []))
    images = {im.get("id"): im.get("file_name") for im in data.get("images", [])}
    bad = [a for a in data.get("annotations", []) if a.get("category_id") not in set(known)]
    if not bad:
        return DatasetFormatError(f"{json_file}: an annotation's category_id is not in 'categories'.")
    first = bad[0]
    more = f" ({len(bad) - 1} more annotations have unknown category ids)" if len(bad) > 1 else ""
    return DatasetFormatError(
        f"{json_file}: annotation {first.get('id', '?')} of image "
        f"{images.get(first.get('image_id'), first.get('image_id'))} has category_id "
        f"{first.get('category_id')!r}, which is not in 'categories' (ids {known}){more}. "
        "Fix the annotation or add the category."
    )


def apply_box_policy(dataset_dicts, json_file, bad_box_policy):
    """Clip the boxes of ``dataset_dicts`` (loaded from ``json_file``) to their images, in
    place, as XYXY_ABS. Boxes reaching outside the image are counted and logged once;
    boxes empty after clipping are dropped and counted. Policy "error" refuses either,
    naming the annotation and its image. Returns ``{"outside": n, "empty": m}``."""
    import numpy as np

    anns = [(i, a) for i, r in enumerate(dataset_dicts) for a in r.get("annotations", [])]
    if not anns:
        return {"outside": 0, "empty": 0}
    boxes = np.array([a["bbox"] for _, a in anns], dtype=np.float64).reshape(-1, 4)
    for mode in {a["bbox_mode"] for _, a in anns}:  # load_coco_json: all XYWH_ABS
        rows = np.array([a["bbox_mode"] == mode for _, a in anns])
        boxes[rows] = BoxMode.convert(boxes[rows], mode, BoxMode.XYXY_ABS)
    owner = np.array([i for i, _ in anns])
    sizes = np.array([(r["width"], r["height"]) for r in dataset_dicts], dtype=np.float64)[owner]
    limits = np.concatenate([sizes, sizes], axis=1)
    clipped = np.clip(boxes, 0.0, limits)
    outside = (np.abs(clipped - boxes) > OUTSIDE_TOLERANCE_PX).any(axis=1)
    empty = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    outside &= ~empty

    def describe(k):
        i, a = anns[k]
        return (f"annotation {a.get('id', '?')} of image {dataset_dicts[i]['file_name']} "
                f"({int(sizes[k, 0])}x{int(sizes[k, 1])}): box {[round(float(v), 1) for v in a['bbox']]}")

    if bad_box_policy == "error" and (empty.any() or outside.any()):
        k = int(np.flatnonzero(empty | outside)[0])
        what = "is empty after clipping to the image" if empty[k] else "reaches outside the image"
        raise DatasetFormatError(
            f"{json_file}: {describe(k)} {what} ({int(empty.sum())} empty, "
            f"{int(outside.sum())} outside in this file). Fix the boxes, or use "
            "DATASETS.BAD_BOX_POLICY drop to clip them and drop the empty ones."
        )
    if outside.any():
        logger.warning("Clipped %d box(es) reaching outside their image in %s (e.g. %s).",
                       int(outside.sum()), json_file, describe(int(np.flatnonzero(outside)[0])))
    if empty.any():
        logger.warning(
            "Dropped %d box(es) of zero size after clipping to the image in %s (e.g. %s). "
            "Use bad box policy 'error' to fail on them instead.",
            int(empty.sum()), json_file, describe(int(np.flatnonzero(empty)[0])),
        )
    kept = [[] for _ in dataset_dicts]
    for k, (i, a) in enumerate(anns):
        if not empty[k]:
            a["bbox"], a["bbox_mode"] = clipped[k].tolist(), BoxMode.XYXY_ABS
            kept[i].append(a)
    for record, annotations in zip(dataset_dicts, kept):
        record["annotations"] = annotations
    return {"outside": int(outside.sum()), "empty": int(empty.sum())}


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

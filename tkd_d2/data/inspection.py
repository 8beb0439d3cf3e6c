"""What a detection dataset holds, and the settings that follow from it.

:func:`inspect_dataset` summarises dataset dicts: image sizes, boxes per class, box sizes in
pixels and relative to the image, tiny / huge / degenerate boxes, the boxes the loader
clipped or dropped, unreadable images. :func:`derive_settings` turns that into an input
size, anchor sizes that cover the boxes at that size (in the spirit of YOLOv5's autoanchor:
the best-matching anchor of every box, assuming centred boxes, must reach the matcher's IoU
threshold) and an epoch schedule. Plain numbers in, plain dicts out: no config here
(:func:`settings_overrides` writes them as ``KEY VALUE`` pairs).
"""
import math
from typing import NamedTuple

import numpy as np

from .checks import find_unreadable_images
from .registry import LOAD_REPORTS

__all__ = [
    "ANCHOR_LEVELS",
    "ANCHOR_RATIO_SETS",
    "BoxArrays",
    "DEFAULT_EPOCHS",
    "anchor_recall",
    "anchor_sizes",
    "derive_settings",
    "format_inspection",
    "inspect_dataset",
    "settings_overrides",
]

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
TINY_BOX_PX = 8  # a box side below this (at the image's own size) is tiny
HUGE_BOX_FRACTION = 0.8  # sqrt(box area / image area) above this is huge
ANCHOR_LEVELS = ("p3", "p4", "p5", "p6", "p7")  # strides 8 .. 128
ANCHOR_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))  # per level, as in RetinaNet
ANCHOR_RATIOS = (0.5, 1.0, 2.0)  # height / width
# the aspect-ratio sets the anchor search tries, fewest first: detectron2's default, then
# wider ones for long thin defects (NEU-DET scratches are about 1:9)
ANCHOR_RATIO_SETS = (ANCHOR_RATIOS, (0.25, 0.5, 1.0, 2.0, 4.0), (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0))
# the fewest ratios are taken whose worst-covered class is within this of the best set's
RATIO_GAIN = 0.05
# The smallest boxes (5th percentile of sqrt(area)) should span at least this many input
# pixels: two cells of P3 (stride 8) and near the smallest RetinaNet anchor.
MIN_BOX_INPUT_PX = 20
MAX_UPSCALE = 2.0
# Above this input short side a CPU training step costs seconds (480 px: about 4 s for the
# Lite2 teacher on 2 cores): train on crops of CROP_PX at the derived scale instead, and infer
# in tiles of the same size (INPUT.DEFECT_CROP, TEST.TILE).
MAX_CPU_INPUT_PX = 512
CROP_PX = 320
DEFAULT_EPOCHS = 12
DEFAULT_IOU_THRESHOLD = 0.5  # RetinaNet's foreground IoU (MODEL.RETINANET.IOU_THRESHOLDS[1])


def _quantiles(values):
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {}
    return {f"q{int(q * 100):02d}": float(np.quantile(values, q)) for q in QUANTILES}


class BoxArrays(NamedTuple):
    """Every box of a dataset: (N, 4) XYXY pixels, its image's (width, height), its class id."""
    boxes: np.ndarray
    image_sizes: np.ndarray
    classes: np.ndarray


def _box_arrays(dataset_dicts):
    """(N, 4) XYXY boxes, their class ids, and their images' (width, height)."""
    from detectron2.structures import BoxMode

    boxes, classes, sizes = [], [], []
    for record in dataset_dicts:
        for ann in record.get("annotations", []):
            box = ann["bbox"]
            if ann.get("bbox_mode", BoxMode.XYXY_ABS) != BoxMode.XYXY_ABS:
                box = BoxMode.convert(list(box), ann["bbox_mode"], BoxMode.XYXY_ABS)
            boxes.append(box)
            classes.append(ann["category_id"])
            sizes.append((record["width"], record["height"]))
    return (np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int64),
            np.asarray(sizes, np.float64).reshape(-1, 2))


def inspect_dataset(dataset_dicts, class_names=None, dataset_name="", check_images=True, workers=None):
    """Statistics of ``dataset_dicts`` (detectron2 dataset dicts) as a dict of plain values;
    ``check_images`` decodes every image (in parallel) and lists the unreadable ones."""
    dicts = list(dataset_dicts)
    boxes, classes, box_image_sizes = _box_arrays(dicts)
    widths = np.array([d["width"] for d in dicts], np.float64)
    heights = np.array([d["height"] for d in dicts], np.float64)
    sizes, counts = np.unique(np.stack([widths, heights], 1), axis=0, return_counts=True) \
        if dicts else (np.zeros((0, 2)), np.zeros(0))
    order = np.argsort(-counts)[:5]
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.sqrt(np.clip(w, 0, None) * np.clip(h, 0, None))
    relative = side / np.sqrt(box_image_sizes.prod(1)) if len(side) else side
    names = list(class_names or [])
    per_class = np.bincount(classes, minlength=len(names)) if len(classes) else np.zeros(len(names), int)
    stats = {
        "dataset": dataset_name,
        "images": len(dicts),
        "images_without_boxes": int(sum(1 for d in dicts if not d.get("annotations"))),
        "image_sizes": [{"width": int(s[0]), "height": int(s[1]), "images": int(c)}
                        for s, c in zip(sizes[order], counts[order])],
        "distinct_image_sizes": int(len(sizes)),
        "short_side": _quantiles(np.minimum(widths, heights)),
        "long_side": _quantiles(np.maximum(widths, heights)),
        "boxes": int(len(boxes)),
        "boxes_per_class": {(names[i] if i < len(names) else str(i)): int(n) for i, n in enumerate(per_class)},
        "box_width_px": _quantiles(w),
        "box_height_px": _quantiles(h),
        "box_side_px": _quantiles(side),  # sqrt(area)
        "box_side_relative": _quantiles(relative),
        "box_aspect_h_over_w": _quantiles(h / np.maximum(w, 1e-6)) if len(w) else {},
        "tiny_boxes": int(((w < TINY_BOX_PX) | (h < TINY_BOX_PX)).sum()),
        "huge_boxes": int((relative > HUGE_BOX_FRACTION).sum()),
        "degenerate_boxes": int(((w <= 1) | (h <= 1)).sum()),
    }
    report = LOAD_REPORTS.get(dataset_name, {})
    stats["outside_boxes_clipped"] = int(report.get("outside", 0))
    stats["empty_boxes_dropped"] = int(report.get("empty", 0))
    if check_images:
        bad = find_unreadable_images(dicts, workers)
        stats["unreadable_images"] = [{"file_name": f, "reason": why} for f, why in bad]
    return stats, BoxArrays(boxes, box_image_sizes, classes)


def anchor_sizes(base):
    """RetinaNet anchor sizes, one list per level P3-P7: ``base`` x 2^level x each scale."""
    return [[round(base * 2 ** level * s, 2) for s in ANCHOR_SCALES] for level in range(len(ANCHOR_LEVELS))]


def best_anchor_iou(box_wh, sizes, ratios=ANCHOR_RATIOS):
    """Each box's (N, 2 widths and heights, input pixels) best IoU with the anchors of
    ``sizes`` x ``ratios``, each box compared centred with every anchor shape (the matcher
    sees shifted anchors too: an upper bound, as YOLOv5's autoanchor reports)."""
    box_wh = np.asarray(box_wh, np.float64).reshape(-1, 2)
    areas = np.array([s * s for level in sizes for s in level], np.float64)
    ratios = np.asarray(ratios, np.float64)
    anchor_w = np.sqrt(areas[:, None] / ratios[None, :]).ravel()
    anchor_h = (anchor_w.reshape(len(areas), -1) * ratios[None, :]).ravel()
    inter = (np.minimum(box_wh[:, :1], anchor_w[None]) * np.minimum(box_wh[:, 1:], anchor_h[None]))
    union = box_wh.prod(1, keepdims=True) + (anchor_w * anchor_h)[None] - inter
    return (inter / np.maximum(union, 1e-9)).max(1)


def anchor_recall(box_wh, sizes, ratios=ANCHOR_RATIOS, iou_threshold=DEFAULT_IOU_THRESHOLD):
    """(recall, mean best IoU) of boxes (N, 2 widths and heights, input pixels) against the
    anchors of ``sizes`` x ``ratios`` (:func:`best_anchor_iou`)."""
    box_wh = np.asarray(box_wh, np.float64).reshape(-1, 2)
    if not len(box_wh):
        return float("nan"), float("nan")
    best = best_anchor_iou(box_wh, sizes, ratios)
    return float((best >= iou_threshold).mean()), float(best.mean())


def class_recalls(box_wh, classes, sizes, ratios=ANCHOR_RATIOS, iou_threshold=DEFAULT_IOU_THRESHOLD):
    """{class id: recall} of each class's boxes against the anchors (:func:`anchor_recall`)."""
    covered = best_anchor_iou(box_wh, sizes, ratios) >= iou_threshold
    classes = np.asarray(classes)
    return {int(c): float(covered[classes == c].mean()) for c in np.unique(classes)}


def choose_ratios(box_wh, classes, sizes, iou_threshold=DEFAULT_IOU_THRESHOLD,
                  ratio_sets=ANCHOR_RATIO_SETS, gain=RATIO_GAIN):
    """The anchor aspect ratios for boxes of ``classes``: the fewest of ``ratio_sets`` whose
    worst-covered class is within ``gain`` of the best any set reaches. An overall recall
    hides a class of long thin boxes the default ratios miss: on NEU-DET 86 % of the boxes
    are covered, but 17 % of the scratches. Returns the chosen ratios and {ratios: {class id:
    recall}} of every set tried."""
    per_set = {ratios: class_recalls(box_wh, classes, sizes, ratios, iou_threshold) for ratios in ratio_sets}
    best_worst = max(min(recalls.values()) for recalls in per_set.values())
    return next(r for r, recalls in per_set.items() if min(recalls.values()) >= best_worst - gain), per_set


def _round_up(value, multiple=32):
    return int(math.ceil(value / multiple) * multiple)


def derive_settings(stats, boxes_and_sizes, *, anchors=True, epochs=DEFAULT_EPOCHS,
                    ims_per_batch=4, iou_threshold=DEFAULT_IOU_THRESHOLD, min_box_px=MIN_BOX_INPUT_PX,
                    current_base=16, crops=True):
    """Settings for the data of :func:`inspect_dataset` (its ``stats`` and
    :class:`BoxArrays` ``boxes_and_sizes``):

    * input size: the median short side scaled so that the smallest boxes (5th percentile of
      sqrt(area)) span ``min_box_px`` input pixels: shrunk when they are larger (faster),
      enlarged up to 2x when smaller; a multiple of 32, at least 128. Max size: the same
      scale on the longest side.
    * anchors (``anchors``: RetinaNet): the base size (P3; each level doubles it) whose
      anchors give the highest recall at ``iou_threshold`` (then the highest mean IoU);
      ``current_base`` (the shipped configs' 16 px) is kept unless another base gains at
      least one point of recall. Aspect ratios: :func:`choose_ratios` per class.
    * crops (``crops``): when that input is larger than ``MAX_CPU_INPUT_PX``, train on
      ``CROP_PX`` crops centred on defects at that scale and infer in tiles of the same size,
      overlapping by the large boxes' side (95th percentile; 32 px to half a tile), instead of
      shrinking the images (and their defects) further.
    * schedule: ``epochs`` passes over the images, ``ims_per_batch`` per iteration.
    """
    boxes, image_sizes, classes = boxes_and_sizes
    short = stats["short_side"].get("q50", 0.0)
    small = stats["box_side_px"].get("q05", 0.0)
    if not short:
        raise ValueError("the dataset has no images")
    scale = 1.0 if not small else min(MAX_UPSCALE, min_box_px / small)
    min_size = max(128, _round_up(short * scale))
    scale = min_size / short
    max_size = max(min_size, _round_up(stats["long_side"]["q100"] * scale))
    settings = {
        "input": {"min_size": min_size, "max_size": max_size, "scale": round(scale, 3),
                  "reason": f"median short side {short:g} px, smallest boxes (5th percentile) "
                            f"{small:.1f} px -> {small * scale:.1f} px at this size"},
    }
    if crops and min_size > MAX_CPU_INPUT_PX:
        large = stats["box_side_px"].get("q95", 0.0) * scale
        overlap = int(min(max(32, _round_up(large, 16)), CROP_PX // 2))
        settings["crops"] = {
            "size": CROP_PX, "tile": CROP_PX, "overlap": overlap,
            "reason": f"keeping the smallest boxes at {min_box_px} px needs a {min_size} px input, above the "
                      f"{MAX_CPU_INPUT_PX} px a CPU trains quickly: {CROP_PX} px crops at that scale for "
                      f"training, {CROP_PX} px tiles overlapping {overlap} px (the large boxes, 95th "
                      f"percentile, are {large:.0f} px) for inference"}
    if anchors and len(boxes):
        # every box at the input size (each image resized by its own short side)
        image_scale = min_size / image_sizes.min(1)
        image_scale = np.minimum(image_scale, max_size / image_sizes.max(1))
        wh = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1) * image_scale[:, None]
        wh = np.clip(wh, 1.0, None)
        side_q05 = float(np.quantile(np.sqrt(wh.prod(1)), 0.05))
        candidates = sorted({8, 10, 12, 16, 20, 24, 32, 40, 48, 64, round(side_q05, 1)})
        scored = [(anchor_recall(wh, anchor_sizes(b), iou_threshold=iou_threshold), b) for b in candidates]
        (recall, mean_iou), base = max(scored, key=lambda item: (round(item[0][0], 3), item[0][1]))
        default_recall, default_iou = anchor_recall(wh, anchor_sizes(current_base), iou_threshold=iou_threshold)
        if recall < default_recall + 0.01:
            (recall, mean_iou), base = (default_recall, default_iou), current_base
        sizes = anchor_sizes(base)
        ratios, per_set = choose_ratios(wh, classes, sizes, iou_threshold)
        per_class, default_per_class = per_set[ratios], per_set[ANCHOR_RATIOS]
        if ratios != ANCHOR_RATIOS:
            recall, mean_iou = anchor_recall(wh, sizes, ratios, iou_threshold)
        names = list(stats.get("boxes_per_class", {}))
        worst = min(per_class, key=per_class.get)
        default_worst = min(default_per_class, key=default_per_class.get)
        settings["anchors"] = {
            "base": base, "sizes": sizes, "aspect_ratios": list(ratios), "recall": round(recall, 4),
            "mean_best_iou": round(mean_iou, 4), "iou_threshold": iou_threshold,
            "current_base": current_base, "current_recall": round(default_recall, 4),
            "worst_class": names[worst] if worst < len(names) else str(worst),
            "worst_class_recall": round(per_class[worst], 4),
            "default_ratios_worst_class": names[default_worst] if default_worst < len(names) else str(default_worst),
            "default_ratios_worst_class_recall": round(default_per_class[default_worst], 4),
        }
    images = stats["images"] - stats.get("images_without_boxes", 0)
    if epochs:
        iterations = max(1, math.ceil(epochs * images / max(1, ims_per_batch)))
        settings["schedule"] = {"epochs": int(epochs), "images": images,
                                "ims_per_batch": int(ims_per_batch), "iterations": iterations}
    return settings


def settings_overrides(settings):
    """``KEY VALUE`` config overrides of :func:`derive_settings`'s input size and anchors (the
    schedule is for the caller: SOLVER.EPOCHS, or MAX_ITER with its steps scaled)."""
    opts = []
    size = settings.get("input")
    if size:
        opts += ["INPUT.MIN_SIZE_TRAIN", f"({size['min_size']},)", "INPUT.MAX_SIZE_TRAIN", str(size["max_size"]),
                 "INPUT.MIN_SIZE_TEST", str(size["min_size"]), "INPUT.MAX_SIZE_TEST", str(size["max_size"])]
    if settings.get("anchors"):
        opts += ["MODEL.ANCHOR_GENERATOR.SIZES", repr(settings["anchors"]["sizes"])]
        ratios = settings["anchors"].get("aspect_ratios")
        if ratios:
            opts += ["MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", repr([list(ratios)])]
    crops = settings.get("crops")
    if crops:
        opts += ["INPUT.DEFECT_CROP.ENABLED", "True", "INPUT.DEFECT_CROP.SIZE", str(crops["size"]),
                 "TEST.TILE.SIZE", str(crops["tile"]), "TEST.TILE.OVERLAP", str(crops["overlap"])]
    return opts


def _ratios(ratios):
    return ", ".join(f"{r:g}" for r in ratios)


def _q(d, keys=("q00", "q05", "q50", "q95", "q100"), digits=1):
    return " / ".join(f"{d[k]:.{digits}f}" for k in keys if k in d) if d else "-"


def format_inspection(stats, settings=None):
    """Markdown lines of :func:`inspect_dataset`'s statistics and the derived settings."""
    lines = [f"### Dataset {stats['dataset'] or ''}".rstrip(), "",
             f"- images: {stats['images']} ({stats['images_without_boxes']} without boxes); "
             f"{stats['distinct_image_sizes']} distinct sizes, most common: "
             + ", ".join(f"{s['width']}x{s['height']} ({s['images']})" for s in stats["image_sizes"]),
             f"- boxes: {stats['boxes']}; per class: "
             + ", ".join(f"{k} {v}" for k, v in stats["boxes_per_class"].items()),
             "- box size, min / 5% / median / 95% / max: width "
             f"{_q(stats['box_width_px'])} px, height {_q(stats['box_height_px'])} px, "
             f"sqrt(area) {_q(stats['box_side_px'])} px = {_q(stats['box_side_relative'], digits=3)} "
             "of the image's sqrt(area)",
             f"- tiny boxes (a side < {TINY_BOX_PX} px): {stats['tiny_boxes']}; huge (> "
             f"{HUGE_BOX_FRACTION:g} of the image): {stats['huge_boxes']}; degenerate (a side <= 1 px): "
             f"{stats['degenerate_boxes']}; reaching outside the image (clipped): "
             f"{stats['outside_boxes_clipped']}; empty after clipping (dropped): {stats['empty_boxes_dropped']}"]
    if "unreadable_images" in stats:
        bad = stats["unreadable_images"]
        lines.append(f"- unreadable images: {len(bad)}"
                     + ("".join(f"\n  - {b['file_name']}: {b['reason']}" for b in bad[:10])
                        + (f"\n  - ... {len(bad) - 10} more" if len(bad) > 10 else "")))
    if settings:
        size = settings["input"]
        lines += ["", "Derived settings:", "",
                  f"- input size: short side {size['min_size']} px (max {size['max_size']}), "
                  f"x{size['scale']:g} of the images ({size['reason']})"]
        anchors = settings.get("anchors")
        if anchors:
            ratios = anchors.get("aspect_ratios", ANCHOR_RATIOS)
            lines.append(
                f"- anchors: base {anchors['base']:g} px at P3, doubling per level to P7: "
                f"{[level[0] for level in anchors['sizes']]} (x 1, 2^1/3, 2^2/3; ratios {_ratios(ratios)}); "
                f"{anchors['recall']:.1%} of the boxes have an anchor with IoU >= "
                f"{anchors['iou_threshold']:g} (mean best IoU {anchors['mean_best_iou']:.2f}; the "
                f"{anchors['current_base']:g} px base of the config with ratios {_ratios(ANCHOR_RATIOS)}: "
                f"{anchors['current_recall']:.1%})")
            if "worst_class" in anchors:
                lines.append(
                    f"- worst-covered class: {anchors['worst_class']} {anchors['worst_class_recall']:.1%} "
                    f"with these anchors; with ratios {_ratios(ANCHOR_RATIOS)}: {anchors['default_ratios_worst_class']} "
                    f"{anchors['default_ratios_worst_class_recall']:.1%}")
        crops = settings.get("crops")
        if crops:
            lines.append(f"- crops and tiles: {crops['reason']}")
        schedule = settings.get("schedule")
        if schedule:
            lines.append(
                f"- schedule: {schedule['epochs']} epochs x {schedule['images']} images / batch "
                f"{schedule['ims_per_batch']} = {schedule['iterations']} iterations (SOLVER.EPOCHS "
                f"{schedule['epochs']}; LR steps and warm-up scaled to match)"
                + (f"; not used: {schedule['overridden_by']}" if schedule.get("overridden_by") else ""))
    return lines

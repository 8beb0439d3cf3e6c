"""COCO AP / AP50 / AP75 plus the per-class AP50 that NEU-DET papers report."""
import json
import logging
import os

import numpy as np
from tabulate import tabulate

from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm

from .. import compat
from ..fileio import atomic_write_json

__all__ = [
    "DefectCOCOEvaluator",
    "format_ap_table",
    "per_class_ap50",
    "per_class_ap50_of",
    "load_ap_results",
    "RESULTS_FILE",
]

logger = logging.getLogger(__name__)

RESULTS_FILE = "ap_results.json"


def per_class_ap50(coco_eval, class_names):
    """AP at IoU 0.5 (area all, 100 dets) per class, in percent (NaN for absent classes)."""
    # precision: (iou thresholds, recall, class, area range, max dets); iou index 0 is 0.5
    precision = coco_eval.eval["precision"][0, :, :, 0, -1]
    out = {}
    for k, name in enumerate(class_names):
        p = precision[:, k]
        p = p[p > -1]
        out[name] = float(np.mean(p) * 100) if p.size else float("nan")
    return out


PER_CLASS_PREFIX = "AP50-"  # results key of a class's AP50: "AP50-<class name>"


def per_class_ap50_of(bbox):
    """``{class name: AP50}`` from a ``bbox`` results dict, in the evaluator's class order."""
    return {k[len(PER_CLASS_PREFIX):]: v for k, v in bbox.items() if k.startswith(PER_CLASS_PREFIX)}


def load_ap_results(path):
    """``{"dataset": name, "bbox": {"AP": ..., "AP50-<class>": ...}}`` as the evaluator writes
    it to ``ap_results.json``. Raises ``FileNotFoundError`` / ``ValueError`` with the path."""
    with open(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("bbox"), dict):
        raise ValueError(f"{path} has no 'bbox' results (expected the evaluator's ap_results.json)")
    return data


def format_ap_table(results):
    """A printable table of the overall metrics and the per-class AP50 of one results dict."""
    overall = [[k, f"{results[k]:.2f}"] for k in ("AP", "AP50", "AP75") if k in results]
    per_class = [[k, f"{v:.2f}"] for k, v in per_class_ap50_of(results).items()]
    text = tabulate(overall, headers=["metric", "value"], tablefmt="pipe")
    if per_class:
        text += "\n\n" + tabulate(per_class, headers=["class", "AP50"], tablefmt="pipe")
    return text


class DefectCOCOEvaluator(COCOEvaluator):
    """detectron2's :class:`COCOEvaluator` on the pure pycocotools path, adding per-class AP50.

    Results gain ``AP50-<class>`` keys and are written to ``<output_dir>/ap_results.json``.
    """

    def __init__(self, dataset_name, distributed=True, output_dir=None, per_class_ap=True):
        # detectron2 caches the ground truth it converts to COCO json by dataset *name* and
        # reuses it forever; a regenerated dataset would be scored against stale boxes.
        if output_dir and comm.is_main_process():
            stale = os.path.join(output_dir, f"{dataset_name}_coco_format.json")
            if os.path.exists(stale) and "json_file" not in MetadataCatalog.get(dataset_name).as_dict():
                os.remove(stale)
        # the fast evaluator needs detectron2's C++ extension; without it, pure pycocotools
        super().__init__(
            dataset_name, tasks=("bbox",), distributed=distributed, output_dir=output_dir,
            use_fast_impl=bool(compat.HAS_C_EXTENSION),
        )
        self._per_class_ap = per_class_ap
        self._dataset_name = dataset_name

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names)
        if coco_eval is None or class_names is None or not self._per_class_ap:
            return results
        for name, ap50 in per_class_ap50(coco_eval, class_names).items():
            results[f"{PER_CLASS_PREFIX}{name}"] = ap50
        return results

    def evaluate(self, img_ids=None):
        results = super().evaluate(img_ids)
        if results and comm.is_main_process():
            bbox = results.get("bbox", {})
            logger.info(
                "Evaluation of %s (AP, AP50 and per-class AP50, %%):\n%s",
                self._dataset_name, format_ap_table(bbox),
            )
            if self._output_dir:
                os.makedirs(self._output_dir, exist_ok=True)
                atomic_write_json(os.path.join(self._output_dir, RESULTS_FILE),
                                  {"dataset": self._dataset_name, "bbox": bbox})
        return results

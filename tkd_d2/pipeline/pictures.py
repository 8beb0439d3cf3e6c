"""Stage 5: ground truth | teacher | baseline | TKD, side by side, on a few test images."""
import json
import os

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from ..config import load_config
from ..engine import Predictor
from ..fileio import atomic_write_json
from ..visualization import (class_metadata, draw_ground_truth, draw_predictions, read_image,
                             save_png, side_by_side)
from .runner import Job
from .stages import MODELS

__all__ = ["draw_pictures", "listed_pictures", "pictures_job"]


def listed_pictures(out_dir):
    """The pictures ``out_dir``/pictures.json lists (paths), [] when there is no index."""
    try:
        with open(os.path.join(out_dir, "pictures.json")) as f:
            return [os.path.join(out_dir, p) for p in json.load(f).get("pictures", [])]
    except (OSError, json.JSONDecodeError):
        return []


def pictures_job(plan):
    """Stage 5 as a job: done when pictures.json and every picture it lists are there, newer
    than the three models, drawn with this run's settings."""
    options = plan.options
    out_dir = os.path.join(plan.out, "pictures")
    index_path = os.path.join(out_dir, "pictures.json")
    settings = {"num_images": options.num_images, "score_thresh": options.score_thresh,
                "opts": plan.eval_opts}
    if plan.teacher_given:
        settings["teacher"] = plan.dirs["teacher"]
    listed = listed_pictures(out_dir)
    return Job("pictures", f"drawing ground truth | teacher | baseline | TKD on {options.num_images} "
               "test image(s)", settings, outputs=[index_path] + listed,
               newer_than=[plan.weights[m] for m in MODELS], workdir=out_dir,
               compute=lambda: draw_pictures(plan, out_dir, index_path, settings),
               reused_text=f"{len(listed)} pictures in {out_dir}")


def draw_pictures(plan, out_dir, index_path, settings):
    """Ground truth | teacher | baseline | TKD of ``--num-images`` test images, spread over
    the test set, one PNG each in ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    cfgs = {
        "teacher": load_config(plan.configs["teacher"], plan.eval_opts_of("teacher")),
        "baseline": load_config(plan.configs["baseline"], plan.eval_opts),
    }
    cfgs["tkd"] = cfgs["baseline"]  # the distilled weights are the plain student's
    dicts = DatasetCatalog.get(plan.test_dataset)
    metadata = class_metadata(MetadataCatalog.get(plan.test_dataset).get("thing_classes", None))
    count = min(plan.options.num_images, len(dicts))
    picks = sorted({int(i) for i in np.linspace(0, len(dicts) - 1, count)}) if count else []
    predictors = {m: Predictor(cfgs[m], plan.weights[m]) for m in MODELS}
    titles = {"teacher": f"teacher {plan.backbone('teacher')}",
              "baseline": f"baseline {plan.backbone('baseline')}",
              "tkd": f"TKD {plan.backbone('tkd')}"}
    pictures = []
    for n, i in enumerate(picks):
        d = dicts[i]
        image_bgr = read_image(d["file_name"], format="BGR")
        image_rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
        panels = [("ground truth", draw_ground_truth(image_rgb, d, metadata))]
        for m in MODELS:
            instances = predictors[m](image_bgr)["instances"].to("cpu")
            panels.append((titles[m], draw_predictions(image_rgb, instances, metadata,
                                                       plan.options.score_thresh)))
        stem = os.path.splitext(os.path.basename(d["file_name"]))[0]
        path = save_png(os.path.join(out_dir, f"{n:02d}_{stem}.png"), side_by_side(panels))
        print(f"  {path}", flush=True)
        pictures.append(path)
    atomic_write_json(index_path, {"settings": settings,
                                   "pictures": [os.path.basename(p) for p in pictures]})
    return pictures

#!/usr/bin/env python
"""Look at a detection dataset before training on it, and get the settings that fit it.

    python tools/inspect_dataset.py --entry pcb_train:coco:/data/pcb/images:/data/pcb/train.json
    python tools/inspect_dataset.py --dataset neu_det_train --batch 8 --epochs 12
    python tools/inspect_dataset.py --entry mine:voc:/data/JPEGImages:/data/Annotations --classes dent scratch

Prints image sizes, boxes per class, box sizes (pixels and relative to the image), tiny /
huge / degenerate boxes, boxes reaching outside the image, unreadable images (every image is
decoded, in parallel), and the settings derived from them: input size, RetinaNet anchor
sizes covering the boxes at that size (with their recall at the matcher's IoU threshold),
and an epoch schedule in iterations; then the train_net.py overrides that apply them.
Exits 1 when an image cannot be read.
"""
import argparse
import json
import os
import shlex
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

DEFAULT_CONFIG = os.path.join(REPO, "configs", "Synthetic", "retinanet_Lite0_FPN.yaml")


def parse_args(argv=None):
    head, body = __doc__.split("\n\n", 1)
    parser = argparse.ArgumentParser(prog="inspect_dataset.py", description=head, epilog=body,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--entry", metavar="NAME:FORMAT:PATHS",
                      help="a dataset as a DATASETS.CUSTOM.ENTRIES item (NAME:coco:IMAGES:FILE.json "
                           "or NAME:voc:IMAGES:XML_DIR[:SPLIT_FILE])")
    what.add_argument("--dataset", metavar="NAME", help="a registered dataset (e.g. neu_det_train)")
    parser.add_argument("--classes", nargs="+", default=[], metavar="NAME",
                        help="VOC class names in category order")
    parser.add_argument("--config-file", default=DEFAULT_CONFIG, metavar="YAML",
                        help="the config to derive settings for (batch, matcher IoU, detector; "
                             "default configs/Synthetic/retinanet_Lite0_FPN.yaml)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of the derived schedule (default 12)")
    parser.add_argument("--batch", type=int, default=None, help="images per iteration (default: the config's)")
    parser.add_argument("--min-box-px", type=float, default=None,
                        help="input pixels the smallest boxes (5th percentile) should span (default 20)")
    parser.add_argument("--workers", type=int, default=None, help="image-check threads (default: CPU count, at most 8)")
    parser.add_argument("--no-image-check", action="store_true", help="do not decode the images")
    parser.add_argument("--json", metavar="FILE", help="also write statistics and settings as json")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from tkd_d2.errors import TKDError

    try:
        return run(args)
    except TKDError as e:
        if args.debug:
            raise
        print(f"inspect_dataset.py: error: {e}", file=sys.stderr)
        return 1


def run(args):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from tkd_d2.config import load_config
    from tkd_d2.data import parse_custom_entry
    from tkd_d2.data.inspection import (DEFAULT_EPOCHS, MIN_BOX_INPUT_PX, derive_settings,
                                        format_inspection, inspect_dataset, settings_overrides)
    from tkd_d2.modeling import family_of

    opts = []
    name = args.dataset
    if args.entry:
        name = parse_custom_entry(args.entry)["name"]
        opts += ["DATASETS.CUSTOM.ENTRIES", repr([args.entry]), "DATASETS.CUSTOM.CLASSES", repr(args.classes)]
    cfg = load_config(args.config_file, opts + ["DATASETS.TRAIN", repr((name,)), "DATASETS.TEST", "()"])
    dicts = DatasetCatalog.get(name)
    classes = MetadataCatalog.get(name).get("thing_classes", None)
    stats, arrays = inspect_dataset(dicts, classes, name, check_images=not args.no_image_check,
                                    workers=args.workers)
    family = family_of(cfg)
    retinanet = family.name == "retinanet"
    sizes = cfg.MODEL.ANCHOR_GENERATOR.SIZES
    settings = derive_settings(
        stats, arrays, anchors=retinanet,
        epochs=args.epochs if args.epochs is not None else DEFAULT_EPOCHS,
        ims_per_batch=args.batch or cfg.SOLVER.IMS_PER_BATCH,
        iou_threshold=cfg.MODEL.RETINANET.IOU_THRESHOLDS[-1],
        min_box_px=args.min_box_px or MIN_BOX_INPUT_PX,
        current_base=float(sizes[0][0]) if len(sizes) == 5 else 16,
    )
    print("\n".join(format_inspection(stats, settings)))
    overrides = settings_overrides(settings) + ["SOLVER.EPOCHS", str(settings["schedule"]["epochs"])]
    if args.batch:
        overrides += ["SOLVER.IMS_PER_BATCH", str(args.batch)]
    if not retinanet:
        print(f"- anchors: none to derive ({family.label} is anchor-free)")
    print("\ntrain_net.py overrides for these settings:\n  " + shlex.join(overrides))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"statistics": stats, "settings": settings, "overrides": overrides}, f, indent=2)
    unreadable = stats.get("unreadable_images") or []
    if unreadable:
        print(f"inspect_dataset.py: error: {len(unreadable)} image(s) of {name} cannot be read "
              f"(first: {unreadable[0]['file_name']}: {unreadable[0]['reason']})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

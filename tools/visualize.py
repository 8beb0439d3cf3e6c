#!/usr/bin/env python
"""Look at what a trained detector sees: draw its predictions on every image of a folder.

    python tools/visualize.py --config-file configs/NEU-DET/retinanet_R_18_FPN.yaml \\
        --weights output/neu_det/tkd_R_50_to_R_18/model_final.pth \\
        --input datasets/NEU-DET/IMAGES --output output/vis --score-thresh 0.3

Each input image gives ``<output>/<image name>.png`` with the boxes scoring at least
--score-thresh, labelled with class name and score. Class names come from the metadata of
the config's first test dataset (DATASETS.TEST[0]) unless --dataset names another one.
A TKD config (or the plain student config) draws a distilled checkpoint. Trailing
``KEY VALUE`` pairs (or --opts KEY VALUE ...) override the config, as in train_net.py.
"""
import argparse
import logging
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")  # e.g. MODEL.RETINANET.SCORE_THRESH_TEST


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", required=True, metavar="CFG", help="the model's config yaml")
    parser.add_argument("--weights", required=True, metavar="PTH", help="checkpoint (.pth / .pkl)")
    parser.add_argument("--input", required=True, nargs="+", metavar="DIR_OR_FILE",
                        help="image files and/or folders (every image directly inside)")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the PNGs")
    parser.add_argument("--score-thresh", type=float, default=0.3,
                        help="draw boxes scoring at least this (default 0.3)")
    parser.add_argument("--dataset", default=None, metavar="NAME",
                        help="registered dataset whose class names label the boxes "
                             "(default: the config's DATASETS.TEST[0])")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help="config overrides")
    args, extra = parser.parse_known_args(argv)
    if any(e.startswith("--") for e in extra):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    # `--input DIR KEY VALUE`: --input takes several paths, so it swallowed the overrides.
    for i, item in enumerate(args.input):
        if CONFIG_KEY.match(item) and not os.path.exists(item):
            args.input, extra = args.input[:i], args.input[i:] + extra
            break
    if not args.input:
        parser.error("--input needs at least one image file or folder")
    args.opts = list(extra) + list(args.opts)
    if len(args.opts) % 2:
        parser.error(f"config overrides must be KEY VALUE pairs, got {args.opts}")
    return args


def output_names(paths):
    """``<stem>.png`` per input; inputs from different folders with the same stem get a
    numbered suffix instead of overwriting each other."""
    names, seen = [], {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        count = seen.get(stem, 0)
        seen[stem] = count + 1
        names.append(f"{stem}.png" if count == 0 else f"{stem}_{count}.png")
    return names


def main(argv=None):
    args = parse_args(argv)
    import tkd_d2  # noqa: F401  (detectron2 compatibility + registrations, before detectron2)
    from detectron2.data import MetadataCatalog
    from detectron2.utils.logger import setup_logger

    from tkd_d2.config import load_config
    from tkd_d2.data import assert_datasets_registered
    from tkd_d2.engine import Predictor
    from tkd_d2.errors import TKDError
    from tkd_d2.visualization import (
        VisualizationError, class_metadata, draw_predictions, list_images, read_image, save_png,
    )

    setup_logger(name="tkd_d2", abbrev_name="tkd_d2")
    try:
        images = list_images(args.input)
        cfg = load_config(args.config_file, args.opts, student=True)
        dataset = args.dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None)
        class_names = None
        if dataset:
            if args.dataset:
                try:
                    assert_datasets_registered([dataset])
                except KeyError as e:
                    raise VisualizationError(f"--dataset {dataset}: {e}") from None
            class_names = MetadataCatalog.get(dataset).get("thing_classes", None)
        predictor = Predictor(cfg, args.weights)
        if not class_names:
            class_names = predictor.checkpoint_classes  # stored with the weights by training
            if not class_names:
                logging.getLogger("tkd_d2").warning(
                    "no class names (dataset %s has none); boxes are labelled with class ids",
                    dataset,
                )
        metadata = class_metadata(class_names)
        os.makedirs(args.output, exist_ok=True)
        for path, name in zip(images, output_names(images)):
            image_bgr = read_image(path, format="BGR")
            instances = predictor(image_bgr)["instances"].to("cpu")
            shown = int((instances.scores >= args.score_thresh).sum()) if instances.has("scores") else len(instances)
            picture = draw_predictions(image_bgr[:, :, ::-1], instances, metadata, args.score_thresh)
            out = save_png(os.path.join(args.output, name), picture)
            print(f"{path}: {shown} detection(s) with score >= {args.score_thresh:g} -> {out}",
                  flush=True)
    except TKDError as e:
        sys.exit(f"visualize.py: error: {e}")
    print(f"Drew {len(images)} image(s) into {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

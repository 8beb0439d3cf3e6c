#!/usr/bin/env python
"""Export a trained detector as one graph (normalisation, backbone, FPN, head, decoding, NMS).

    python tools/export.py --config-file configs/NEU-DET/tkd_fcos_Lite2_to_Lite0.yaml \\
        --format onnx --output output/deploy/fcos_Lite0 \\
        MODEL.WEIGHTS output/NEU-DET/tkd_fcos_Lite2_to_Lite0/model_final.pth

A TKD config (or the student's plain config) exports the student alone. The folder gets
``model.onnx`` (``--format torchscript``: ``model.ts``), ``deploy.json`` (classes, input and
size rules, thresholds) and ``predictor.py`` (run it without detectron2:
``OnnxPredictor(DIR)(cv2.imread(path))``). The graph takes one uint8 (H, W, 3) BGR image of
any size, already resized to the config's test size, and returns boxes, scores, classes.
``--sample-image`` is the image the trace runs on (default: a grey image of the test size).
Trailing ``KEY VALUE`` pairs override the config, as in train_net.py.
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", required=True, metavar="CFG",
                        help="the model's config yaml (plain or TKD)")
    parser.add_argument("--format", default="onnx", choices=("onnx", "torchscript"))
    parser.add_argument("--output", required=True, metavar="DIR", help="export folder")
    parser.add_argument("--sample-image", default=None, metavar="IMG",
                        help="image to trace on (default: a grey image of the test size)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help="config overrides, e.g. MODEL.WEIGHTS model_final.pth")
    args = parser.parse_args(argv)
    if len(args.opts) % 2:
        parser.error(f"config overrides must be KEY VALUE pairs, got {args.opts}")
    return args


def main(argv=None):
    args = parse_args(argv)
    from detectron2.utils.logger import setup_logger

    from tkd_d2.config import load_config
    from tkd_d2.deploy import export_model

    setup_logger(name="tkd_d2", abbrev_name="tkd")
    logging.getLogger("tkd_d2").setLevel(logging.INFO)
    cfg = load_config(args.config_file, args.opts, device="cpu")
    info = export_model(cfg, args.output, fmt=args.format, sample_image=args.sample_image,
                        source_config=os.path.abspath(args.config_file))
    print(f"exported {info['meta_architecture']} ({len(info['classes'])} classes) to "
          f"{info['model_path']}")
    return info


if __name__ == "__main__":
    from tkd_d2.errors import TKDError

    try:
        main()
    except TKDError as e:
        sys.exit(f"export.py: error: {e}")

#!/usr/bin/env python
"""Train or evaluate a defect detector (RetinaNet / FCOS, plain or TKD-distilled).

    python train_net.py --config-file configs/NEU-DET/retinanet_R_50_FPN.yaml
    python train_net.py --config-file configs/NEU-DET/tkd_retinanet_R_50_to_R_18.yaml \
        MODEL.TKD.TEACHER.WEIGHTS output/neu_det/retinanet_R_50/model_final.pth
    python train_net.py --eval-only --config-file configs/NEU-DET/retinanet_R_18_FPN.yaml \
        MODEL.WEIGHTS output/neu_det/tkd_R_50_to_R_18/model_final.pth
    python train_net.py --resume --config-file ...   # continue from last_checkpoint
    python train_net.py --eval-only --exported output/deploy/fcos_Lite0 \
        --config-file configs/NEU-DET/fcos_Lite0_FPN.yaml   # an export (tools/export.py)

Trailing ``KEY VALUE`` pairs override the config. Runs on the CPU when no GPU is present;
``--num-gpus N`` starts N processes (one per GPU, or gloo processes on a CPU machine).
The full config goes to OUTPUT_DIR/config.yaml and OUTPUT_DIR/log.txt; the console shows a
summary. A mistake in the input (config, data) stops with one line; ``--debug`` adds its
traceback (always in log.txt). After training, DATASETS.TEST is evaluated (detectron2's
habit): ``DATASETS.TEST '()'`` skips it.
"""
import tkd_d2  # noqa: F401  (adapts detectron2 and registers everything, before detectron2 use)
from tkd_d2.train import argument_parser, main, run, setup  # noqa: F401  (detectron2's names)

if __name__ == "__main__":
    run(prog="train_net.py")

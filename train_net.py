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
"""
import logging
import sys

import tkd_d2  # noqa: F401  (adapts detectron2 and registers everything, before detectron2 use)
from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from tkd_d2.checkpoint import SafeCheckpointer
from tkd_d2.config import load_config, student_cfg
from tkd_d2.engine import Trainer, launch
from tkd_d2.errors import TKDError


def setup(args):
    """Build the frozen config for ``args`` and register the datasets it names."""
    cfg = load_config(args.config_file, args.opts)
    default_setup(cfg, args)
    # detectron2 sets up its own loggers only; the project's messages go to the same log.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="tkd_d2", abbrev_name="tkd")
    return cfg


def main(args):
    cfg = setup(args)
    if args.exported:
        # the exported graph (ONNX Runtime / TorchScript) through the same loader and evaluator
        from tkd_d2.deploy import ExportedModelAdapter

        results = Trainer.test(cfg, ExportedModelAdapter.from_config(args.exported, cfg))
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    if args.eval_only:
        # a TKD config evaluates its student: no teacher needed
        model = Trainer.build_model(student_cfg(cfg))
        checkpointer = SafeCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
        if args.resume and checkpointer.has_checkpoint():
            checkpointer.load_checked(checkpointer.get_checkpoint_file(), what="--resume checkpoint")
        else:
            checkpointer.load_checked(cfg.MODEL.WEIGHTS, what="MODEL.WEIGHTS (the checkpoint --eval-only evaluates)")
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def argument_parser():
    parser = default_argument_parser()
    parser.add_argument("--exported", metavar="DIR", default="",
                        help="with --eval-only: evaluate the export in DIR (tools/export.py) "
                             "instead of MODEL.WEIGHTS")
    return parser


def run(argv=None):
    args = argument_parser().parse_args(argv)
    if args.exported and not args.eval_only:
        raise TKDError("--exported DIR evaluates an export: use it with --eval-only")
    logging.getLogger("tkd_d2").info("Command line arguments: %s", args)
    return launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    try:
        run()
    except TKDError as e:
        sys.exit(f"train_net.py: error: {e}")

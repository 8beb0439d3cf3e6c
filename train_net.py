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
import sys
import traceback

import tkd_d2  # noqa: F401  (adapts detectron2 and registers everything, before detectron2 use)
from detectron2.engine import default_argument_parser
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from tkd_d2.checkpoint import SafeCheckpointer
from tkd_d2.config import apply_epoch_schedule, load_config, student_cfg
from tkd_d2.engine import Trainer, launch, log_traceback_to_file, setup_run
from tkd_d2.errors import TKDError


def setup(args):
    """Build the frozen config for ``args`` and register the datasets it names."""
    cfg = load_config(args.config_file, args.opts)
    if not args.eval_only:
        cfg = apply_epoch_schedule(cfg)  # SOLVER.EPOCHS > 0: MAX_ITER from the data's size
    setup_run(cfg, args)
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
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an input error too (it is always in log.txt)")
    return parser


def run(argv=None):
    args = argument_parser().parse_args(argv)
    try:
        return _launch(args)
    except TKDError as e:
        log_traceback_to_file(e)
        if args.debug:
            traceback.print_exc()
        sys.exit(f"train_net.py: error: {e}")


def _launch(args):
    if args.exported and not args.eval_only:
        raise TKDError("--exported DIR evaluates an export: use it with --eval-only")
    return launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    run()

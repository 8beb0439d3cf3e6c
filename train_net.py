#!/usr/bin/env python
"""Train or evaluate a defect detector (RetinaNet / FCOS, plain or TKD-distilled).

    python train_net.py --config-file configs/NEU-DET/retinanet_R_50_FPN.yaml
    python train_net.py --config-file configs/NEU-DET/tkd_retinanet_R_50_to_R_18.yaml \
        MODEL.TKD.TEACHER.WEIGHTS output/neu_det/retinanet_R_50/model_final.pth
    python train_net.py --eval-only --config-file configs/NEU-DET/retinanet_R_18_FPN.yaml \
        MODEL.WEIGHTS output/neu_det/tkd_R_50_to_R_18/model_final.pth
    python train_net.py --resume --config-file ...   # continue from last_checkpoint

Trailing ``KEY VALUE`` pairs override the config. Runs on the CPU when no GPU is present;
``--num-gpus N`` starts N processes (one per GPU, or gloo processes on a CPU machine).
"""
import difflib
import logging
import os
import sys

import torch

import tkd_d2  # noqa: F401  (adapts detectron2 and registers everything, before detectron2 use)
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from tkd_d2 import add_tkd_config
from tkd_d2.data import assert_datasets_registered, register_from_cfg
from tkd_d2.engine import SafeCheckpointer, Trainer, launch


class ConfigError(ValueError):
    """A config file or override is wrong; the message says which key and what to do."""


def _all_keys(node, prefix=""):
    for k, v in node.items():
        if hasattr(v, "items"):
            yield from _all_keys(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def _explain_key_error(cfg, err, source):
    text = str(err.args[0]) if err.args else str(err)
    key = text.split(":", 1)[-1].strip() if "Non-existent" in text else text
    hint = difflib.get_close_matches(key, list(_all_keys(cfg)), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(hint)}?" if hint else ""
    return ConfigError(
        f"Config key {key} (from {source}) does not exist.{hint} The project's keys are listed, "
        "with comments, in tkd_d2/config.py; detectron2's in detectron2/config/defaults.py."
    )


def setup(args):
    """Build the frozen config for ``args`` and register the datasets it names."""
    cfg = get_cfg()
    add_tkd_config(cfg)
    if not os.path.isfile(args.config_file):
        raise ConfigError(f"--config-file {args.config_file}: file not found")
    try:
        cfg.merge_from_file(args.config_file)
    except KeyError as e:
        raise _explain_key_error(cfg, e, args.config_file) from None
    try:
        cfg.merge_from_list(args.opts)
    except KeyError as e:
        raise _explain_key_error(cfg, e, "the command line") from None
    except AssertionError as e:
        if "Non-existent" in str(e):
            raise _explain_key_error(cfg, e, "the command line") from None
        raise ConfigError(f"Command-line overrides must be KEY VALUE pairs: {e}") from None
    if not torch.cuda.is_available() and cfg.MODEL.DEVICE != "cpu":
        cfg.MODEL.DEVICE = "cpu"
    register_from_cfg(cfg)
    assert_datasets_registered(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    cfg.freeze()
    default_setup(cfg, args)
    # detectron2 sets up its own loggers only; the project's messages go to the same log.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="tkd_d2", abbrev_name="tkd")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        if not cfg.MODEL.WEIGHTS and not args.resume:
            raise ConfigError("--eval-only needs MODEL.WEIGHTS (the checkpoint to evaluate)")
        if cfg.MODEL.WEIGHTS and not os.path.isfile(cfg.MODEL.WEIGHTS):
            raise ConfigError(f"MODEL.WEIGHTS: file not found: {cfg.MODEL.WEIGHTS}")
        SafeCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def run(argv=None):
    args = default_argument_parser().parse_args(argv)
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
    except ConfigError as e:
        sys.exit(f"train_net.py: error: {e}")

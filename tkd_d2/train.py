"""The training and evaluation entry: ``train_net.py`` and ``python -m tkd_d2.train``.

    python -m tkd_d2.train --config-file configs/NEU-DET/retinanet_R_50_FPN.yaml
    python -m tkd_d2.train --eval-only --config-file configs/NEU-DET/retinanet_R_18_FPN.yaml \
        MODEL.WEIGHTS output/neu_det/tkd_R_50_to_R_18/model_final.pth

detectron2's ``default_argument_parser`` plus ``--exported DIR`` (with ``--eval-only``: evaluate
an export) and ``--debug`` (print an input error's traceback). :func:`main` is detectron2's
``train_net.main``; :func:`run` parses, launches one process per GPU and turns a
:class:`~tkd_d2.errors.TKDError` into one line on stderr.
"""
import os
import sys
import traceback

from detectron2.engine import default_argument_parser
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from .checkpoint import SafeCheckpointer
from .config import apply_epoch_schedule, load_config, student_cfg
from .errors import TKDError
from .engine.launch import launch
from .engine.setup import log_traceback_to_file, setup_run
from .engine.trainer import Trainer

__all__ = ["argument_parser", "main", "run", "setup"]

MODULE_PROG = "python -m tkd_d2.train"


def setup(args):
    """Build the frozen config for ``args`` and register the datasets it names."""
    cfg = load_config(args.config_file, args.opts)
    if not args.eval_only:
        cfg = apply_epoch_schedule(cfg)  # SOLVER.EPOCHS > 0: MAX_ITER from the data's size
    setup_run(cfg, args)
    return cfg


def main(args):
    """Train (or resume), or with ``--eval-only`` evaluate, as ``args`` say."""
    cfg = setup(args)
    if args.exported:
        # the exported graph (ONNX Runtime / TorchScript) through the same loader and evaluator;
        # the one reference to deploy/, made only when an export is evaluated
        from .deploy import ExportedModelAdapter

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


def argument_parser(prog=None):
    parser = default_argument_parser()
    if prog:
        parser.prog = prog
    parser.add_argument("--exported", metavar="DIR", default="",
                        help="with --eval-only: evaluate the export in DIR (tools/export.py) "
                             "instead of MODEL.WEIGHTS")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an input error too (it is always in log.txt)")
    return parser


def run(argv=None, prog=None):
    """The command line: parse ``argv``, launch :func:`main`; an input error exits with one
    line ``<prog>: error: ...`` (``prog``: the script's name by default)."""
    prog = prog or os.path.basename(sys.argv[0])
    args = argument_parser(prog).parse_args(argv)
    try:
        if args.exported and not args.eval_only:
            raise TKDError("--exported DIR evaluates an export: use it with --eval-only")
        return launch(main, args.num_gpus, num_machines=args.num_machines,
                      machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))
    except TKDError as e:
        log_traceback_to_file(e)
        if args.debug:
            traceback.print_exc()
        sys.exit(f"{prog}: error: {e}")


if __name__ == "__main__":
    run(prog=MODULE_PROG)

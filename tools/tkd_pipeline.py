#!/usr/bin/env python
"""Distil a small defect detector end to end, in one command.

    python tools/tkd_pipeline.py                          # synthetic defects, RetinaNet
    python tools/tkd_pipeline.py --dataset neu_det --detector fcos
    python tools/tkd_pipeline.py --tiny --output /tmp/try # a 1-minute smoke run
    python tools/tkd_pipeline.py --dataset custom \
        --train pcb_train:coco:/data/pcb/images:/data/pcb/train.json \
        --test pcb_test:coco:/data/pcb/images:/data/pcb/test.json   # your own data

Stages (each prints "[stage k/6] ..."; training streams detectron2's own log with its ETA):

  1. data       generate the synthetic set (seeded, cached under $DETECTRON2_DATASETS),
                check that NEU-DET is in place, or read the --train / --test entries
                (custom: every image decoded; input size, anchors and an epoch schedule
                derived from the training data unless --no-derive; see
                tools/inspect_dataset.py)
     plan       time a few training steps of each model and of inference, then print
                every stage's planned wall time and the total; with --budget, the
                epochs that fit it (report.md lists planned next to actual)
  2. teacher    train the teacher (ImageNet-pretrained EfficientNet-Lite2, or R-50 from
                scratch with --backbones resnet), or take a trained one (--teacher DIR)
  3. baseline   train the student (Lite0, or R-18) without KD
     tkd        train the student with TKD from the teacher (the baseline's schedule and seed)
  4. eval_*     evaluate all three with `train_net.py --eval-only` (the TKD checkpoint with
                the plain student config)
  5. pictures   ground truth | teacher | baseline | TKD, side by side, for --num-images images
  6. speed      parameters and CPU images/s (batch 1) of teacher and student
     deploy     export the TKD student to ONNX (deploy/onnx), its AP through the same
                evaluator (eval_deploy/) and its ONNX Runtime images/s
     report     report.md + curves.png from the files the runs wrote

Every train_net.py command is printed before it runs, and its output is also saved in
OUTPUT/logs/<stage>.log. Stage outputs go under --output: teacher/, baseline/, tkd/,
eval_teacher/, eval_baseline/, eval_tkd/, pictures/, deploy/, eval_deploy/, curves.png,
report.md, and stages.json (status, wall time and command of every stage).

Rerunning the same command reuses every finished stage (found from its outputs:
model_final.pth, ap_results.json, ...), resumes an interrupted training from its
last_checkpoint, and redoes what depends on a stage that was redone. --redo STAGE (or all)
starts stages over. A stage whose settings changed since it ran is not silently reused: the
pipeline stops and asks for --redo or another --output.
"""
import argparse
import os
import signal
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

try:
    from tkd_d2.errors import TKDError
    from tkd_d2.pipeline import (BACKBONE_PAIRS, DATASET_CONFIG_DIRS, DEFAULT_BACKBONES, DETECTORS,
                                 REDO_CHOICES, TINY_MAX_ITER,
                                 Pipeline, PipelineOptions)
except ImportError as e:
    if __name__ != "__main__":
        raise
    sys.exit(f"tkd_pipeline.py: error: cannot import tkd_d2 ({type(e).__name__}: {e}). "
             "Install the project (see setup.sh) and run with its Python.")


def parse_args(argv=None):
    """The command line as :class:`tkd_d2.pipeline.PipelineOptions`, defaults filled in."""
    doc_head, doc_body = __doc__.split("\n\n", 1)
    parser = argparse.ArgumentParser(
        prog="tkd_pipeline.py",
        description=doc_head,
        epilog=doc_body,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", choices=sorted(DATASET_CONFIG_DIRS), default="synthetic",
                        help="synthetic (generated, default), neu_det ($DETECTRON2_DATASETS/NEU-DET) "
                             "or custom (your own data: --train and --test)")
    parser.add_argument("--train", action="append", default=[], metavar="NAME:FORMAT:PATHS",
                        help="--dataset custom: a training set, as a DATASETS.CUSTOM.ENTRIES item: "
                             "NAME:coco:IMAGES_DIR:FILE.json or NAME:voc:IMAGES_DIR:XML_DIR[:SPLIT_FILE] "
                             "(repeat for several)")
    parser.add_argument("--test", action="append", default=[], metavar="NAME:FORMAT:PATHS",
                        help="--dataset custom: the set to evaluate on, in the same form (the first "
                             "is evaluated)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="--dataset custom: epochs of the derived schedule (default 12; "
                             "--max-iter overrides it)")
    parser.add_argument("--no-derive", dest="derive", action="store_false",
                        help="--dataset custom: keep the configs' input size, anchors and schedule "
                             "instead of deriving them from the data")
    parser.add_argument("--classes", nargs="+", default=[], metavar="NAME",
                        help="--dataset custom with VOC entries: the class names in category order "
                             "(COCO files name their own)")
    parser.add_argument("--detector", choices=DETECTORS, default="retinanet",
                        help="detector family of teacher and students (default retinanet)")
    parser.add_argument("--backbones", choices=sorted(BACKBONE_PAIRS), default=DEFAULT_BACKBONES,
                        help="teacher -> student backbones: lite = ImageNet-pretrained EfficientNet-Lite2 "
                             "-> Lite0, resnet = R-50 -> R-18 from scratch (default "
                             f"{DEFAULT_BACKBONES})")
    parser.add_argument("--output", default=None, metavar="DIR",
                        help="output folder (default output/pipeline_<dataset>_<detector>)")
    parser.add_argument("--num-images", type=int, default=6, metavar="N",
                        help="test images drawn side by side (default 6)")
    parser.add_argument("--score-thresh", type=float, default=0.3,
                        help="boxes drawn in the pictures score at least this (default 0.3)")
    parser.add_argument("--max-iter", type=int, default=None, metavar="N",
                        help="train every model for N iterations (SOLVER.STEPS, SOLVER.WARMUP_ITERS "
                             "and MODEL.TKD.WARMUP_ITERS are scaled to match)")
    parser.add_argument("--budget", default=None, metavar="DURATION",
                        help="end the whole run within DURATION (90s, 45m, 2h, 1h30m): a timing "
                             "probe measures each model's step and the plan picks the epochs that "
                             "fit (--max-iter or SOLVER.MAX_ITER in --opts win over it)")
    parser.add_argument("--teacher-epochs", type=float, default=1.0, metavar="R",
                        help="the teacher trains R times the students' epochs (default 1.0; both "
                             "students always train the same): with --budget inside the budget, "
                             "else R times the iterations it would train (--max-iter, the derived "
                             "schedule or its config's SOLVER.MAX_ITER)")
    parser.add_argument("--probe-iters", type=int, nargs=2, default=None, metavar=("WARMUP", "TIMED"),
                        help="training steps of each model the plan's timing probe runs (default "
                             "2 3; --tiny 0 1)")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke-test scale: 16 train / 8 test synthetic images of 128 px, "
                             f"batch 2, no loader workers, {TINY_MAX_ITER} iterations unless "
                             "--max-iter, short speed measurement")
    parser.add_argument("--seed", type=int, default=None,
                        help="SEED of every training (default: the student config's SEED, so "
                             "baseline and TKD student share it)")
    parser.add_argument("--redo", action="append", default=[], metavar="STAGE",
                        help=f"start STAGE over, and what depends on it (one of {', '.join(REDO_CHOICES)}; "
                             "repeat or comma-separate for several)")
    parser.add_argument("--speed-iters", type=int, nargs=2, default=None, metavar=("WARMUP", "TIMED"),
                        help="speed measurement iterations (default 5 20; --tiny 1 3)")
    parser.add_argument("--teacher", default=None, metavar="DIR",
                        help="distil from a teacher trained before: the OUTPUT_DIR of its training "
                             "(config.yaml + model_final.pth, e.g. an earlier run's OUTPUT/teacher); "
                             "it is evaluated and used as it is, not trained, and --budget goes to "
                             "the students")
    parser.add_argument("--teacher-config", default=None, metavar="YAML",
                        help="teacher config (default from --backbones, e.g. configs/<dataset>/<detector>_Lite2_FPN.yaml)")
    parser.add_argument("--student-config", default=None, metavar="YAML",
                        help="plain student config (default from --backbones, e.g. configs/<dataset>/<detector>_Lite0_FPN.yaml)")
    parser.add_argument("--tkd-config", default=None, metavar="YAML",
                        help="TKD student config (default from --backbones, e.g. configs/<dataset>/tkd_<detector>_Lite2_to_Lite0.yaml)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help="config overrides passed to every train_net.py call (last option)")
    args = parser.parse_args(argv)
    try:
        return PipelineOptions(**vars(args)).resolved()
    except TKDError as e:
        parser.error(str(e))


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None):
    options = parse_args(argv)
    # A `kill` is handled like Ctrl-C: the running stage is recorded as interrupted (with
    # its time so far) and its train_net.py is stopped.
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    # One dataset root, absolute, for this process and every train_net.py it starts (they
    # run from the project root, so a relative root would point elsewhere).
    os.environ["DETECTRON2_DATASETS"] = os.path.abspath(
        os.path.expanduser(os.environ.get("DETECTRON2_DATASETS", "datasets"))
    )
    try:
        # the repository's train_net.py (the library's entry, tkd_d2.train, behind a
        # thin script): the commands it prints and the report lists run from the project root
        Pipeline(options, project_root=REPO, written_by="tools/tkd_pipeline.py",
                 entry=[sys.executable, os.path.join(REPO, "train_net.py")]).run()
    except TKDError as e:
        print(f"\ntkd_pipeline.py: error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ntkd_pipeline.py: interrupted. Run the same command again to resume "
              "(finished stages are reused, training continues from its last checkpoint).",
              file=sys.stderr, flush=True)
        return 128 + signal.SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(main())

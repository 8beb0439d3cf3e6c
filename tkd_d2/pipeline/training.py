"""Stages 1-4 as jobs of the stage model: the data, the trainings, the evaluations.

Trainings and evaluations run the library's entry (:mod:`tkd_d2.train`, by default
``python -m tkd_d2.train``) in a subprocess; :func:`train_job` and :func:`eval_job` are
also what ``benchmarks/bench_accuracy.py`` runs.
"""
import os
import sys
import time

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..config import load_config
from ..data import check_images, synthetic_dataset_cached
from .options import CUSTOM
from .runner import Job, StageError, now

__all__ = ["ENTRY_MODULE", "entry_command", "eval_job", "prepare_data", "run_data_stage", "train_job"]

ENTRY_MODULE = "tkd_d2.train"


def entry_command():
    """The training / evaluation program: this Python running the library's entry."""
    return [sys.executable, "-m", ENTRY_MODULE]


# Overrides that only change inference: the reuse rule leaves them out of a training's
# settings, so a changed tiling re-runs the evaluations and keeps the trained models.
INFERENCE_ONLY_KEYS = ("TEST.TILE.",)


def training_settings(settings):
    """A training job's settings as the reuse rule compares them: its opts (key, value
    pairs) without the inference-only keys."""
    opts = list(settings.get("opts", []))
    kept = [x for k, v in zip(opts[::2], opts[1::2]) if not str(k).startswith(INFERENCE_ONLY_KEYS)
            for x in (k, v)]
    return {**settings, "opts": kept}


def train_job(name, title, entry, config, opts, out_dir, precondition=None):
    """Train ``config`` with ``opts`` into ``out_dir`` (``OUTPUT_DIR``); an interrupted training
    continues from its last checkpoint. ``entry``: the program (:func:`entry_command`).
    The reuse rule compares its settings without :data:`INFERENCE_ONLY_KEYS`."""
    opts = list(opts) + ["OUTPUT_DIR", out_dir]
    return Job(name, title, settings={"config": config, "opts": opts},
               settings_key=training_settings,
               outputs=[os.path.join(out_dir, "model_final.pth")], workdir=out_dir,
               command=[*entry, "--config-file", config, *opts],
               checkpoint=os.path.join(out_dir, "last_checkpoint"),
               resume_command=[*entry, "--config-file", config, "--resume", *opts],
               # nothing of an attempt without a checkpoint survives; neither should its curves
               leftovers=[os.path.join(out_dir, "metrics.json")],
               precondition=precondition)


def eval_job(name, title, entry, config, opts, weights, out_dir, results):
    """Evaluate ``weights`` with ``config`` (``--eval-only``) into ``out_dir``; done when the
    evaluator's ``results`` file is there and newer than the weights."""
    opts = list(opts) + ["MODEL.WEIGHTS", weights, "OUTPUT_DIR", out_dir]
    return Job(name, title, settings={"config": config, "opts": opts}, outputs=[results],
               newer_than=[weights], workdir=out_dir,
               command=[*entry, "--eval-only", "--config-file", config, *opts])


def run_data_stage(runner, plan):
    """Stage 1 (always run: the synthetic set's cache and the custom images' check are
    its own reuse); records whether data were generated."""
    name = "data"
    runner.header(name, f"preparing the {plan.options.dataset_label()} dataset")
    start = time.perf_counter()
    try:
        generated = runner.in_process(name, lambda: prepare_data(plan))
    except StageError:
        runner.status.update(name, status="failed",
                             log=os.path.relpath(runner.log_path(name), runner.out))
        raise
    if generated or runner.status.get(name).get("status") != "done":
        runner.status.update(name, status="done", seconds=time.perf_counter() - start,
                             finished=now(), note="generated" if generated else "already cached")


def prepare_data(plan):
    """Check every model's overrides, then register, generate or read the datasets (and derive
    a custom set's settings); returns whether a synthetic set was generated."""
    plan.trained_configs()  # a bad key in --opts fails here, before any training
    cfg = load_config(plan.configs["baseline"], plan.eval_opts)
    plan.test_dataset = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None
    if not plan.test_dataset:
        raise StageError(f"{plan.configs['baseline']} has no DATASETS.TEST to evaluate on")
    generated = False
    custom = plan.options.dataset == CUSTOM
    train_dicts = []
    for dataset in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        folder = MetadataCatalog.get(dataset).get("dirname", None) or \
            MetadataCatalog.get(dataset).get("json_file", None)
        cached = synthetic_dataset_cached(dataset)  # None: not a synthetic set
        start = time.perf_counter()
        dicts = DatasetCatalog.get(dataset)
        what = "read" if cached is None else ("reused cached" if cached else "generated")
        if custom:  # the user's images: every one decoded now, not mid-training
            check_images(dicts, dataset)
            what += ", every image decodes"
        if dataset in cfg.DATASETS.TRAIN:
            train_dicts += dicts
        generated |= cached is False
        print(f"  {dataset}: {len(dicts)} images ({what}, {folder}) "
              f"in {time.perf_counter() - start:.1f} s", flush=True)
    if custom and plan.options.derive:
        plan.derive_from(cfg, train_dicts)
        print("  " + "\n  ".join(line for line in plan.inspection if line), flush=True)
    return generated

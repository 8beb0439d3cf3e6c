"""A run's logging and setup: detectron2's ``default_setup`` with a quiet console.

The environment report, the config file, the full config (plain, no colour codes) and the
model go to ``OUTPUT_DIR/log.txt`` only (and the config to ``OUTPUT_DIR/config.yaml``); the
console gets a few summary lines. A user's mistake (:class:`~tkd_d2.errors.TKDError`) is one
line on the console; its traceback goes to the log file (or the console with ``--debug``).
"""
import logging
import os
import sys
import traceback

import torch
from detectron2.utils import comm
from detectron2.utils.collect_env import collect_env_info
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from ..errors import TKDError
from .allocator import ENV_VAR, keep_freed_memory

__all__ = ["FILE_ONLY", "setup_run", "config_summary", "log_traceback_to_file"]

# logger.info(..., extra=FILE_ONLY): the record goes to the log file, not the console
FILE_ONLY = {"file_only": True}
LOGGERS = (("fvcore", None), ("detectron2", "d2"), ("tkd_d2", "tkd"))


class _ConsoleFilter(logging.Filter):
    """Keeps the long records (config dump, model, a user error's traceback) off the console."""

    def filter(self, record):
        if getattr(record, "file_only", False):
            return False
        if record.exc_info and isinstance(record.exc_info[1], TKDError):
            return False  # the command line prints its one-line message
        message = record.msg if isinstance(record.msg, str) else ""
        # DefaultTrainer logs the whole model repr (hundreds of lines)
        return not message.startswith("Model:\n")


def _console_handlers(logger):
    return [h for h in logger.handlers
            if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (sys.stdout, sys.stderr)]


def _file_handlers(logger):
    return [h for h in logger.handlers if h not in _console_handlers(logger)]


def setup_loggers(output_dir, rank=0):
    """detectron2's loggers (and the project's) to the console and ``output_dir/log.txt``,
    the console filtered (see :class:`_ConsoleFilter`)."""
    for name, abbrev in LOGGERS:
        logger = setup_logger(output_dir, distributed_rank=rank, name=name, abbrev_name=abbrev)
        for handler in _console_handlers(logger):
            if not any(isinstance(f, _ConsoleFilter) for f in handler.filters):
                handler.addFilter(_ConsoleFilter())
    return logging.getLogger("tkd_d2")


def config_summary(cfg, config_file=""):
    """A few lines saying what this run trains or evaluates, on what, for how long."""
    model, solver, inp = cfg.MODEL, cfg.SOLVER, cfg.INPUT
    arch = model.META_ARCHITECTURE
    if arch == "TKDDistiller":
        arch = f"TKD student {model.TKD.STUDENT_META_ARCHITECTURE} (teacher {model.TKD.TEACHER.CONFIG})"
    backbone = model.BACKBONE.NAME
    if "efficientnet" in backbone:
        backbone = f"EfficientNet-{model.EFFICIENTNET.VARIANT.capitalize()}"
    elif "resnet" in backbone:
        backbone = f"R-{model.RESNETS.DEPTH}"
    lines = [
        f"config {config_file or '(defaults)'}; full config in {os.path.join(cfg.OUTPUT_DIR, 'config.yaml')}",
        f"model: {arch}, backbone {backbone}, device {model.DEVICE}",
        f"data: train {list(cfg.DATASETS.TRAIN)}, test {list(cfg.DATASETS.TEST)}; input "
        f"{list(inp.MIN_SIZE_TRAIN)} (max {inp.MAX_SIZE_TRAIN}) train, {inp.MIN_SIZE_TEST} "
        f"(max {inp.MAX_SIZE_TEST}) test",
        f"solver: {solver.MAX_ITER} iterations"
        + (f" ({solver.EPOCHS:g} epochs)" if solver.get("EPOCHS", 0) > 0 else "")
        + f", batch {solver.IMS_PER_BATCH}, LR {solver.BASE_LR:g}, steps {list(solver.STEPS)}, "
        f"warm-up {solver.WARMUP_ITERS}",
    ]
    return "Run summary:\n  " + "\n  ".join(lines)


def setup_run(cfg, args):
    """What detectron2's ``default_setup`` does (output folder, loggers, config.yaml, seed,
    cudnn) and :func:`keep_freed_memory`, with the long reports in the log file only and a
    short summary on the console."""
    output_dir = cfg.OUTPUT_DIR
    if comm.is_main_process() and output_dir:
        os.makedirs(output_dir, exist_ok=True)
    rank = comm.get_rank()
    logger = setup_loggers(output_dir, rank)
    quiet = {"extra": FILE_ONLY}
    logger.info("Rank of current process: %d. World size: %d", rank, comm.get_world_size(), **quiet)
    logger.info("Environment info:\n%s", collect_env_info(), **quiet)
    logger.info("Command line arguments: %s", args, **quiet)
    config_file = getattr(args, "config_file", "")
    if config_file:
        with open(config_file) as f:
            logger.info("Contents of %s:\n%s", config_file, f.read(), **quiet)
    if comm.is_main_process() and output_dir:
        path = os.path.join(output_dir, "config.yaml")
        with open(path, "w") as f:
            f.write(cfg.dump())
        logger.info("Running with full config:\n%s", cfg.dump(), **quiet)
    logger.info(config_summary(cfg, config_file))
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + rank)
    kept = keep_freed_memory()
    logger.info("CPU malloc: %s", f"freed memory kept in the process ({ENV_VAR}=keep)" if kept
                else "the C library's defaults", **quiet)
    if not getattr(args, "eval_only", False):
        torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK


def log_traceback_to_file(error):
    """Write ``error``'s traceback to the log files of the run's loggers (if any)."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    record = logging.LogRecord("tkd_d2", logging.ERROR, __file__, 0, "%s", (text.rstrip(),), None)
    written = set()
    for name, _ in LOGGERS:
        for handler in _file_handlers(logging.getLogger(name)):
            stream = getattr(handler, "stream", None)
            if id(stream) not in written:
                written.add(id(stream))
                handler.handle(record)

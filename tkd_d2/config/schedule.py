"""The one schedule scaling: MAX_ITER, LR steps and warm-ups moved together (SOLVER.EPOCHS, an
overridden MAX_ITER, the pipeline's budget)."""
import logging
import math

__all__ = ["schedule_of", "set_schedule", "scale_schedule", "epoch_iterations", "apply_epoch_schedule",
           "schedule_overrides"]

logger = logging.getLogger(__name__)


def schedule_of(cfg):
    return {"SOLVER.MAX_ITER": cfg.SOLVER.MAX_ITER, "SOLVER.STEPS": tuple(cfg.SOLVER.STEPS),
            "SOLVER.WARMUP_ITERS": cfg.SOLVER.WARMUP_ITERS,
            "MODEL.TKD.WARMUP_ITERS": cfg.MODEL.TKD.WARMUP_ITERS}


def set_schedule(cfg, base, max_iter, keep=(), log=True):
    """The one schedule scaling: set MAX_ITER and scale the ``base`` schedule's steps and
    warm-ups to it (the keys in ``keep`` stay as they are); steps that would not fit are
    dropped, so detectron2 never meets a STEPS / MAX_ITER pair it refuses."""
    scale = max_iter / max(1, int(base["SOLVER.MAX_ITER"]))
    cfg.SOLVER.MAX_ITER = int(max_iter)
    steps = cfg.SOLVER.STEPS if "SOLVER.STEPS" in keep else [
        max(1, int(round(s * scale))) for s in base["SOLVER.STEPS"]]
    # MultiStepParamScheduler needs steps inside (0, MAX_ITER) and MAX_ITER > len(steps)
    steps = sorted({int(s) for s in steps if 0 < s < max_iter})[: max(0, max_iter - 1)]
    if log and list(steps) != list(cfg.SOLVER.STEPS):
        logger.info("SOLVER.STEPS %s -> %s for SOLVER.MAX_ITER %d", tuple(cfg.SOLVER.STEPS),
                    tuple(steps), max_iter)
    cfg.SOLVER.STEPS = tuple(steps)
    for key, node in (("SOLVER.WARMUP_ITERS", cfg.SOLVER), ("MODEL.TKD.WARMUP_ITERS", cfg.MODEL.TKD)):
        name = key.rsplit(".", 1)[1]
        if key not in keep:
            node[name] = int(round(base[key] * scale))
    cfg.SOLVER.WARMUP_ITERS = min(cfg.SOLVER.WARMUP_ITERS, max_iter)


def scale_schedule(cfg, base, given):
    """An overridden MAX_ITER (without STEPS / warm-ups) scales the config's schedule; in any
    case the steps are made to fit MAX_ITER."""
    keep = set(given) if "SOLVER.MAX_ITER" in given else set(base)
    set_schedule(cfg, base, cfg.SOLVER.MAX_ITER, keep=keep)


def epoch_iterations(epochs, num_images, ims_per_batch):
    """Iterations of ``epochs`` passes over ``num_images`` images, ``ims_per_batch`` per step."""
    return max(1, math.ceil(epochs * num_images / max(1, ims_per_batch)))


def apply_epoch_schedule(cfg, num_images=None):
    """SOLVER.EPOCHS > 0: set MAX_ITER for that many passes over DATASETS.TRAIN
    (``num_images``, default: counted from the registered datasets after detectron2's
    empty-image filter) and scale STEPS and warm-ups with it. Returns ``cfg`` (a frozen
    config is copied); a config without EPOCHS as it is."""
    if cfg.SOLVER.EPOCHS <= 0:
        return cfg
    if num_images is None:
        from detectron2.data import get_detection_dataset_dicts

        num_images = len(get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS))
    frozen = cfg.is_frozen()
    cfg = cfg.clone()
    cfg.defrost()
    max_iter = epoch_iterations(cfg.SOLVER.EPOCHS, num_images, cfg.SOLVER.IMS_PER_BATCH)
    set_schedule(cfg, schedule_of(cfg), max_iter)
    logger.info("SOLVER.EPOCHS %d over %d images, batch %d: MAX_ITER %d, STEPS %s, WARMUP_ITERS %d",
                cfg.SOLVER.EPOCHS, num_images, cfg.SOLVER.IMS_PER_BATCH, max_iter,
                tuple(cfg.SOLVER.STEPS), cfg.SOLVER.WARMUP_ITERS)
    if frozen:
        cfg.freeze()
    return cfg


def schedule_overrides(cfg, max_iter, tkd=False):
    """``KEY VALUE`` overrides that train ``cfg`` for ``max_iter`` iterations with its
    schedule (LR steps, warm-up, and with ``tkd`` the KD warm-up) scaled to match."""
    scaled = cfg.clone()
    scaled.defrost()
    set_schedule(scaled, schedule_of(cfg), max_iter, log=False)
    opts = [
        "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.STEPS", "(" + "".join(f"{s}," for s in scaled.SOLVER.STEPS) + ")",
        "SOLVER.WARMUP_ITERS", str(scaled.SOLVER.WARMUP_ITERS),
    ]
    if tkd:
        opts += ["MODEL.TKD.WARMUP_ITERS", str(scaled.MODEL.TKD.WARMUP_ITERS)]
    return opts

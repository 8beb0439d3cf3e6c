"""Hooks that report on the TKD distiller from detectron2's training loop.

The distiller needs no hook to train: it reads the iteration (for the KD warm-up) from
detectron2's event storage, so it behaves the same in any detectron2 training loop.
"""
import logging

from detectron2.engine import HookBase
from detectron2.utils import comm

from ..modeling.distiller import TKDDistiller

__all__ = ["TKDHook"]

logger = logging.getLogger(__name__)


class TKDHook(HookBase):
    """Reports (and optionally evaluates) the teacher before training. A no-op for plain
    detectors."""

    def __init__(self, cfg, evaluate=None):
        self._cfg = cfg
        self._evaluate = evaluate

    def _distiller(self):
        model = getattr(self.trainer.model, "module", self.trainer.model)
        return model if isinstance(model, TKDDistiller) else None

    def before_train(self):
        distiller = self._distiller()
        if distiller is None:
            return
        info = distiller.teacher_info
        logger.info(
            "TKD teacher: %s loaded from %s (%d tensors matched); KD warm-up over %d iters",
            info["config"], info["weights"], info["num_matched"], self._cfg.MODEL.TKD.WARMUP_ITERS,
        )
        if self._cfg.MODEL.TKD.EVAL_TEACHER_FIRST and self._evaluate is not None:
            results = self._evaluate(self._cfg, distiller.teacher)
            if comm.is_main_process():
                bbox = results.get("bbox", results) if isinstance(results, dict) else {}
                storage = self.trainer.storage
                for key in ("AP", "AP50", "AP75"):
                    if key in bbox:
                        storage.put_scalar(f"teacher/{key}", bbox[key], smoothing_hint=False)
                logger.info("TKD teacher on %s: %s", self._cfg.DATASETS.TEST, bbox)

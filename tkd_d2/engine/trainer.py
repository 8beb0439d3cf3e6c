"""The project's Trainer: detectron2's DefaultTrainer with the project's data, evaluation,
checkpointing and the TKD hooks."""
import logging
import os
import time

from detectron2.data import (build_detection_test_loader, build_detection_train_loader,
                             get_detection_dataset_dicts)
from detectron2.engine import DefaultTrainer
from detectron2.utils import comm

from ..checkpoint import SafeCheckpointer
from ..data import TKDDatasetMapper, check_images, train_thing_classes
from ..errors import DatasetFormatError
from ..evaluation import DefectCOCOEvaluator
from .hooks import TKDHook

__all__ = ["Trainer", "unwrap_model"]

logger = logging.getLogger(__name__)


def unwrap_model(model):
    """The module inside a (Distributed)DataParallel wrapper, or the model itself."""
    return getattr(model, "module", model)


class Trainer(DefaultTrainer):
    def __init__(self, cfg):
        super().__init__(cfg)
        # Replace detectron2's checkpointer: atomic saves, weights-only loads, class names.
        self.checkpointer = SafeCheckpointer(
            self._trainer.model,
            cfg.OUTPUT_DIR,
            thing_classes=train_thing_classes(cfg),
            trainer=self,
        )
        for h in self._hooks:
            if hasattr(h, "checkpointer"):
                h.checkpointer = self.checkpointer

    def resume_or_load(self, resume=True):
        """detectron2's, except that with nothing to load (no MODEL.WEIGHTS, nothing to
        resume) it says what the model starts from, instead of "No checkpoint found.
        Initializing model from scratch" right after the backbone's ImageNet weights loaded."""
        if self.cfg.MODEL.WEIGHTS or (resume and self.checkpointer.has_checkpoint()):
            return super().resume_or_load(resume=resume)
        model = self.cfg.MODEL
        if "efficientnet" in model.BACKBONE.NAME and model.EFFICIENTNET.PRETRAINED:
            start = (f"the ImageNet weights of EfficientNet-{model.EFFICIENTNET.VARIANT.capitalize()} "
                     "in the backbone (MODEL.EFFICIENTNET.PRETRAINED), the rest initialised afresh")
        else:
            start = "scratch (random initialisation)"
        logger.info("No MODEL.WEIGHTS to load: the model starts from %s.", start)
        self.start_iter = 0

    def build_hooks(self):
        hooks = super().build_hooks()
        # First: the teacher is reported (and evaluated) before anything else runs.
        hooks.insert(0, TKDHook(self.cfg, evaluate=self.test))
        return hooks

    @staticmethod
    def check_images(cfg, dataset_dicts, names):
        """Decode every image once, in parallel, before training or evaluation starts
        (DATASETS.CHECK_IMAGES); raises ImageReadError naming the unreadable ones."""
        if not cfg.DATASETS.CHECK_IMAGES:
            return
        start = time.perf_counter()
        count = check_images(dataset_dicts, ", ".join(names))
        logger.info("Checked %d images of %s: all readable (%.1f s).", count, ", ".join(names),
                    time.perf_counter() - start)

    @classmethod
    def build_train_loader(cls, cfg):
        try:
            dataset = get_detection_dataset_dicts(
                cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
            )
            cls.check_images(cfg, dataset, cfg.DATASETS.TRAIN)
            return build_detection_train_loader(cfg, mapper=TKDDatasetMapper(cfg, is_train=True),
                                                dataset=dataset)
        except AssertionError as e:  # detectron2 asserts on empty datasets; say what to do
            if "is empty" in str(e) or "No valid data" in str(e):
                raise DatasetFormatError(
                    f"{e} ({', '.join(cfg.DATASETS.TRAIN)}): the training set has no images with "
                    "boxes. Check the dataset's image and annotation folders (or split file); "
                    "images without boxes are skipped while DATALOADER.FILTER_EMPTY_ANNOTATIONS "
                    "is True."
                ) from None
            raise

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        dataset = get_detection_dataset_dicts([dataset_name], filter_empty=False)
        cls.check_images(cfg, dataset, [dataset_name])
        return build_detection_test_loader(
            dataset, mapper=TKDDatasetMapper(cfg, is_train=False),
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return DefectCOCOEvaluator(
            dataset_name,
            distributed=comm.get_world_size() > 1,
            output_dir=output_folder,
            per_class_ap=cfg.TEST.PER_CLASS_AP,
        )

"""The project's Trainer: detectron2's DefaultTrainer with the project's data, evaluation,
checkpointing and the TKD hooks."""
import logging
import os
import time

from detectron2.data import (build_detection_test_loader, build_detection_train_loader,
                             get_detection_dataset_dicts)
from detectron2.data.samplers import (RandomSubsetTrainingSampler, RepeatFactorTrainingSampler,
                                      TrainingSampler)
from detectron2.engine import DefaultTrainer, hooks as d2_hooks
from detectron2.utils import comm

from ..checkpoint import SafeCheckpointer
from ..data import TKDDatasetMapper, check_images, train_thing_classes
from ..errors import DatasetFormatError
from ..evaluation import DefectCOCOEvaluator
from ..modeling import apply_memory_format
from ..modeling.tiled import tiled
from .ema import EMAHook
from .hooks import TKDHook
from .resume import (ResumableSampler, loss_normalizers, metric_history, restore_metric_history, rng_state,
                     set_loss_normalizers, set_rng_state)

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

    # ------------------------------------------------------------------ resume
    # A resumed run continues as if never stopped (tkd_d2/engine/resume.py): the optimizer
    # (momentum), the detectors' loss normalizer, the data position, the random state and the
    # logged metrics' window.
    def state_dict(self):
        state = super().state_dict()
        # upstream DefaultTrainer saves its SimpleTrainer's state (the optimizer); the 0.6 snapshot does not
        state["_trainer"] = self._trainer.state_dict()
        state["loss_normalizers"] = loss_normalizers(unwrap_model(self.model))
        if getattr(self, "storage", None) is not None:  # saved during training
            state["metric_history"] = metric_history(self.storage)
        if comm.get_world_size() == 1:  # only rank 0 writes: its random state is no other rank's
            state["rng"] = rng_state()
        if self._ema is not None:
            state["ema"] = self._ema.average.state_dict()
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if "_trainer" in state:
            self._trainer.load_state_dict(state["_trainer"])
        else:
            logger.warning("The checkpoint holds no optimizer state (written before it was saved): "
                           "the optimizer's momentum restarts from zero")
        set_loss_normalizers(unwrap_model(self.model), state.get("loss_normalizers", {}))
        if self._ema is not None and "ema" in state:
            self._ema.average.load_state_dict(state["ema"])
        elif self._ema is not None:
            logger.warning("MODEL.EMA: the checkpoint holds no weight average (written without it): "
                           "the average starts from the resumed weights")
        self._resume_state = {k: state[k] for k in ("metric_history", "rng") if k in state}

    def resume_or_load(self, resume=True):
        """detectron2's, then the data stream set to where a resumed run stopped. With nothing
        to load (no MODEL.WEIGHTS, nothing to resume) it says what the model starts from,
        instead of "No checkpoint found. Initializing model from scratch" right after the
        backbone's ImageNet weights loaded."""
        self._resume_state = {}
        if self.cfg.MODEL.WEIGHTS or (resume and self.checkpointer.has_checkpoint()):
            super().resume_or_load(resume=resume)
        else:
            model = self.cfg.MODEL
            if "efficientnet" in model.BACKBONE.NAME and model.EFFICIENTNET.PRETRAINED:
                start = (f"the ImageNet weights of EfficientNet-{model.EFFICIENTNET.VARIANT.capitalize()} "
                         "in the backbone (MODEL.EFFICIENTNET.PRETRAINED), the rest initialised afresh")
            else:
                start = "scratch (random initialisation)"
            logger.info("No MODEL.WEIGHTS to load: the model starts from %s.", start)
            self.start_iter = 0
        sampler = getattr(self._trainer.data_loader, "resumable_sampler", None)
        if self.start_iter > 0 and sampler is not None:
            sampler.resume_at(self.start_iter)

    def before_train(self):
        super().before_train()
        # last, after the hooks (a teacher evaluation draws random numbers too)
        resume_state = getattr(self, "_resume_state", {})
        if "metric_history" in resume_state:
            restore_metric_history(self.storage, resume_state["metric_history"])
        if "rng" in resume_state and comm.get_world_size() == 1:
            set_rng_state(resume_state["rng"])

    def build_hooks(self):
        hooks = super().build_hooks()
        self._ema = EMAHook(self.model, self.cfg.MODEL.EMA.DECAY) if self.cfg.MODEL.EMA.ENABLED else None
        if self._ema is not None:
            # before the checkpointer and the evaluation: after the last step they see the average
            first = next(i for i, h in enumerate(hooks)
                         if isinstance(h, (d2_hooks.PeriodicCheckpointer, d2_hooks.EvalHook)))
            hooks.insert(first, self._ema)
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
    def build_model(cls, cfg):
        """detectron2's model, in channels-last memory where MODEL.CHANNELS_LAST."""
        return apply_memory_format(cfg, super().build_model(cfg))

    @classmethod
    def build_train_loader(cls, cfg):
        try:
            dataset = get_detection_dataset_dicts(
                cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
            )
            cls.check_images(cfg, dataset, cfg.DATASETS.TRAIN)
            sampler = cls.build_train_sampler(cfg, dataset)
            loader = build_detection_train_loader(cfg, mapper=TKDDatasetMapper(cfg, is_train=True),
                                                  dataset=dataset, sampler=sampler)
            loader.resumable_sampler = sampler  # resume_or_load sets where it starts
            return loader
        except AssertionError as e:  # detectron2 asserts on empty datasets; say what to do
            if "is empty" in str(e) or "No valid data" in str(e):
                raise DatasetFormatError(
                    f"{e} ({', '.join(cfg.DATASETS.TRAIN)}): the training set has no images with "
                    "boxes. Check the dataset's image and annotation folders (or split file); "
                    "images without boxes are skipped while DATALOADER.FILTER_EMPTY_ANNOTATIONS "
                    "is True."
                ) from None
            raise

    @staticmethod
    def build_train_sampler(cfg, dataset):
        """detectron2's sampler for DATALOADER.SAMPLER_TRAIN, able to resume mid-stream."""
        name = cfg.DATALOADER.SAMPLER_TRAIN
        if name == "TrainingSampler":
            sampler = TrainingSampler(len(dataset))
        elif name == "RepeatFactorTrainingSampler":
            sampler = RepeatFactorTrainingSampler(RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
                dataset, cfg.DATALOADER.REPEAT_THRESHOLD))
        elif name == "RandomSubsetTrainingSampler":
            sampler = RandomSubsetTrainingSampler(len(dataset), cfg.DATALOADER.RANDOM_SUBSET_RATIO)
        else:
            raise ValueError(f"Unknown training sampler: {name}")
        landscape = [d["width"] > d["height"] for d in dataset] if cfg.DATALOADER.ASPECT_RATIO_GROUPING else None
        return ResumableSampler(sampler, cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size(), landscape)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        dataset = get_detection_dataset_dicts([dataset_name], filter_empty=False)
        cls.check_images(cfg, dataset, [dataset_name])
        return build_detection_test_loader(
            dataset, mapper=TKDDatasetMapper(cfg, is_train=False),
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """detectron2's evaluation, on tiles of each test image where TEST.TILE.SIZE > 0."""
        if cfg.TEST.TILE.SIZE > 0:
            model = tiled(cfg, unwrap_model(model))
        return super().test(cfg, model, evaluators)

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

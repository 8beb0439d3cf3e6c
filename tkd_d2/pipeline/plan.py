"""What the main job trains and evaluates, resolved from its options: the config files, every
run's overrides (``--tiny``, ``--max-iter``, ``--seed``, ``--opts``, a custom dataset and the
settings derived from it), the output folders, and how the report names each model."""
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..config import epoch_iterations, is_distiller_config, load_config, schedule_overrides
from ..data import (coco_category_names, derive_settings, format_inspection, inspect_dataset,
                    parse_custom_entry, settings_overrides)
from ..data.inspection import DEFAULT_EPOCHS
from ..errors import ConfigError
from ..evaluation import RESULTS_FILE
from ..modeling import family_named, family_of
from .options import CUSTOM, DATASET_CONFIG_DIRS, TINY_OPTS, PipelineOptions, default_config_names
from .stages import MODELS

__all__ = ["Plan"]


class Plan:
    """The runs of the main job for ``options`` (:class:`PipelineOptions`, or a dict of its
    fields), with the configs under ``project_root``/configs (default: the working folder)."""

    def __init__(self, options, project_root=None):
        if isinstance(options, dict):
            options = PipelineOptions(**options)
        self.options = options = options.resolved()
        self.family = family_named(options.detector)
        self.project_root = os.path.abspath(project_root or os.getcwd())
        config_dir = os.path.join(self.project_root, "configs", DATASET_CONFIG_DIRS[options.dataset])
        given = {"teacher": options.teacher_config, "baseline": options.student_config,
                 "tkd": options.tkd_config}
        if not all(given.values()) and not os.path.isdir(config_dir):
            raise ConfigError(f"{config_dir} not found: run from the project root (the folder with "
                              "train_net.py and configs/), or pass it as project_root")
        names = default_config_names(self.family, options.backbones)
        self.configs = {
            m: os.path.abspath(given[m]) if given[m] else os.path.join(config_dir, names[m] + ".yaml")
            for m in MODELS
        }
        self.out = options.output
        self.dirs = {m: os.path.join(self.out, m) for m in MODELS}
        # --teacher: trained before; its folder's config and weights are used as they are
        if self.teacher_given:
            self.dirs["teacher"] = options.teacher
            self.configs["teacher"] = os.path.join(options.teacher, "config.yaml")
        self.weights = {m: os.path.join(self.dirs[m], "model_final.pth") for m in MODELS}
        # --dataset custom: settings derived from the training data (derive_from)
        self.derived = self.inspection = None
        self.classes = None  # --dataset custom: the class names (custom_data_opts)
        self.test_dataset = None  # the evaluated set (known once the data stage registered it)
        self._trained_cfgs = None
        self.budget_iterations = None  # model → iterations --budget chose (set_budget_iterations)
        self._prepare_opts()

    def _prepare_opts(self):
        options = self.options
        cfgs = {m: load_config(self.configs[m], register_datasets=False, freeze=False) for m in MODELS}
        for key, cfg in cfgs.items():  # fail before hours of training, not after
            arch = cfg.MODEL.META_ARCHITECTURE
            if key == "tkd" and not is_distiller_config(cfg):
                raise ConfigError(f"--tkd-config {self.configs[key]} is a {arch}, not a TKDDistiller config")
            if key != "tkd" and is_distiller_config(cfg):
                raise ConfigError(f"{self.configs[key]} is a TKD config; the {key} needs a plain detector config")
        if self.teacher_given:
            self._check_given_teacher(cfgs["teacher"], cfgs["baseline"])
        seed = options.seed
        if seed is None:
            seed = cfgs["baseline"].SEED if cfgs["baseline"].SEED >= 0 else 0
        data = (list(TINY_OPTS) if options.tiny else []) + self.custom_data_opts()
        common = data + settings_overrides(self.derived or {})
        self.train_opts = {}
        for m in MODELS:
            if m == "teacher" and self.teacher_given:
                # not trained: its config as it was, on this run's data (no derived settings or
                # --opts: a changed input size or anchor set would not be the teacher it trained)
                self.train_opts[m] = data
                continue
            budgeted = (self.budget_iterations or {}).get(m)
            max_iter = budgeted or options.max_iter
            schedule_of_data = (self.derived or {}).get("schedule")
            if max_iter is None and schedule_of_data:
                batch = load_config(self.configs[m], common + list(options.opts),
                                    register_datasets=False).SOLVER.IMS_PER_BATCH
                max_iter = epoch_iterations(schedule_of_data["epochs"], schedule_of_data["images"], batch)
            if m == "teacher" and not budgeted and options.teacher_epochs != 1.0:
                # --teacher-epochs without --budget: R times the iterations it would train
                # (the budget's split already holds the share)
                max_iter = round(options.teacher_epochs * (max_iter or cfgs[m].SOLVER.MAX_ITER))
            schedule = schedule_overrides(cfgs[m], max_iter, tkd=m == "tkd") if max_iter else []
            # No end-of-training evaluation: stage 4 evaluates every model the same way.
            self.train_opts[m] = (common + schedule + ["SEED", str(seed), "DATASETS.TEST", "()"]
                                  + list(options.opts))
        self.eval_opts = common + list(options.opts)
        self.teacher_eval_opts = self.eval_opts
        if self.teacher_given:  # evaluated on the students' test set (its training had none)
            tests = load_config(self.configs["baseline"], self.eval_opts, register_datasets=False).DATASETS.TEST
            self.teacher_eval_opts = data + ["DATASETS.TEST", repr(tuple(tests))]

    @property
    def teacher_given(self):
        """Whether the teacher was trained before the run (``--teacher``), not by it."""
        return bool(self.options.teacher)

    def eval_opts_of(self, key):
        """The overrides model ``key`` is evaluated (and drawn, and timed) with."""
        return self.teacher_eval_opts if key == "teacher" else self.eval_opts

    def _check_given_teacher(self, teacher, student):
        """A --teacher must be a detector of the students' family with their class count."""
        path = self.configs["teacher"]
        family = family_of(teacher)
        if family is not self.family:
            raise ConfigError(f"--teacher {self.options.teacher}: {path} is a {family.label} "
                              f"(MODEL.META_ARCHITECTURE {teacher.MODEL.META_ARCHITECTURE}); the "
                              f"students are {self.family.label} (--detector {self.options.detector})")
        key = f"MODEL.{family.config_node}.NUM_CLASSES"
        given = family.num_classes(teacher)
        wanted = len(self.custom_classes()) if self.options.dataset == CUSTOM else family.num_classes(student)
        if given != wanted:
            raise ConfigError(f"--teacher {self.options.teacher}: {path} has {key} {given}; the "
                              f"students' data have {wanted} classes")

    def user_sets_iterations(self):
        """How the user fixed the iterations by hand (``--max-iter``, ``SOLVER.MAX_ITER`` in
        ``--opts``), or None: what the user sets wins over ``--budget``."""
        if self.options.max_iter and not self.options.tiny:
            return f"--max-iter {self.options.max_iter}"
        opts = list(self.options.opts)
        for key in ("SOLVER.MAX_ITER", "SOLVER.EPOCHS"):
            if key in opts[::2]:
                return f"--opts {key} {opts[opts.index(key) + 1]}"
        return None

    def set_budget_iterations(self, iterations):
        """Train model m for ``iterations[m]`` (LR steps and warm-ups scaled with it)."""
        self.budget_iterations = dict(iterations)
        self._prepare_opts()
        self._trained_cfgs = None

    def train_images(self):
        """Images of the training set(s) one epoch visits (the datasets registered)."""
        from detectron2.data import get_detection_dataset_dicts

        cfg = self.trained_configs()["baseline"]
        return len(get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS))

    def test_images(self):
        return len(DatasetCatalog.get(self.test_dataset))

    def custom_classes(self):
        """Class names of the --dataset custom entries: every COCO file's categories (which
        must agree), else --classes (required for VOC)."""
        options = self.options
        found = {}
        for entry in map(parse_custom_entry, list(options.train) + list(options.test)):
            if entry["format"] == "coco":
                found[entry["annotations"]] = coco_category_names(entry["annotations"])
        distinct = {tuple(v) for v in found.values()}
        if len(distinct) > 1:
            listing = "; ".join(f"{f}: {v}" for f, v in found.items())
            raise ConfigError(f"the COCO files name different categories ({listing}); train and "
                              "test need the same classes with the same ids")
        classes = list(options.classes) or (list(distinct.pop()) if distinct else [])
        if found and options.classes and tuple(options.classes) not in {tuple(v) for v in found.values()}:
            raise ConfigError(f"--classes {list(options.classes)} differ from the COCO categories "
                              f"{next(iter(found.values()))}; leave --classes out for COCO data")
        if not classes:
            raise ConfigError("VOC entries need --classes (the <name> values of the XML objects, "
                              "in category order)")
        return classes

    def custom_data_opts(self):
        """The overrides that put the --dataset custom entries in place of the configs'
        datasets (and their class count, and no second image check: stage 1 makes it); []
        for a builtin dataset."""
        options = self.options
        if options.dataset != CUSTOM:
            return []
        self.classes = self.custom_classes()
        name = lambda entries: tuple(parse_custom_entry(e)["name"] for e in entries)  # noqa: E731
        return [
            "DATASETS.CUSTOM.ENTRIES", repr(list(options.train) + list(options.test)),
            "DATASETS.CUSTOM.CLASSES", repr(list(self.classes)),
            "DATASETS.TRAIN", repr(name(options.train)),
            "DATASETS.TEST", repr(name(options.test)),
            f"MODEL.{self.family.config_node}.NUM_CLASSES", str(len(self.classes)),
            # stage 1 decodes every image once; the trainings and evaluations need not again
            "DATASETS.CHECK_IMAGES", "False",
        ]

    def trained_configs(self):
        """model → its config as it trains (file + overrides); raises
        :class:`~tkd_d2.errors.ConfigError` naming an override key that does not exist."""
        if self._trained_cfgs is None:
            self._trained_cfgs = {m: load_config(self.configs[m], self.train_opts[m],
                                                 register_datasets=False)
                                  for m in MODELS}
        return self._trained_cfgs

    def backbone(self, key):
        """Model ``key``'s backbone as users know it: "R-50", "EfficientNet-Lite0"."""
        model = self.trained_configs()[key].MODEL
        if "efficientnet" in model.BACKBONE.NAME:
            return f"EfficientNet-{model.EFFICIENTNET.VARIANT.capitalize()}"
        return f"R-{model.RESNETS.DEPTH}"

    def iterations(self, key):
        return self.trained_configs()[key].SOLVER.MAX_ITER

    def label(self, key):
        """How the report and the stage headers name model ``key``."""
        detector = self.family.label
        return {
            "teacher": f"teacher ({detector} {self.backbone('teacher')})",
            "baseline": f"baseline student ({detector} {self.backbone('baseline')})",
            "tkd": f"TKD student ({detector} {self.backbone('tkd')})",
        }[key]

    def derive_from(self, cfg, train_dicts):
        """Input size, anchors and an epoch schedule from the training data (see
        :func:`tkd_d2.data.derive_settings`); every model's overrides are rebuilt with them."""
        name = ", ".join(cfg.DATASETS.TRAIN)
        classes = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("thing_classes", None)
        stats, arrays = inspect_dataset(train_dicts, classes, name, check_images=False)
        sizes = cfg.MODEL.ANCHOR_GENERATOR.SIZES
        derived = derive_settings(
            stats, arrays, anchors=family_of(cfg).name == "retinanet",
            epochs=self.options.epochs or DEFAULT_EPOCHS, ims_per_batch=cfg.SOLVER.IMS_PER_BATCH,
            iou_threshold=cfg.MODEL.RETINANET.IOU_THRESHOLDS[-1],
            current_base=float(sizes[0][0]) if len(sizes) == 5 else 16,
        )
        if self.options.max_iter:
            derived["schedule"]["overridden_by"] = f"--max-iter {self.options.max_iter}"
        self.derived, self.inspection = derived, format_inspection(stats, derived)
        self._prepare_opts()
        self._trained_cfgs = None
        self.trained_configs()

    def ap_results_path(self, key):
        """The evaluator's results file of model ``key`` (stage eval_<key>)."""
        return os.path.join(self.out, f"eval_{key}", "inference", self.test_dataset, RESULTS_FILE)

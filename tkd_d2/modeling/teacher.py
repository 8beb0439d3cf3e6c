"""Build a frozen teacher detector from its own config and weights, loudly."""
import logging
import os

from detectron2.config import get_cfg
from detectron2.modeling import build_model

from ..config import add_tkd_config
from ..data import train_thing_classes

__all__ = ["TeacherLoadError", "load_teacher_config", "build_teacher", "num_classes_of"]

logger = logging.getLogger(__name__)

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_SUPPORTED = ("RetinaNet", "FCOSDetector")


class TeacherLoadError(RuntimeError):
    """The teacher could not be built as configured (never silently random)."""


def num_classes_of(cfg, arch=None):
    arch = arch or cfg.MODEL.META_ARCHITECTURE
    return cfg.MODEL.FCOS.NUM_CLASSES if arch == "FCOSDetector" else cfg.MODEL.RETINANET.NUM_CLASSES


def _resolve_config_path(path):
    if not os.path.isfile(path) and not os.path.isabs(path):
        # configs name their teacher relative to the project root; accept any working dir
        in_project = os.path.join(PROJECT_ROOT, path)
        path = in_project if os.path.isfile(in_project) else path
    return path


def load_teacher_config(path, device):
    if not path:
        raise TeacherLoadError(
            "MODEL.TKD.TEACHER.CONFIG is empty: set it to the teacher's yaml, e.g. "
            "configs/NEU-DET/retinanet_R_50_FPN.yaml"
        )
    path = _resolve_config_path(path)
    if not os.path.isfile(path):
        raise TeacherLoadError(f"MODEL.TKD.TEACHER.CONFIG: file not found: {path}")
    cfg = get_cfg()
    add_tkd_config(cfg)
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = ""
    if cfg.MODEL.META_ARCHITECTURE not in _SUPPORTED:
        raise TeacherLoadError(
            f"Teacher config {path}: MODEL.META_ARCHITECTURE={cfg.MODEL.META_ARCHITECTURE!r}; "
            f"a teacher must be one of {_SUPPORTED}"
        )
    cfg.freeze()
    return cfg


def build_teacher(student_cfg):
    """Returns ``(teacher_model, teacher_cfg, info)`` for ``student_cfg.MODEL.TKD.TEACHER``.

    Errors (:class:`TeacherLoadError`) name the file and say what to do when the config or
    weights are missing, the weights do not fit the teacher's architecture, or teacher and
    student predict different classes.
    """
    tkd = student_cfg.MODEL.TKD
    tcfg = load_teacher_config(tkd.TEACHER.CONFIG, student_cfg.MODEL.DEVICE)
    student_arch = tkd.STUDENT_META_ARCHITECTURE
    if tcfg.MODEL.META_ARCHITECTURE != student_arch:
        raise TeacherLoadError(
            f"Teacher ({tkd.TEACHER.CONFIG}) is a {tcfg.MODEL.META_ARCHITECTURE} but the student "
            f"is a {student_arch} (MODEL.TKD.STUDENT_META_ARCHITECTURE): cross-response "
            "distillation needs the same detector family"
        )
    t_classes, s_classes = num_classes_of(tcfg), num_classes_of(student_cfg, student_arch)
    if t_classes != s_classes:
        raise TeacherLoadError(
            f"Teacher ({tkd.TEACHER.CONFIG}) predicts {t_classes} classes, the student "
            f"{s_classes}: train the teacher on the student's dataset"
        )

    weights = tkd.TEACHER.WEIGHTS
    if not weights:
        raise TeacherLoadError(
            "MODEL.TKD.TEACHER.WEIGHTS is empty: distillation needs a trained teacher. Train one "
            f"with `train_net.py --config-file {tkd.TEACHER.CONFIG}` and pass its model_final.pth"
        )
    if not os.path.isfile(weights):
        raise TeacherLoadError(
            f"MODEL.TKD.TEACHER.WEIGHTS: file not found: {weights} (train the teacher first, "
            f"or fix the path)"
        )

    from ..engine.checkpoint import SafeCheckpointer

    teacher = build_model(tcfg)
    checkpointer = SafeCheckpointer(teacher)
    checkpoint = checkpointer._load_file(weights)
    ckpt_classes = checkpoint.get("thing_classes")
    student_classes = train_thing_classes(student_cfg)
    if ckpt_classes and student_classes and list(ckpt_classes) != list(student_classes):
        raise TeacherLoadError(
            f"Teacher weights {weights} were trained for classes {list(ckpt_classes)} but the "
            f"student trains on {list(student_classes)} ({student_cfg.DATASETS.TRAIN[0]}): "
            "use a teacher trained on the same dataset and class order"
        )
    state = checkpoint["model"]
    num_tensors = len(state)
    incompatible = checkpointer._load_model(checkpoint)
    missing = list(incompatible.missing_keys)
    wrong_shapes = list(incompatible.incorrect_shapes)
    if missing or wrong_shapes:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing tensors (e.g. {missing[:3]})")
        if wrong_shapes:
            detail.append(f"{len(wrong_shapes)} of the wrong shape (e.g. {wrong_shapes[:2]})")
        dumped = os.path.join(os.path.dirname(os.path.abspath(weights)), "config.yaml")
        hint = (
            f" The weights' folder holds the config they were trained with (command-line "
            f"options included): pass MODEL.TKD.TEACHER.CONFIG {dumped}"
            if os.path.isfile(dumped)
            and not os.path.samefile(dumped, _resolve_config_path(tkd.TEACHER.CONFIG)) else ""
        )
        raise TeacherLoadError(
            f"Teacher weights {weights} do not match the teacher config {tkd.TEACHER.CONFIG}: "
            + "; ".join(detail)
            + ". Check that the weights were trained with this config." + hint
        )
    num_matched = len(teacher.state_dict()) - len(missing)
    teacher.eval()
    teacher.requires_grad_(False)
    info = {
        "config": tkd.TEACHER.CONFIG,
        "weights": weights,
        "num_matched": num_matched,
        "num_in_file": num_tensors,
        "thing_classes": ckpt_classes,
    }
    return teacher, tcfg, info

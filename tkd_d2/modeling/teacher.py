"""Build a frozen teacher detector from its own config and weights, loudly."""
import logging
import os

from detectron2.modeling import build_model

from ..checkpoint import SafeCheckpointer
from ..config import is_distiller_config, load_config
from ..data import train_thing_classes
from ..errors import CheckpointError, ConfigError, TeacherLoadError
from .family import family_of

__all__ = ["TeacherLoadError", "load_teacher_config", "build_teacher"]

logger = logging.getLogger(__name__)


def load_teacher_config(path, device):
    """The teacher's frozen config (``path`` as resolved by :func:`tkd_d2.config.load_config`)."""
    if not path:
        raise TeacherLoadError(
            "MODEL.TKD.TEACHER.CONFIG is empty: set it to the teacher's yaml, e.g. "
            "configs/NEU-DET/retinanet_R_50_FPN.yaml"
        )
    if not os.path.isfile(path):
        raise TeacherLoadError(f"MODEL.TKD.TEACHER.CONFIG: file not found: {path}")
    try:
        cfg = load_config(path, ["MODEL.WEIGHTS", ""], device=device, register_datasets=False)
        if is_distiller_config(cfg):
            raise ConfigError("a TKD distiller config; a teacher is a plain detector")
        family_of(cfg)
    except ConfigError as e:
        raise TeacherLoadError(f"Teacher config {path}: {e}") from None
    return cfg


def build_teacher(student_cfg):
    """Returns ``(teacher_model, teacher_cfg, info)`` for ``student_cfg.MODEL.TKD.TEACHER``.

    Errors (:class:`TeacherLoadError`) name the file and say what to do when the config or
    weights are missing, the weights do not fit the teacher's architecture, or teacher and
    student predict different classes.
    """
    tkd = student_cfg.MODEL.TKD
    tcfg = load_teacher_config(tkd.TEACHER.CONFIG, student_cfg.MODEL.DEVICE)
    teacher_family, student_family = family_of(tcfg), family_of(student_cfg)
    if teacher_family != student_family:
        raise TeacherLoadError(
            f"Teacher ({tkd.TEACHER.CONFIG}) is a {teacher_family.meta_architecture} but the student "
            f"is a {student_family.meta_architecture} (MODEL.TKD.STUDENT_META_ARCHITECTURE): "
            "cross-response distillation needs the same detector family"
        )
    t_classes, s_classes = teacher_family.num_classes(tcfg), student_family.num_classes(student_cfg)
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

    teacher = build_model(tcfg)
    dumped = os.path.join(os.path.dirname(os.path.abspath(weights)), "config.yaml")
    hint = (
        f"The weights' folder holds the config they were trained with (command-line options "
        f"included): pass MODEL.TKD.TEACHER.CONFIG {dumped}"
        if os.path.isfile(dumped) and not os.path.samefile(dumped, tkd.TEACHER.CONFIG) else ""
    )
    try:
        checkpoint = SafeCheckpointer(teacher).load_checked(
            weights, what="MODEL.TKD.TEACHER.WEIGHTS", hint=hint,
            misfit=f"Teacher weights {weights} do not match the teacher config {tkd.TEACHER.CONFIG}",
        )
    except CheckpointError as e:
        raise TeacherLoadError(str(e)) from None
    ckpt_classes = checkpoint.get("thing_classes")
    student_classes = train_thing_classes(student_cfg)
    if ckpt_classes and student_classes and list(ckpt_classes) != list(student_classes):
        raise TeacherLoadError(
            f"Teacher weights {weights} were trained for classes {list(ckpt_classes)} but the "
            f"student trains on {list(student_classes)} ({student_cfg.DATASETS.TRAIN[0]}): "
            "use a teacher trained on the same dataset and class order"
        )
    teacher.eval()
    teacher.requires_grad_(False)
    info = {
        "config": tkd.TEACHER.CONFIG,
        "weights": weights,
        "num_matched": checkpoint["num_matched"],
        "num_in_file": checkpoint["num_in_file"],
        "thing_classes": ckpt_classes,
    }
    return teacher, tcfg, info

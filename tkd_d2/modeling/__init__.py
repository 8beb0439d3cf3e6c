"""Detectors and the distiller, registered for yacs configs."""
from .backbone import build_efficientnet_lite_fpn_backbone, build_tkd_resnet_fpn_backbone
from .efficientnet import EfficientNetLite
from .family import FAMILIES, DetectorFamily, family_named, family_of
from .fcos import FCOSDetector
from .memory_format import apply_memory_format
from .teacher import TeacherLoadError, build_teacher
from .distiller import KDLossError, TKDDistiller

__all__ = [
    "build_tkd_resnet_fpn_backbone", "build_efficientnet_lite_fpn_backbone", "EfficientNetLite",
    "FCOSDetector", "TKDDistiller", "apply_memory_format", "TeacherLoadError",
    "KDLossError", "build_teacher", "FAMILIES", "DetectorFamily", "family_named", "family_of",
]

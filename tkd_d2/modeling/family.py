"""The detector families a student or teacher can be: one table, looked up everywhere that
depends on the family (config keys, CRD's tap, head outputs, names shown to users)."""
from typing import NamedTuple

from ..errors import ConfigError

__all__ = ["DetectorFamily", "FAMILIES", "family_of", "family_named"]


class DetectorFamily(NamedTuple):
    name: str  # short name used by the tools and configs/ file names ("retinanet")
    label: str  # shown to users
    meta_architecture: str  # MODEL.META_ARCHITECTURE
    config_node: str  # the MODEL.<node> holding NUM_CLASSES and the head's settings
    # CRD taps the towers after this conv by default (the reference's choice)
    reused_head_index: int
    # head outputs: [logits, box deltas] (+ [centerness]); centerness has its own CRD term
    has_centerness: bool
    # the assigner marks anchors it ignores with label -1 (RetinaNet: IoU between the two
    # thresholds); CRD leaves them out, as the reference's label weights do
    assigner_ignores: bool
    # CRD's reference normaliser: "positives" (the batch's positive anchors) or
    # "centerness" (the sum of the positives' centerness targets)
    reference_crd_normalizer: str
    # anchors come from MODEL.ANCHOR_GENERATOR (RetinaNet); False: one point per location,
    # from the head's strides alone (FCOS)
    anchors_from_config: bool

    def num_classes(self, cfg):
        return cfg.MODEL[self.config_node].NUM_CLASSES


FAMILIES = (
    DetectorFamily("retinanet", "RetinaNet", "RetinaNet", "RETINANET", 3, False, True, "positives", True),
    DetectorFamily("fcos", "FCOS", "FCOSDetector", "FCOS", 2, True, False, "centerness", False),
)


def family_named(name):
    """The family whose short name is ``name`` ("retinanet", "fcos")."""
    for family in FAMILIES:
        if family.name == name:
            return family
    raise ConfigError(f"detector {name!r} is not one of {[f.name for f in FAMILIES]}")


def family_of(cfg_or_arch, what="MODEL.META_ARCHITECTURE"):
    """The family of a meta-architecture name, or of a config (a TKD config: its student's)."""
    arch = cfg_or_arch
    if not isinstance(arch, str):
        model = cfg_or_arch.MODEL
        arch = model.META_ARCHITECTURE
        if arch == "TKDDistiller":
            arch, what = model.TKD.STUDENT_META_ARCHITECTURE, "MODEL.TKD.STUDENT_META_ARCHITECTURE"
    for family in FAMILIES:
        if family.meta_architecture == arch:
            return family
    raise ConfigError(
        f"{what}={arch!r}: not a detector this project distils; choose one of "
        f"{[f.meta_architecture for f in FAMILIES]}"
    )

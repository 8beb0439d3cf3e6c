"""CRD decodes the teacher's box predictions on the student's anchors: both must have the same
anchors. The check, with an error that quotes the configs' keys where it can."""
import torch

from ..errors import ConfigError

__all__ = ["check_same_anchors"]


def _cell_anchor_sizes(generator):
    """Per level, the (width, height) of each cell anchor, rounded for messages."""
    return [[(round(float(x2 - x1), 2), round(float(y2 - y1), 2)) for x1, y1, x2, y2 in cells.tolist()]
            for cells in generator.cell_anchors]


def _anchor_keys(cfg):
    gen = cfg.MODEL.ANCHOR_GENERATOR
    return {k: gen[k] for k in ("SIZES", "ASPECT_RATIOS", "OFFSET")}


def check_same_anchors(student_anchors, teacher_anchors, family, configs=None):
    """CRD decodes the teacher's box predictions on the student's anchors: they must be the
    teacher's own anchors too (same strides, offset, sizes and aspect ratios). ``configs``:
    (student cfg, teacher cfg, teacher config path), to quote their keys in the error."""
    s_strides, t_strides = list(student_anchors.strides), list(teacher_anchors.strides)
    node = family.config_node
    if configs is not None and family.anchors_from_config:
        s_cfg, t_cfg, t_path = configs
        s_keys, t_keys = _anchor_keys(s_cfg), _anchor_keys(t_cfg)
    else:
        s_keys = t_keys = None
    if s_strides != t_strides:
        raise ConfigError(
            f"Teacher and student anchors have different strides: student {s_strides}, teacher "
            f"{t_strides} (the head's levels, MODEL.{node}.IN_FEATURES, and the backbones' strides): "
            "CRD decodes the teacher's boxes on the student's anchors; give both the same levels"
        )
    s_cells, t_cells = list(student_anchors.cell_anchors), list(teacher_anchors.cell_anchors)
    same = len(s_cells) == len(t_cells) and all(
        a.shape == b.shape and torch.allclose(a.cpu(), b.cpu()) for a, b in zip(s_cells, t_cells))
    same_offset = float(student_anchors.offset) == float(teacher_anchors.offset)
    if s_keys is not None and not (same and same_offset):
        differ = [k for k in s_keys if s_keys[k] != t_keys[k]] or list(s_keys)
        raise ConfigError(
            "Teacher and student anchors differ: " + "; ".join(
                f"MODEL.ANCHOR_GENERATOR.{k} is {s_keys[k]} for the student but {t_keys[k]} for "
                f"the teacher ({t_path})" for k in differ)
            + ". CRD decodes the teacher's boxes on the student's anchors: train the teacher "
            "with the student's anchors (or set the student's to the teacher's)"
        )
    if not same_offset:
        raise ConfigError(
            f"Teacher and student anchors have different MODEL.ANCHOR_GENERATOR.OFFSET: student "
            f"{student_anchors.offset}, teacher {teacher_anchors.offset}: CRD decodes the teacher's "
            "boxes on the student's anchors; set the same offset in both configs"
        )
    if not same:
        keys = "MODEL.ANCHOR_GENERATOR.SIZES / ASPECT_RATIOS" if family.anchors_from_config else \
            f"the head's strides (MODEL.{node}.IN_FEATURES)"
        raise ConfigError(
            f"Teacher and student anchors differ ({keys}): anchor (width, height) per level, student "
            f"{_cell_anchor_sizes(student_anchors)}, teacher {_cell_anchor_sizes(teacher_anchors)}: "
            "CRD decodes the teacher's boxes on the student's anchors; give both the same anchors"
        )

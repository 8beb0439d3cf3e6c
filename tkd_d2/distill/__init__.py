"""TKD's three distillers as tensor-level building blocks (no configs here).

* :mod:`.crd` — cross-response losses (soft quality-focal BCE, weighted GIoU, centerness).
* :mod:`.ded` — decoupled expert loss (teacher-attention-weighted fg / bg MSE, SSIM term),
  built on :mod:`.attention`, :mod:`.masks`, :mod:`.ssim`.
* :mod:`.drd` — dual relation loss (GloRe reasoning of :mod:`.graph` on instance crops and
  on FPN maps).

``ssim`` lives in :mod:`.ssim` (``from tkd_d2.distill.ssim import ssim``); it is not
re-exported here so that the name keeps meaning the module.
"""
from .attention import channel_attention, expert_attention, spatial_attention
from .crd import (align_to_teacher_statistics, crd_box_loss, crd_centerness_loss, crd_cls_loss,
                  teacher_box_weight)
from .ded import DED_TERMS, DecoupledExpertLoss
from .drd import DRD_TERMS, DualRelationLoss, enhanced_map
from .graph import (GraphUnitBank, GraphUnitParams, draw_graph_unit, graph_reasoning, graph_unit_sizes,
                    output_weight)
from .masks import boxes_with_batch_index, foreground_background_masks

__all__ = [
    "spatial_attention", "channel_attention", "expert_attention",
    "foreground_background_masks", "boxes_with_batch_index",
    "DecoupledExpertLoss", "DED_TERMS",
    "GraphUnitBank", "GraphUnitParams", "graph_reasoning", "draw_graph_unit", "graph_unit_sizes",
    "output_weight",
    "DualRelationLoss", "DRD_TERMS", "enhanced_map",
    "crd_cls_loss", "crd_box_loss", "crd_centerness_loss", "teacher_box_weight",
    "align_to_teacher_statistics",
]

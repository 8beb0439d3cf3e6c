"""Run a RetinaNet / FCOS head conv by conv, so that CRD can tap the student's towers and
finish the computation with the teacher's remaining convs and predictors."""
from typing import List, NamedTuple, Optional

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K

from ..distill.crd import align_to_teacher_statistics

__all__ = ["HeadOutputs", "TowerBlocks", "split_tower", "run_head", "reuse_teacher_head"]


class TowerBlocks(NamedTuple):
    """A tower (``cls_subnet`` / ``bbox_subnet``) cut at each conv: pre-activation parts
    (conv and its norm, if any) and the activation that follows each."""

    pre: List[nn.Module]
    act: List[Optional[nn.Module]]


def split_tower(subnet: nn.Sequential) -> TowerBlocks:
    pre, act = [], []
    for m in subnet:
        if isinstance(m, nn.Conv2d):
            pre.append([m])
            act.append(None)
        elif isinstance(m, (nn.ReLU, nn.GELU, nn.SiLU)):
            act[-1] = m
        else:  # a norm layer following its conv
            pre[-1].append(m)
    return TowerBlocks([nn.Sequential(*p) if len(p) > 1 else p[0] for p in pre], act)


def _run_tower(blocks: TowerBlocks, x, tap_index, start=0):
    """Run blocks[start:]; return the output and the pre-activation output of conv ``tap_index``
    (1-based; 0 means the tower's input)."""
    tap = x if tap_index == 0 else None
    for i in range(start, len(blocks.pre)):
        x = blocks.pre[i](x)
        if i + 1 == tap_index:
            tap = x
        if blocks.act[i] is not None:
            x = blocks.act[i](x)
    return x, tap


class HeadOutputs(NamedTuple):
    predictions: list  # as head.forward returns: [logits, deltas] (+ [centerness] for FCOS)
    cls_taps: list  # per level, pre-activation cls tower features at the tap
    box_taps: list


def run_head(head, cls_blocks, box_blocks, features, tap_index) -> HeadOutputs:
    """``head(features)`` plus the tower features at ``tap_index``, in one pass."""
    has_ctr = hasattr(head, "ctrness")
    logits, deltas, ctrness, cls_taps, box_taps = [], [], [], [], []
    for feature in features:
        cls_feat, cls_tap = _run_tower(cls_blocks, feature, tap_index)
        box_feat, box_tap = _run_tower(box_blocks, feature, tap_index)
        logits.append(head.cls_score(cls_feat))
        deltas.append(head.bbox_pred(box_feat))
        if has_ctr:
            ctrness.append(head.ctrness(box_feat))
        cls_taps.append(cls_tap)
        box_taps.append(box_tap)
    predictions = [logits, deltas, ctrness] if has_ctr else [logits, deltas]
    return HeadOutputs(predictions, cls_taps, box_taps)


def reuse_teacher_head(teacher_head, cls_blocks, box_blocks, student_taps: HeadOutputs,
                       teacher_taps: HeadOutputs, tap_index, cls_align=None, box_align=None):
    """The student's tapped features through the rest of the teacher's head (CRD).

    Returns predictions shaped like ``head.forward``'s. Gradients flow to the student's
    features; the teacher's parameters must have ``requires_grad=False``.
    """
    has_ctr = hasattr(teacher_head, "ctrness")
    logits, deltas, ctrness = [], [], []
    for s_cls, s_box, t_cls, t_box in zip(student_taps.cls_taps, student_taps.box_taps,
                                         teacher_taps.cls_taps, teacher_taps.box_taps):
        if cls_align is not None:
            s_cls, s_box = cls_align(s_cls), box_align(s_box)
        x_cls = align_to_teacher_statistics(s_cls, t_cls)
        x_box = align_to_teacher_statistics(s_box, t_box)
        if tap_index > 0:  # the tap is pre-activation; the teacher's next conv expects post
            x_cls, x_box = F.relu(x_cls), F.relu(x_box)
        x_cls, _ = _run_tower(cls_blocks, x_cls, -1, start=tap_index)
        x_box, _ = _run_tower(box_blocks, x_box, -1, start=tap_index)
        logits.append(teacher_head.cls_score(x_cls))
        deltas.append(teacher_head.bbox_pred(x_box))
        if has_ctr:
            ctrness.append(teacher_head.ctrness(x_box))
    return [logits, deltas, ctrness] if has_ctr else [logits, deltas]


def flatten_levels(per_level: List[torch.Tensor], k: int) -> torch.Tensor:
    """(N, A*k, H, W) per level → (N, sum(H*W*A), k), detectron2's anchor order."""
    return torch.cat([permute_to_N_HWA_K(t, k) for t in per_level], dim=1)

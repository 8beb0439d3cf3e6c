"""CRD, cross-response distillation: losses between the teacher's head outputs and the outputs of
the teacher's head run on the (re-normalised) student head features (CrossKD semantics).

Pure functions on flattened tensors: logits (N, R, K) or (R, K), boxes (N, R, 4) or (R, 4)
XYXY already decoded; the teacher side is always detached. Building the cross head is the
detector's business (``tkd_d2/modeling``).
"""
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import complete_box_iou_loss, generalized_box_iou_loss

__all__ = ["crd_cls_loss", "crd_box_loss", "crd_centerness_loss", "teacher_box_weight", "align_to_teacher_statistics",
           "trusted_cls", "trusted_boxes", "CRD_BOX_LOSSES", "CRD_TRUST"]

_EPS = 1e-7
# box losses crd_box_loss offers (mode=)
CRD_BOX_LOSSES = ("giou", "ciou", "iou", "log_iou")
# MODEL.TKD.CRD.TRUST: where the student learns from the teacher. "always": everywhere (CrossKD);
# "where_better": only where the teacher is at least as close to the ground truth as the student
# itself (trusted_cls, trusted_boxes)
CRD_TRUST = ("always", "where_better")


def _normalise(total: Tensor, normalizer) -> Tensor:
    if isinstance(normalizer, Tensor):
        return total / normalizer.to(total.dtype).clamp_min(_EPS)
    return total / max(float(normalizer), _EPS)


def crd_cls_loss(student_logits: Tensor, teacher_logits: Tensor, beta: float = 1.0,
                 normalizer: Union[float, Tensor] = 1.0, weight: Optional[Tensor] = None) -> Tensor:
    """Quality-focal soft BCE against the teacher's probabilities (CrossKD's KDQualityFocalLoss).

    ``sum( BCE_logits(s, sigmoid(t)) · |sigmoid(t) - sigmoid(s)|^beta · weight ) / normalizer``;
    ``weight`` (optional) is per location (the logits' shape without K, e.g. anchors' label
    weights) or per logit (the logits' shape, e.g. :func:`trusted_cls`). Zero, with zero
    gradient, when the student logits equal the teacher's.
    """
    target = teacher_logits.detach().sigmoid()
    loss = F.binary_cross_entropy_with_logits(student_logits, target, reduction="none")
    gap = (student_logits.sigmoid() - target).abs()
    if beta < 1:
        # |gap|^beta has an infinite slope at 0 for beta < 1: keep the gradient finite (0) there
        at_zero = gap == 0
        gap = torch.where(at_zero, torch.zeros_like(gap), torch.where(at_zero, torch.ones_like(gap), gap).pow(beta))
    else:
        gap = gap.pow(beta)
    loss = loss * gap
    if weight is not None:
        weight = weight if weight.dim() == loss.dim() else weight.unsqueeze(-1)
        loss = loss * weight.to(loss.dtype)
    return _normalise(loss.sum(), normalizer)


def trusted_cls(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
    """Per logit, 1 where the teacher's probability is at least as close to the ground truth as
    the student's own, else 0: (..., K) logits, (...) assigned labels (K: background, -1: the
    assigner ignores the location) → (..., K). The target of a logit is 1 for its location's
    class and 0 otherwise; an ignored location has none, and trusts the teacher.

    Where it is 1, moving the student toward the teacher moves it toward the ground truth, so
    distillation through these weights never pulls a logit away from its label; a teacher
    worse than the student at a logit is not copied there."""
    num_classes = student_logits.shape[-1]
    target = F.one_hot(labels.clamp(min=0), num_classes + 1)[..., :num_classes].to(student_logits.dtype)
    with torch.no_grad():
        teacher_error = (teacher_logits.sigmoid() - target).abs()
        student_error = (student_logits.sigmoid() - target).abs()
        trusted = (teacher_error <= student_error) | (labels < 0).unsqueeze(-1)
    return trusted.to(student_logits.dtype)


def trusted_boxes(student_boxes: Tensor, teacher_boxes: Tensor, gt_boxes: Tensor, positive: Tensor) -> Tensor:
    """Per location, 1 where the teacher's box overlaps the matched ground-truth box at least as
    well (IoU) as the student's own, else 0; (..., 4) XYXY boxes, (...) bool ``positive`` (the
    locations with a ground-truth box: elsewhere no box is trained, and the teacher is trusted)
    → (...)."""
    with torch.no_grad():
        shape = positive.shape
        gt = gt_boxes.reshape(-1, 4)
        teacher_iou = _paired_iou(teacher_boxes.reshape(-1, 4), gt).reshape(shape)
        student_iou = _paired_iou(student_boxes.reshape(-1, 4), gt).reshape(shape)
        trusted = (teacher_iou >= student_iou) | ~positive
    return trusted.to(student_boxes.dtype)


def teacher_box_weight(teacher_logits: Tensor) -> Tensor:
    """The teacher's max class probability per location: (..., K) logits → (...)."""
    return teacher_logits.detach().max(dim=-1).values.sigmoid()


def _box_valid(boxes: Tensor) -> Tensor:
    return (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1]) & torch.isfinite(boxes).all(dim=-1)


def crd_box_loss(student_boxes: Tensor, teacher_boxes: Tensor, weight: Tensor,
                 valid_mask: Optional[Tensor] = None, normalizer: Union[None, float, Tensor] = None,
                 mode: str = "giou") -> Tensor:
    """Weighted box loss between boxes decoded from the cross head and from the teacher.

    Args:
        student_boxes, teacher_boxes: (..., 4) XYXY.
        weight: (...) per-location weight, normally :func:`teacher_box_weight`.
        valid_mask: (...) bool; locations outside it are ignored, and so are locations where
            either box is degenerate (x2 <= x1 or y2 <= y1) or not finite.
        normalizer: divides the weighted sum; None = the sum of the weights of the valid
            locations. (The reference divides by its detector's ``avg_factor``: the number
            of positive anchors for RetinaNet, the summed centerness targets for FCOS.)
        mode: "giou" (``1 - GIoU``, the reference's R-50 -> R-18 RetinaNet), "ciou"
            (``1 - CIoU``, torchvision's complete-IoU loss: the reference's R-101 -> R-50
            RetinaNet), "iou" (``1 - IoU``) or "log_iou" (``-log IoU``, mmdet's IoULoss
            default, the reference's FCOS).
    """
    teacher_boxes = teacher_boxes.detach()
    weight = weight.detach()
    valid = _box_valid(student_boxes) & _box_valid(teacher_boxes)
    if valid_mask is not None:
        valid = valid & valid_mask.bool()
    # invalid locations get a harmless dummy pair so no NaN reaches the gradient
    dummy = student_boxes.new_tensor([0.0, 0.0, 1.0, 1.0])
    student_safe = torch.where(valid[..., None], student_boxes, dummy)
    teacher_safe = torch.where(valid[..., None], teacher_boxes, dummy)
    if mode == "giou":
        per_box = generalized_box_iou_loss(student_safe.reshape(-1, 4), teacher_safe.reshape(-1, 4),
                                           reduction="none", eps=_EPS)
    elif mode == "ciou":
        per_box = complete_box_iou_loss(student_safe.reshape(-1, 4), teacher_safe.reshape(-1, 4),
                                        reduction="none", eps=_EPS)
    elif mode in ("iou", "log_iou"):
        iou = _paired_iou(student_safe.reshape(-1, 4), teacher_safe.reshape(-1, 4))
        per_box = 1.0 - iou if mode == "iou" else -torch.log(iou.clamp_min(1e-6))
    else:
        raise ValueError(f"crd_box_loss: unknown mode {mode!r}; expected one of {CRD_BOX_LOSSES}")
    per_box = per_box.reshape(valid.shape)
    weight = torch.where(valid, weight.to(per_box.dtype), torch.zeros_like(per_box))
    total = (per_box * weight).sum()
    if normalizer is None:
        normalizer = weight.sum()
    return _normalise(total, normalizer)


def _paired_iou(a: Tensor, b: Tensor) -> Tensor:
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp_min(0).prod(dim=1)
    area_a = (a[:, 2:] - a[:, :2]).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(dim=1)
    return inter / (area_a + area_b - inter + _EPS)


def crd_centerness_loss(student_ctr_logits: Tensor, teacher_ctr_logits: Tensor,
                        weight: Optional[Tensor] = None, normalizer: Union[None, float, Tensor] = None) -> Tensor:
    """BCE of the cross-head centerness logits against the teacher's centerness probability.

    Weighted sum / ``normalizer`` (None: the sum of the weights, or the element count when
    ``weight`` is None). The minimum (not zero) is at student == teacher. Not in the
    reference (its FCOS distils cls and box only): an option.
    """
    target = teacher_ctr_logits.detach().sigmoid()
    loss = F.binary_cross_entropy_with_logits(student_ctr_logits, target, reduction="none")
    if weight is not None:
        weight = weight.detach().to(loss.dtype).reshape(loss.shape)
        loss = loss * weight
        default = weight.sum()
    else:
        default = float(loss.numel())
    return _normalise(loss.sum(), default if normalizer is None else normalizer)


def align_to_teacher_statistics(student_feat: Tensor, teacher_feat: Tensor, eps: float = 1e-6) -> Tensor:
    """Re-normalise (N, C, H, W) student head features to the teacher's per-channel mean / std.

    Statistics over (N, H, W), as the reference's ``align_scale``, but with the population
    std: the reference's unbiased std is NaN when a level has a single location (a 1x1 P7
    with one image per process), which would poison the whole loss. The teacher's
    statistics are constants. ``eps`` is added to the student's std (inside the square
    root, as ``eps²``: the same to ~1e-6 relative, and exactly finite at zero variance).
    """
    # Both sides are batch-norm passes (~2x faster on CPU than var_mean over (N, H, W) plus
    # the affine map): the teacher's statistics, then the student standardised with the
    # teacher's std / mean as the affine weight / bias. torch.batch_norm, unlike
    # F.batch_norm, accepts a level with a single location.
    with torch.no_grad():
        _, t_mean, t_invstd = torch.native_batch_norm(teacher_feat, None, None, None, None, True, 0.0, 0.0)
        # at zero variance the kernel gives invstd 0 (CPU) or inf: std 0 either way
        t_std = torch.where(t_invstd > 0, t_invstd.reciprocal(), torch.zeros_like(t_invstd))
    return torch.batch_norm(student_feat, t_std.to(student_feat.dtype), t_mean.to(student_feat.dtype),
                            None, None, True, 0.0, eps * eps, torch.backends.cudnn.enabled)

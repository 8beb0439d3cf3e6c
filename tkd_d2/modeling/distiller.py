"""TKDDistiller: a student RetinaNet / FCOS trained with Triple Knowledge Distillation.

Data flow: batched_inputs → teacher (no grad) + student → FPN features / head outputs →
CRD, DED, DRD → a flat dict of named losses. The teacher is held outside the module tree
(not a submodule), so it is not in ``parameters()``, the optimizer, the DDP wrapper or the
``state_dict``; it follows the distiller's device/dtype and stays in eval mode.

The distiller's ``state_dict`` is the student's, key for key, plus ``distill_*`` entries
(align convs, fixed graph units) that a plain student ignores: the checkpoint written by
training evaluates with the plain student config.
"""
import logging
import math
from typing import Dict, List

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from detectron2.structures import Boxes
from detectron2.utils.events import get_event_storage

from ..config import student_cfg as to_student_cfg
from ..distill.balance import BALANCE_MEASURES, LossBalancer, gradient_norms
from ..distill.crd import (CRD_BOX_LOSSES, CRD_TRUST, crd_box_loss, crd_centerness_loss, crd_cls_loss,
                           teacher_box_weight, trusted_boxes, trusted_cls)
from ..distill.ded import DecoupledExpertLoss
from ..distill.drd import DualRelationLoss
from ..errors import ConfigError, KDLossError
from .anchor_check import check_same_anchors
from .assignment import keep_assignment
from .decode import decode_anchored
from .family import family_of
from .heads import flatten_levels, reuse_teacher_head, run_head, split_tower
from .kd_weights import kd_weights
from .teacher import build_teacher

__all__ = ["TKDDistiller", "KDLossError", "CRD_NORMALIZERS", "CRD_IGNORED_ANCHORS"]

logger = logging.getLogger(__name__)

STUDENT_PREFIX = "student."
# "running": the student detector's own running average of positives (detectron2's);
# "reference": the batch's own count (the family's reference_crd_normalizer)
CRD_NORMALIZERS = ("running", "reference")
# MODEL.TKD.CRD.IGNORED_ANCHORS: what CRD does with anchors the assigner ignores (label -1)
CRD_IGNORED_ANCHORS = ("exclude", "include")
# MODEL.TKD.FEATURE_ALIGN: where DED and DRD meet when the FPN widths differ. "student": a
# trainable 1x1 conv takes the student's maps to the teacher's width (it learns part of what the
# terms teach and is dropped after training); "teacher": a fixed orthonormal projection takes the
# teacher's maps to the student's width, so the whole signal reaches the student's FPN
FEATURE_ALIGNS = ("student", "teacher")


@META_ARCH_REGISTRY.register()
class TKDDistiller(nn.Module):
    @configurable
    def __init__(
        self,
        *,
        student: nn.Module,
        teacher: nn.Module,
        teacher_info: Dict = None,
        in_features: List[str],
        reused_head_index: int,
        weights: Dict[str, float],
        warmup_iters: int = 0,
        crd_beta: float = 1.0,
        crd_box_loss_type: str = "giou",
        crd_normalizer: str = "running",
        crd_ignored_anchors: str = "include",
        crd_trust: str = "where_better",
        ded: DecoupledExpertLoss = None,
        drd: DualRelationLoss = None,
        balancer: LossBalancer = None,
        balance_measure: str = "loss",
        feature_align: str = "student",
    ):
        """
        Args:
            student, teacher: detectors of the same family (RetinaNet or FCOS).
            in_features: FPN levels for DED / DRD.
            reused_head_index: CRD taps the student's towers after this conv (1-based,
                pre-activation; 0 = head input) and finishes in the teacher's head.
            weights: loss name (e.g. "loss_ded_fg") → weight; 0 skips that computation.
            warmup_iters: KD weights ramp linearly from 0 over this many iterations.
            balancer: scales the weighted KD terms to shares of the detection loss,
                calibrated over its first steps (MODEL.TKD.BALANCE / CALIBRATE_FRACTION).
            balance_measure: one of ``BALANCE_MEASURES`` (MODEL.TKD.BALANCE.MEASURE): the balancer
                observes the terms' values, or their gradient norms on the student's FPN maps.
            crd_box_loss_type: one of ``CRD_BOX_LOSSES`` (MODEL.TKD.CRD.BOX_LOSS).
            crd_normalizer: one of ``CRD_NORMALIZERS`` (MODEL.TKD.CRD.NORMALIZER).
            crd_ignored_anchors: one of ``CRD_IGNORED_ANCHORS`` (MODEL.TKD.CRD.IGNORED_ANCHORS).
            crd_trust: one of ``CRD_TRUST`` (MODEL.TKD.CRD.TRUST).
            feature_align: one of ``FEATURE_ALIGNS`` (MODEL.TKD.FEATURE_ALIGN).
        """
        super().__init__()
        self.student = student
        # A tuple hides the teacher from nn.Module's registry (params, buffers, state_dict).
        self._teacher = (teacher,)
        teacher.eval()
        teacher.requires_grad_(False)
        self.teacher_info = teacher_info or {}
        self.in_features = list(in_features)
        self.reused_head_index = int(reused_head_index)
        self.weights = dict(weights)
        self.warmup_iters = int(warmup_iters)
        self.crd_beta = crd_beta
        if crd_box_loss_type not in CRD_BOX_LOSSES:
            raise ConfigError(f"MODEL.TKD.CRD.BOX_LOSS={crd_box_loss_type!r} is not one of {CRD_BOX_LOSSES}")
        if crd_normalizer not in CRD_NORMALIZERS:
            raise ConfigError(f"MODEL.TKD.CRD.NORMALIZER={crd_normalizer!r} is not one of {CRD_NORMALIZERS}")
        self.crd_box_loss_type = crd_box_loss_type
        self.crd_normalizer = crd_normalizer
        if crd_ignored_anchors not in CRD_IGNORED_ANCHORS:
            raise ConfigError(f"MODEL.TKD.CRD.IGNORED_ANCHORS={crd_ignored_anchors!r} is not one of "
                              f"{CRD_IGNORED_ANCHORS}")
        if crd_trust not in CRD_TRUST:
            raise ConfigError(f"MODEL.TKD.CRD.TRUST={crd_trust!r} is not one of {CRD_TRUST}")
        self.crd_trust_where_better = crd_trust == "where_better"
        self.family = _family_of_module(student)
        # only where the assigner ignores some anchors (RetinaNet), and asked to
        self.crd_exclude_ignored = crd_ignored_anchors == "exclude" and self.family.assigner_ignores
        self.distill_ded = ded
        self.distill_drd = drd
        self._iter = 0
        # its sums and scales are buffers: the checkpoint keeps the calibration for a resume
        self.distill_balance = balancer
        if balance_measure not in BALANCE_MEASURES:
            raise ConfigError(f"MODEL.TKD.BALANCE.MEASURE={balance_measure!r} is not one of {BALANCE_MEASURES}")
        self.balance_measure = balance_measure

        s_head, t_head = student.head, teacher.head
        num_convs = len(split_tower(s_head.cls_subnet).pre)
        if not 0 <= self.reused_head_index <= num_convs:
            raise ValueError(
                f"MODEL.TKD.CRD.REUSED_HEAD_INDEX={reused_head_index} outside [0, {num_convs}]"
            )
        if num_convs != len(split_tower(t_head.cls_subnet).pre):
            raise ValueError("CRD needs student and teacher heads with the same number of convs")
        check_same_anchors(student.anchor_generator, teacher.anchor_generator, self.family)
        self._s_blocks = (split_tower(s_head.cls_subnet), split_tower(s_head.bbox_subnet))
        self._t_blocks = (split_tower(t_head.cls_subnet), split_tower(t_head.bbox_subnet))

        # Align convs where the student's channels differ from the teacher's.
        s_shapes, t_shapes = student.backbone.output_shape(), teacher.backbone.output_shape()
        s_ch, t_ch = s_shapes[self.in_features[0]].channels, t_shapes[self.in_features[0]].channels
        self.strides = [s_shapes[f].stride for f in self.in_features]
        if [t_shapes[f].stride for f in self.in_features] != self.strides:
            raise ValueError("Student and teacher FPN levels have different strides")
        if feature_align not in FEATURE_ALIGNS:
            raise ConfigError(f"MODEL.TKD.FEATURE_ALIGN={feature_align!r} is not one of {FEATURE_ALIGNS}")
        self.distill_feature_align = None
        self.feature_align = feature_align
        if s_ch != t_ch and feature_align == "student":
            self.distill_feature_align = nn.Conv2d(s_ch, t_ch, 1)
        # not in the checkpoint: the same seeded draw every time
        self.register_buffer("distill_teacher_projection", teacher_projection(t_ch, s_ch)
                             if s_ch != t_ch and feature_align == "teacher" else None, persistent=False)
        s_head_ch = s_head.cls_score.in_channels
        t_head_ch = t_head.cls_score.in_channels
        if self.reused_head_index == 0:
            s_head_ch, t_head_ch = s_ch, t_ch
        if s_head_ch != t_head_ch:
            self.distill_cls_align = nn.Conv2d(s_head_ch, t_head_ch, 1)
            self.distill_box_align = nn.Conv2d(s_head_ch, t_head_ch, 1)
        else:
            self.distill_cls_align = self.distill_box_align = None

        self._register_state_dict_hook(_strip_student_prefix)
        self._register_load_state_dict_pre_hook(_add_student_prefix)

    # ------------------------------------------------------------------ config
    @classmethod
    def from_config(cls, cfg):
        tkd = cfg.MODEL.TKD
        family = family_of(cfg)
        student = build_model(to_student_cfg(cfg))
        teacher, teacher_cfg, info = build_teacher(cfg)
        # before the distiller's own check: here the message can quote both configs' keys
        check_same_anchors(student.anchor_generator, teacher.anchor_generator, family,
                           configs=(cfg, teacher_cfg, info["config"]))
        index = tkd.CRD.REUSED_HEAD_INDEX
        if index < 0:
            index = family.reused_head_index
        weights, balancer = kd_weights(tkd, family.has_centerness)
        t_channels = teacher.backbone.output_shape()[tkd.IN_FEATURES[0]].channels
        if tkd.FEATURE_ALIGN == "teacher":  # DRD's graph units run at the width where the terms meet
            t_channels = student.backbone.output_shape()[tkd.IN_FEATURES[0]].channels
        ded = drd = None
        if any(weights[k] for k in ("loss_ded_fg", "loss_ded_bg", "loss_ded_ssim")):
            ded = DecoupledExpertLoss(
                temperature=tkd.DED.TEMPERATURE,
                ssim_window=tkd.DED.SSIM_WINDOW,
                ssim_sigma=tkd.DED.SSIM_SIGMA,
            )
        if weights["loss_drd_instance"] or weights["loss_drd_pixel"]:
            drd = DualRelationLoss(
                in_channels=t_channels,
                roi_size=tkd.DRD.ROI_SIZE,
                temperature=tkd.DED.TEMPERATURE,
                mode=tkd.DRD.GRAPH_MODE,
                seed=tkd.DRD.SEED,
                pixel_num_state=tkd.DRD.PIXEL_NUM_STATE or None,
                pixel_num_node=tkd.DRD.PIXEL_NUM_NODE or None,
                instance_num_state=tkd.DRD.INSTANCE_NUM_STATE or None,
                instance_num_node=tkd.DRD.INSTANCE_NUM_NODE or None,
                instance_form=tkd.DRD.INSTANCE_FORM,
            )
        return {
            "student": student,
            "teacher": teacher,
            "teacher_info": info,
            "in_features": tkd.IN_FEATURES,
            "reused_head_index": index,
            "weights": weights,
            "warmup_iters": tkd.WARMUP_ITERS,
            "crd_beta": tkd.CRD.BETA,
            "crd_box_loss_type": tkd.CRD.BOX_LOSS,
            "crd_normalizer": tkd.CRD.NORMALIZER,
            "crd_ignored_anchors": tkd.CRD.IGNORED_ANCHORS,
            "crd_trust": tkd.CRD.TRUST,
            "ded": ded,
            "drd": drd,
            "balancer": balancer,
            "balance_measure": tkd.BALANCE.MEASURE,
            "feature_align": tkd.FEATURE_ALIGN,
        }

    # ------------------------------------------------------------------ teacher handling
    @property
    def teacher(self):
        return self._teacher[0]

    def train(self, mode=True):
        super().train(mode)
        self.teacher.train(False)  # the teacher is always in eval mode
        return self

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self.teacher._apply(fn, *args, **kwargs)
        return self

    @property
    def device(self):
        return self.student.device

    def _current_iteration(self):
        """The training iteration, from detectron2's event storage: every detectron2 training
        loop keeps it (and the detectors' own losses need it), so no hook can be forgotten."""
        try:
            self._iter = int(get_event_storage().iter)
        except AssertionError:
            raise RuntimeError(
                "TKDDistiller trains inside detectron2's EventStorage (as every detectron2 "
                "trainer runs): wrap the step in `with EventStorage(start_iter):`"
            ) from None
        return self._iter

    @property
    def warmup_factor(self):
        if self.warmup_iters <= 0:
            return 1.0
        return min(1.0, self._iter / self.warmup_iters)

    # ------------------------------------------------------------------ forward
    def forward(self, batched_inputs):
        if not self.training:
            return self.student(batched_inputs)
        self._current_iteration()
        student, teacher = self.student, self.teacher
        images = student.preprocess_image(batched_inputs)
        s_feature_dict = student.backbone(images.tensor)
        s_feats = [s_feature_dict[f] for f in student.head_in_features]
        s_head = run_head(student.head, *self._s_blocks, s_feats, self.reused_head_index)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        with keep_assignment(student) as assignment:
            losses = student.forward_training(images, s_feats, s_head.predictions, gt_instances)

        active = {k for k, v in self.weights.items() if v}
        need_crd = any(k.startswith("loss_crd") for k in active)
        with torch.no_grad():
            t_images = teacher.preprocess_image(batched_inputs)
            if t_images.tensor.shape != images.tensor.shape:
                raise ValueError(
                    f"Teacher and student pad images differently ({tuple(t_images.tensor.shape)}"
                    f" vs {tuple(images.tensor.shape)}): use the same size_divisibility"
                )
            t_feature_dict = teacher.backbone(t_images.tensor)
            t_feats = [t_feature_dict[f] for f in teacher.head_in_features]
            t_head = run_head(teacher.head, *self._t_blocks, t_feats, self.reused_head_index) \
                if need_crd else None

        kd = {}  # the KD terms, unweighted
        if need_crd:
            kd.update(self._crd_losses(s_feats, s_head, t_head, gt_instances, active, assignment))
        gt_boxes = [inst.gt_boxes.tensor for inst in gt_instances]
        s_level = [s_feature_dict[f] for f in self.in_features]
        t_level = [t_feature_dict[f] for f in self.in_features]
        if self.distill_feature_align is not None and (self.distill_ded or self.distill_drd):
            s_level = [self.distill_feature_align(x) for x in s_level]
        if self.distill_teacher_projection is not None and (self.distill_ded or self.distill_drd):
            t_level = [F.conv2d(x, self.distill_teacher_projection.to(x.dtype)) for x in t_level]
        if self.distill_ded is not None:
            terms = [t for t in ("fg", "bg", "ssim") if f"loss_ded_{t}" in active]
            if terms:
                ded = self.distill_ded(s_level, t_level, gt_boxes, self.strides, compute=terms)
                kd.update({f"loss_ded_{t}": ded[t] for t in terms})
        if self.distill_drd is not None:
            terms = [t for t in ("instance", "pixel") if f"loss_drd_{t}" in active]
            if terms:
                drd = self.distill_drd(s_level, t_level, gt_boxes, self.strides,
                                       step=self._iter, compute=terms)
                kd.update({f"loss_drd_{t}": drd[t] for t in terms})
        balancer = self.distill_balance
        # while the balance calibrates, the terms are only observed: unscaled, a feature term can be
        # 1e5 x the detection loss, and even one such step wrecks the student's FPN
        observing = balancer is not None and bool(kd) and not balancer.calibrated
        if observing and balancer.observe(*self._balance_observation(kd, losses, s_feats, s_feature_dict)):
            what = "gradient norm on the student's FPN" if self.balance_measure == "fpn_gradient" else "value"
            logger.info("KD balance over %d iterations, KD observed, not trained on (each term's %s at full "
                        "weight as a multiple of the detection loss's -> its scale = its share): %s",
                        balancer.iters, what, balancer.summary())
        factor = 0.0 if observing else self.warmup_factor
        scale = balancer.scale_of if balancer is not None else (lambda name: 1.0)
        losses.update({k: v * (self.weights[k] * factor * scale(k)) for k, v in kd.items()})
        self._check_finite(losses)
        return losses

    def _balance_observation(self, kd, detection_losses, s_feats, s_feature_dict):
        """What the balancer observes this step: ``(term → measure, detection's measure)``."""
        terms = {k: v * self.weights[k] for k, v in kd.items()}
        detection = sum(detection_losses.values())
        if self.balance_measure == "loss":
            return {k: v.detach() for k, v in terms.items()}, detection.detach()
        # every map a term reaches the student through: the head's levels and the feature terms'
        maps = list({id(x): x for x in [*s_feats, *(s_feature_dict[f] for f in self.in_features)]}.values())
        norms = gradient_norms({"": detection, **terms}, maps)
        return norms, norms.pop("")

    def _crd_losses(self, s_feats, s_head, t_head, gt_instances, active, assignment):
        """The unweighted CRD terms named in ``active``; ``assignment``: the anchors and labels
        the student's own losses used this step (:func:`keep_assignment`), empty if they were not
        seen, and then made here."""
        student, teacher = self.student, self.teacher
        reused = reuse_teacher_head(
            teacher.head, *self._t_blocks, s_head, t_head, self.reused_head_index,
            self.distill_cls_align, self.distill_box_align,
        )
        num_classes = student.num_classes
        out = {}
        t_logits = flatten_levels(t_head.predictions[0], num_classes)
        # per level Boxes (the teacher's are the same) and the student's own assignment
        anchors = assignment.get("anchors") or student.anchor_generator(s_feats)
        exclude_ignored, trust = self.crd_exclude_ignored, self.crd_trust_where_better
        need_labels = exclude_ignored or self.crd_normalizer == "reference" or trust
        labels, matched_boxes = None, None
        if need_labels:
            labels, matched_boxes = (assignment["labels"], assignment["matched_boxes"]) if assignment \
                else student.label_anchors(anchors, gt_instances)
        stacked = torch.stack(labels) if need_labels else None  # (N, R)
        positive = (stacked >= 0) & (stacked != num_classes) if need_labels else None  # (N, R)
        # (N, R): 0 where the assigner ignores the anchor (label -1), as the reference's label weights
        label_weight = (stacked >= 0).to(t_logits.dtype) if exclude_ignored else None
        normalizer = self._crd_normalizer(anchors, positive, matched_boxes)
        if "loss_crd_cls" in active:
            r_logits = flatten_levels(reused[0], num_classes)
            cls_weight = label_weight
            if trust:  # (N, R, K): the logits where the teacher is nearer the label than the student
                cls_weight = trusted_cls(flatten_levels(s_head.predictions[0], num_classes), t_logits, stacked)
                self._put_trust("crd_trusted_cls", cls_weight)
                if label_weight is not None:
                    cls_weight = cls_weight * label_weight.unsqueeze(-1)
            out["loss_crd_cls"] = crd_cls_loss(
                r_logits, t_logits, beta=self.crd_beta, normalizer=normalizer, weight=cls_weight
            )
        if "loss_crd_box" in active or "loss_crd_ctr" in active:
            weight = teacher_box_weight(t_logits)  # (N, R): teacher's max class probability
            if label_weight is not None:
                weight = weight * label_weight
        if "loss_crd_box" in active:
            flat = Boxes.cat(anchors).tensor  # (R, 4)
            # both come out of the teacher's box predictor: decode with the teacher's transform
            transform = teacher.box2box_transform
            r_boxes = decode_anchored(transform, flatten_levels(reused[1], 4), flat)  # (N, R, 4)
            t_boxes = decode_anchored(transform, flatten_levels(t_head.predictions[1], 4), flat)
            box_weight = weight
            if trust:  # the positives where the teacher's box fits the ground truth at least as well
                with torch.no_grad():  # only the positives have a ground-truth box to compare
                    image, anchor = positive.nonzero(as_tuple=True)
                    s_deltas = flatten_levels(s_head.predictions[1], 4)[image, anchor]
                    s_boxes = student.box2box_transform.apply_deltas(s_deltas, flat[anchor])
                    trusted = torch.ones_like(weight)
                    trusted[image, anchor] = trusted_boxes(
                        s_boxes, t_boxes[image, anchor], torch.stack(matched_boxes)[image, anchor],
                        torch.ones_like(anchor, dtype=torch.bool))
                self._put_trust("crd_trusted_box", trusted[positive])
                box_weight = weight * trusted
            out["loss_crd_box"] = crd_box_loss(
                r_boxes, t_boxes, box_weight, normalizer=normalizer, mode=self.crd_box_loss_type,
                valid_mask=None if label_weight is None else label_weight > 0,
            )
        if "loss_crd_ctr" in active:
            r_ctr = flatten_levels(reused[2], 1).squeeze(-1)
            t_ctr = flatten_levels(t_head.predictions[2], 1).squeeze(-1)
            out["loss_crd_ctr"] = crd_centerness_loss(
                r_ctr, t_ctr, weight, normalizer=normalizer
            )
        return out

    @staticmethod
    def _put_trust(name, trusted):
        """Log the share of ``trusted`` locations (metrics.json, the curves)."""
        if trusted.numel():
            get_event_storage().put_scalar(name, float(trusted.float().mean()))

    def _crd_normalizer(self, anchors, positive, matched_boxes):
        """What CRD's sums are divided by (MODEL.TKD.CRD.NORMALIZER).

        "running": the student's running average of positives per batch, as its own losses
        (detectron2's EMA: early on and after a change far from the batch's count).
        "reference": the batch's positive anchors (RetinaNet; at least 1) or the sum of the
        positives' centerness targets (FCOS; at least 1e-6), as the reference's avg_factor
        (per process: the reference's FCOS averages it over GPUs). ``positive``: (N, R), the
        anchors assigned a class (None unless labels were needed).
        """
        if self.crd_normalizer == "running":
            return float(getattr(self.student, "loss_normalizer", 1.0))
        if self.family.reference_crd_normalizer == "positives":
            return positive.sum().clamp_min(1).to(torch.float32)
        centerness = self.student.compute_ctrness_targets(anchors, matched_boxes)  # (N, R)
        return centerness[positive].sum().clamp_min(1e-6)

    def _check_finite(self, losses):
        values = torch.stack([v.detach().float() for v in losses.values()])
        if torch.isfinite(values).all():
            return
        bad = [k for k, v in losses.items() if not torch.isfinite(v.detach()).all()]
        raise KDLossError(
            f"Loss term(s) {bad} became NaN or infinite at iteration {self._iter} "
            f"(all terms: { {k: float(v) for k, v in losses.items()} }). Lower SOLVER.BASE_LR "
            "or the weight of the named term, or enable SOLVER.CLIP_GRADIENTS."
        )


def teacher_projection(t_ch, s_ch, seed=0):
    """A fixed (s_ch, t_ch, 1, 1) 1x1 conv weight with orthonormal rows scaled by
    sqrt(t_ch / s_ch): it maps the teacher's t_ch channels onto s_ch, keeping a feature's norm
    in expectation and the dot products between features approximately (a seeded draw)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(t_ch, s_ch, generator=g))  # (t_ch, s_ch), orthonormal columns
    return (q.t() * math.sqrt(t_ch / s_ch)).reshape(s_ch, t_ch, 1, 1).contiguous()


def _strip_student_prefix(module, state_dict, prefix, local_metadata):
    """Save the student's tensors under the plain student's names."""
    full = prefix + STUDENT_PREFIX
    for key in [k for k in state_dict if k.startswith(full)]:
        state_dict[prefix + key[len(full):]] = state_dict.pop(key)
    return state_dict


def _add_student_prefix(state_dict, prefix, local_metadata, strict, missing_keys,
                        unexpected_keys, error_msgs):
    """Load plain-student names (and ``distill_*`` entries) back into the distiller."""
    for key in list(state_dict):
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        if rest.startswith("distill_") or rest.startswith(STUDENT_PREFIX):
            continue
        state_dict[prefix + STUDENT_PREFIX + rest] = state_dict.pop(key)


def _family_of_module(detector):
    """The family of a detector module (its class or a base class is the meta-architecture)."""
    for cls in type(detector).__mro__:
        try:
            return family_of(cls.__name__, "the student's class")
        except ConfigError:
            continue
    return family_of(type(detector).__name__, "the student's class")  # raises, naming it

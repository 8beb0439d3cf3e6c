"""FCOS buildable from a yacs config (detectron2 ships it for LazyConfig only)."""
import math

import torch
from fvcore.nn import sigmoid_focal_loss_jit
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.box_regression import Box2BoxTransformLinear, _dense_box_regression_loss
from detectron2.modeling.meta_arch.fcos import FCOS, FCOSHead
from detectron2.structures import Boxes
from detectron2.utils.events import get_event_storage

__all__ = ["FCOSDetector", "Box2BoxTransformExpLinear"]

_BOX_LOSSES = ("giou", "diou", "ciou", "smooth_l1")
_BOX_ACTIVATIONS = ("relu", "exp")


class Box2BoxTransformExpLinear(Box2BoxTransformLinear):
    """FCOS edge distances as ``exp(delta)`` (× the anchor size), the FCOS paper's form.

    ``get_deltas`` stays linear (distances), as detectron2's centerness targets need; so a
    loss that compares deltas directly (smooth L1) does not apply. The exponent is clamped
    like detectron2's ``Box2BoxTransform`` (at most 62.5 strides).
    """

    def __init__(self, normalize_by_size=True, scale_clamp=math.log(1000.0 / 16)):
        super().__init__(normalize_by_size=normalize_by_size)
        self.scale_clamp = scale_clamp

    def apply_deltas(self, deltas, boxes):
        # positive distances: the parent's relu is then the identity
        return super().apply_deltas(torch.exp(deltas.clamp(max=self.scale_clamp)), boxes)


@META_ARCH_REGISTRY.register()
class FCOSDetector(FCOS):
    """detectron2's :class:`FCOS`, built from ``cfg.MODEL.FCOS`` with a configurable box loss."""

    @configurable
    def __init__(self, *, box_reg_loss_type="giou", box_activation="relu", **kwargs):
        if box_reg_loss_type not in _BOX_LOSSES:
            raise ValueError(
                f"MODEL.FCOS.BOX_LOSS={box_reg_loss_type!r} is not one of {_BOX_LOSSES}"
            )
        if box_activation not in _BOX_ACTIVATIONS:
            raise ValueError(
                f"MODEL.FCOS.BOX_ACTIVATION={box_activation!r} is not one of {_BOX_ACTIVATIONS}"
            )
        if box_activation == "exp":
            if box_reg_loss_type == "smooth_l1":
                raise ValueError(
                    "MODEL.FCOS.BOX_ACTIVATION='exp' needs a box-space loss (giou, diou, ciou): "
                    "smooth_l1 compares the raw predictions with linear distance targets"
                )
            kwargs.setdefault("box2box_transform", Box2BoxTransformExpLinear(normalize_by_size=True))
        super().__init__(**kwargs)
        self.box_reg_loss_type = box_reg_loss_type

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        fcos = cfg.MODEL.FCOS
        shapes = backbone.output_shape()
        missing = [f for f in fcos.IN_FEATURES if f not in shapes]
        if missing:
            raise ValueError(
                f"MODEL.FCOS.IN_FEATURES {missing} are not produced by the backbone "
                f"(it gives {sorted(shapes)})"
            )
        input_shape = [shapes[f] for f in fcos.IN_FEATURES]
        head = FCOSHead(
            input_shape=input_shape,
            num_classes=fcos.NUM_CLASSES,
            conv_dims=[input_shape[0].channels] * fcos.NUM_CONVS,
            norm=fcos.HEAD_NORM,
            prior_prob=fcos.PRIOR_PROB,
        )
        return {
            "backbone": backbone,
            "head": head,
            "head_in_features": list(fcos.IN_FEATURES),
            "num_classes": fcos.NUM_CLASSES,
            "center_sampling_radius": fcos.CENTER_SAMPLING_RADIUS,
            "focal_loss_alpha": fcos.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": fcos.FOCAL_LOSS_GAMMA,
            "test_score_thresh": fcos.TEST_SCORE_THRESH,
            "test_topk_candidates": fcos.TEST_TOPK_CANDIDATES,
            "test_nms_thresh": fcos.TEST_NMS_THRESH,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "box_reg_loss_type": fcos.BOX_LOSS,
            "box_activation": fcos.BOX_ACTIVATION,
        }

    @torch.no_grad()
    def label_anchors(self, anchors, gt_instances):
        """The FCOS assignment, per image: the class (``num_classes``: background) and the
        box (an R x 4 tensor) each anchor point is responsible for. A point is positive for
        a box when it lies inside it, within ``center_sampling_radius`` strides of its centre,
        and its largest edge distance falls in its level's range (4-8 strides, open at the
        ends); the smallest such box wins. Images without boxes are all background.

        Owned here rather than inherited: detectron2 renamed the parent's helpers and changed
        what they return (match_anchors -> _match_anchors, Boxes -> tensors) in 2022."""
        num_per_level = [len(a) for a in anchors]
        anchors = Boxes.cat(anchors).tensor
        centers = (anchors[:, :2] + anchors[:, 2:]) / 2  # (R, 2)
        sizes = anchors[:, 2] - anchors[:, 0]  # (R,) the level's stride
        lower, upper = sizes * 4, sizes * 8
        lower[: num_per_level[0]] = 0
        upper[-num_per_level[-1]:] = float("inf")
        gt_labels, gt_boxes = [], []
        for instances in gt_instances:
            boxes = instances.gt_boxes.tensor  # (M, 4)
            if len(boxes) == 0:
                gt_labels.append(torch.full((len(anchors),), self.num_classes, dtype=torch.long,
                                            device=anchors.device))
                gt_boxes.append(torch.zeros_like(anchors))
                continue
            # edge distances (left, top, right, bottom) of every point to every box: (M, R, 4)
            edges = torch.cat([centers[None] - boxes[:, None, :2], boxes[:, None, 2:] - centers[None]], dim=2)
            box_centers = (boxes[:, :2] + boxes[:, 2:]) / 2
            near_center = (centers[None] - box_centers[:, None]).abs().amax(dim=2) < \
                self.center_sampling_radius * sizes[None]
            farthest = edges.amax(dim=2)
            match = near_center & (edges.amin(dim=2) > 0) & (farthest > lower) & (farthest < upper)
            areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            quality = match.to(torch.float32) * (1e8 - areas[:, None])  # smallest box first
            best, index = quality.max(dim=0)
            index[best < 1e-5] = -1
            labels = instances.gt_classes[index.clip(min=0)]
            labels[index < 0] = self.num_classes
            gt_labels.append(labels)
            gt_boxes.append(boxes[index.clip(min=0)])
        return gt_labels, gt_boxes

    def compute_ctrness_targets(self, anchors, gt_boxes):
        """Centerness of every anchor point in its assigned box (``gt_boxes``: R x 4 tensors
        per image): sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)), N x R."""
        anchors = Boxes.cat(anchors).tensor
        if not gt_boxes:
            return anchors.new_zeros((0, len(anchors)))
        edges = torch.stack([self.box2box_transform.get_deltas(anchors, b) for b in gt_boxes])
        left_right, top_bottom = edges[:, :, [0, 2]], edges[:, :, [1, 3]]
        ratio = (left_right.amin(dim=-1) / left_right.amax(dim=-1)) * (
            top_bottom.amin(dim=-1) / top_bottom.amax(dim=-1))
        return torch.sqrt(ratio)

    def losses(
        self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes, pred_centerness
    ):
        """detectron2's FCOS losses with ``box_reg_loss_type`` taken from the config."""
        num_images = len(gt_labels)
        gt_labels = torch.stack(gt_labels)  # (N, R)
        pos_mask = (gt_labels >= 0) & (gt_labels != self.num_classes)
        num_pos_anchors = pos_mask.sum().item()
        get_event_storage().put_scalar("num_pos_anchors", num_pos_anchors / num_images)
        normalizer = self._ema_update("loss_normalizer", max(num_pos_anchors, 1), 300)

        gt_labels_target = F.one_hot(gt_labels, num_classes=self.num_classes + 1)[:, :, :-1]
        loss_cls = sigmoid_focal_loss_jit(
            torch.cat(pred_logits, dim=1),
            gt_labels_target.to(pred_logits[0].dtype),
            alpha=self.focal_loss_alpha,
            gamma=self.focal_loss_gamma,
            reduction="sum",
        )
        loss_box_reg = _dense_box_regression_loss(
            anchors,
            self.box2box_transform,
            pred_anchor_deltas,
            gt_boxes,
            pos_mask,
            box_reg_loss_type=self.box_reg_loss_type,
        )
        ctrness_targets = self.compute_ctrness_targets(anchors, gt_boxes)
        pred_centerness = torch.cat(pred_centerness, dim=1).squeeze(dim=2)
        ctrness_loss = F.binary_cross_entropy_with_logits(
            pred_centerness[pos_mask], ctrness_targets[pos_mask], reduction="sum"
        )
        return {
            "loss_fcos_cls": loss_cls / normalizer,
            "loss_fcos_loc": loss_box_reg / normalizer,
            "loss_fcos_ctr": ctrness_loss / normalizer,
        }

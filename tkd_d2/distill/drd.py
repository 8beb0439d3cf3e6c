"""DRD, dual relation distillation: the same untrained GloRe unit applied to teacher and student.

pixel level, per FPN level: ``mean((G_p(S) - G_p(T))²)`` on the raw (N, C, H, W) maps, with
  the unit's normalisation over the batch (as the reference's BatchNorm in training mode).

instance level, per FPN level: each model's "enhanced" map ``mean_C(F · A_s · A_c)`` (its OWN
  spatial / channel attention at the DED temperature, as in the reference) → RoIAlign of
  every GT box of the batch (``roi_size``², sampling ratio 2, ``spatial_scale = 1/stride``,
  ``aligned=True``; every box is cropped from every level, as the reference does) →
  ``mean((G_i(crops_S) - G_i(crops_T))²)``.

Both terms are summed over levels. Layout of the instance graph (``instance_form``):

* "nodes" (default): the crops laid out as ``(roi_size² channels, one position per box)``:
  the unit has a fixed size (in_channels = roi_size²), works for any number of boxes, and
  still relates every box of the batch to every other through the node projection. All
  levels are reasoned in one batched call (batch dim = level, statistics per level), with
  one unit.
* "reference": the reference's layout. The crops of all boxes of the batch are the CHANNELS
  of one sample and the roi² cells its positions, so the unit's normalisation runs over the
  cells of each box; a unit of B in-channels (B/2 nodes) is drawn for the batch's B boxes,
  afresh for every level. The RoIs are the boxes quantised to whole feature cells
  (floor / ceil of box / stride) with one more cell at the right and bottom, cropped
  unaligned (``aligned=False``), as the reference's. Unlike the reference, a batch with one
  box gets a 2-state, 1-node unit instead of failing, and boxes are mapped to a level by its
  stride (the reference scales by the unpadded image size over the padded map's size).
"""
from typing import Dict, Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from .attention import expert_attention
from .common import check_terms, promote_half
from .graph import GraphUnitBank, draw_graph_unit, graph_reasoning, graph_unit_sizes, mixed_seed, output_weight
from .masks import boxes_with_batch_index

__all__ = ["DualRelationLoss", "DRD_TERMS", "INSTANCE_FORMS", "enhanced_map", "quantised_rois"]

DRD_TERMS = ("instance", "pixel")
INSTANCE_FORMS = ("nodes", "reference")


def enhanced_map(feat: Tensor, temperature: float) -> Tensor:
    """(N, C, H, W) → (N, 1, H, W): channel mean of the feature weighted by its own attentions."""
    spatial, channel = expert_attention(feat, temperature)
    weighted = torch.einsum("nc,nchw->nhw", channel, feat) * spatial / feat.shape[1]
    return weighted[:, None]


def quantised_rois(rois: Tensor, stride: float) -> Tensor:
    """(R, 5) [batch index, x1, y1, x2, y2] in input pixels → the same in feature cells of a
    level of ``stride``, snapped outwards to whole cells with one extra cell at the right and
    bottom (the reference's instance RoIs): [floor(x1/s), floor(y1/s), ceil(x2/s)+1, ceil(y2/s)+1]."""
    cells = rois[:, 1:] / float(stride)
    snapped = torch.cat([cells[:, :2].floor(), cells[:, 2:].ceil() + 1], dim=1)
    return torch.cat([rois[:, :1], snapped], dim=1)


class DualRelationLoss(nn.Module):
    """Instance- and pixel-level relation loss over FPN levels.

    Args:
        in_channels: FPN channels (the pixel-level unit's input).
        roi_size: RoIAlign output side of the instance crops (reference 6).
        temperature: of the attentions building the instance-level maps (reference 0.5).
        mode, seed: see :class:`GraphUnitBank` ("per_step" = the reference, "fixed").
        pixel_num_state, pixel_num_node: GloRe sizes of the pixel unit (default C, C/2).
        instance_num_state, instance_num_node: of the instance unit (default roi², roi²/2).
        sampling_ratio, aligned: RoIAlign options ("nodes" form; "reference" crops unaligned).
        instance_form: "nodes" or "reference" (module docstring).
    """

    def __init__(self, in_channels: int = 256, roi_size: int = 6, temperature: float = 0.5,
                 mode: str = "per_step", seed: int = 0,
                 pixel_num_state: Optional[int] = None, pixel_num_node: Optional[int] = None,
                 instance_num_state: Optional[int] = None, instance_num_node: Optional[int] = None,
                 sampling_ratio: int = 2, aligned: bool = True, instance_form: str = "nodes"):
        super().__init__()
        if instance_form not in INSTANCE_FORMS:
            raise ValueError(f"DRD instance_form must be one of {INSTANCE_FORMS}, got {instance_form!r}")
        self.instance_form = instance_form
        self.mode = mode
        self.seed = int(seed)
        self.roi_size = int(roi_size)
        self.temperature = temperature
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.pixel_units = GraphUnitBank(in_channels, pixel_num_state, pixel_num_node, mode, seed, "drd_pixel")
        self.instance_units = GraphUnitBank(self.roi_size ** 2, instance_num_state, instance_num_node,
                                            mode, seed, "drd_instance")

    def forward(
        self,
        student_features: Sequence[Tensor],
        teacher_features: Sequence[Tensor],
        gt_boxes: Sequence,
        strides: Sequence[float],
        step: Optional[int] = None,
        compute: Iterable[str] = DRD_TERMS,
    ) -> Dict[str, Tensor]:
        """Unweighted DRD terms summed over levels.

        Args:
            student_features, teacher_features: per level (N, C, H, W).
            gt_boxes: per image, (n_i, 4) XYXY boxes in input pixels (or detectron2 ``Boxes``).
            strides: per level, its stride in input pixels.
            step: training iteration (required in "per_step" mode).
            compute: any of "instance", "pixel"; the others are not computed and are absent.

        Half-precision features are evaluated in float32.
        """
        compute = check_terms(compute, DRD_TERMS)
        if not student_features or len(student_features) != len(teacher_features) or \
                len(student_features) != len(strides):
            raise ValueError("DRD: need one student feature, teacher feature and stride per level")
        student_features = promote_half(student_features)
        teacher_features = promote_half(teacher_features)
        reference = student_features[0]
        losses = {}
        if "pixel" in compute:
            losses["pixel"] = self._pixel(student_features, teacher_features, step)
        if "instance" in compute:
            rois = boxes_with_batch_index(gt_boxes, device=reference.device)
            if rois.shape[0] == 0:
                # exactly 0 (even for non-finite features), still attached to the graph
                no_box = torch.zeros((), dtype=torch.bool, device=reference.device)
                losses["instance"] = reference.sum().where(no_box, 0.0)
            elif self.instance_form == "reference":
                losses["instance"] = self._instance_reference(student_features, teacher_features, rois, strides,
                                                              step)
            else:
                losses["instance"] = self._instance(student_features, teacher_features, rois, strides, step)
        return losses

    def _pixel(self, student_features, teacher_features, step):
        reference = student_features[0]
        unit = self.pixel_units.units_for_step(step, reference.device, reference.dtype)
        fused = output_weight(unit)
        total = 0.0
        for student, teacher in zip(student_features, teacher_features):
            with torch.no_grad():
                teacher_relation = graph_reasoning(teacher.detach(), unit, fused_output_weight=fused)
            student_relation = graph_reasoning(student, unit, fused_output_weight=fused)
            total = total + F.mse_loss(student_relation, teacher_relation)
        return total

    def _crops(self, feat: Tensor, rois: Tensor, stride: float) -> Tensor:
        crops = roi_align(enhanced_map(feat, self.temperature), rois.to(feat.dtype), output_size=self.roi_size,
                          spatial_scale=1.0 / float(stride), sampling_ratio=self.sampling_ratio,
                          aligned=self.aligned)
        return crops.reshape(rois.shape[0], self.roi_size ** 2).t()  # (roi², boxes)

    def _instance(self, student_features, teacher_features, rois, strides, step):
        reference = student_features[0]
        unit = self.instance_units.units_for_step(step, reference.device, reference.dtype)
        with torch.no_grad():
            teacher_crops = torch.stack([self._crops(t.detach(), rois, s) for t, s in zip(teacher_features, strides)])
            teacher_relation = graph_reasoning(teacher_crops, unit, norm_dims=(2,))
        student_crops = torch.stack([self._crops(f, rois, s) for f, s in zip(student_features, strides)])
        student_relation = graph_reasoning(student_crops, unit, norm_dims=(2,))
        # (levels, roi², boxes): mean per level, summed over levels
        return (student_relation - teacher_relation).square().mean(dim=(1, 2)).sum()

    def reference_unit(self, step: Optional[int], level: int, num_boxes: int, device=None, dtype=None):
        """The "reference" form's unit for ``num_boxes`` boxes at ``level``: the reference's
        sizes (2·int(B/2) states, int(B/2) nodes; at least 1 each), drawn from (seed, level,
        box count) and, in "per_step" mode, the step: fresh per level and step, reproducible."""
        half = max(1, num_boxes // 2)
        num_state, num_node = graph_unit_sizes(num_boxes, 2 * half, half)
        if self.mode == "per_step":
            if step is None:
                raise ValueError("DualRelationLoss(mode='per_step') needs the training step")
            key = (self.seed, "drd_instance_reference", int(step), level, num_boxes)
        else:
            key = (self.seed, "drd_instance_reference", "fixed", level, num_boxes)
        generator = torch.Generator().manual_seed(mixed_seed(*key))
        return draw_graph_unit(num_boxes, num_state, num_node, generator, device=device, dtype=dtype)

    def _reference_crops(self, feat: Tensor, cell_rois: Tensor) -> Tensor:
        crops = roi_align(enhanced_map(feat, self.temperature), cell_rois.to(feat.dtype), output_size=self.roi_size,
                          spatial_scale=1.0, sampling_ratio=self.sampling_ratio, aligned=False)
        return crops.reshape(1, cell_rois.shape[0], self.roi_size ** 2)  # (1, boxes, roi²)

    def _instance_reference(self, student_features, teacher_features, rois, strides, step):
        reference = student_features[0]
        num_boxes = rois.shape[0]
        total = 0.0
        for level, (student, teacher, stride) in enumerate(zip(student_features, teacher_features, strides)):
            unit = self.reference_unit(step, level, num_boxes, reference.device, reference.dtype)
            cell_rois = quantised_rois(rois, stride)
            with torch.no_grad():
                teacher_relation = graph_reasoning(self._reference_crops(teacher.detach(), cell_rois), unit)
            student_relation = graph_reasoning(self._reference_crops(student, cell_rois), unit)
            total = total + F.mse_loss(student_relation, teacher_relation)
        return total

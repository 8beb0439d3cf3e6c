"""DRD, dual relation distillation: the same untrained GloRe unit applied to teacher and student.

pixel level, per FPN level: ``mean((G_p(S) - G_p(T))²)`` on the raw (N, C, H, W) maps, with
  the unit's normalisation over the batch (as the reference's BatchNorm in training mode).

instance level, per FPN level: each model's "enhanced" map ``mean_C(F · A_s · A_c)`` (its OWN
  spatial / channel attention at the DED temperature, as in the reference) → RoIAlign of
  every GT box of the batch (``roi_size``², sampling ratio 2, ``spatial_scale = 1/stride``,
  ``aligned=True``; every box is cropped from every level, as the reference does) →
  ``mean((G_i(crops_S) - G_i(crops_T))²)``.

Both terms are summed over levels. Layout of the instance graph: the reference stacks the
crops of all boxes of the batch as the CHANNELS of one sample (so its unit has as many input
channels as there are boxes, and must be rebuilt for every batch). Here the crops are laid out
as ``(roi_size² channels, one position per box)``: the unit has a fixed size (in_channels =
roi_size²), works for any number of boxes, and still relates every box of the batch to every
other through the node projection. All levels are reasoned in one batched call (batch dim =
level, statistics per level).
"""
from typing import Dict, Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from .attention import expert_attention
from .common import check_terms, promote_half
from .graph import GraphUnitBank, graph_reasoning, output_weight
from .masks import boxes_with_batch_index

__all__ = ["DualRelationLoss", "DRD_TERMS", "enhanced_map"]

DRD_TERMS = ("instance", "pixel")


def enhanced_map(feat: Tensor, temperature: float) -> Tensor:
    """(N, C, H, W) → (N, 1, H, W): channel mean of the feature weighted by its own attentions."""
    spatial, channel = expert_attention(feat, temperature)
    weighted = torch.einsum("nc,nchw->nhw", channel, feat) * spatial / feat.shape[1]
    return weighted[:, None]


class DualRelationLoss(nn.Module):
    """Instance- and pixel-level relation loss over FPN levels.

    Args:
        in_channels: FPN channels (the pixel-level unit's input).
        roi_size: RoIAlign output side of the instance crops (reference 6).
        temperature: of the attentions building the instance-level maps (reference 0.5).
        mode, seed: see :class:`GraphUnitBank` ("per_step" = the reference, "fixed").
        pixel_num_state, pixel_num_node: GloRe sizes of the pixel unit (default C, C/2).
        instance_num_state, instance_num_node: of the instance unit (default roi², roi²/2).
        sampling_ratio, aligned: RoIAlign options.
    """

    def __init__(self, in_channels: int = 256, roi_size: int = 6, temperature: float = 0.5,
                 mode: str = "per_step", seed: int = 0,
                 pixel_num_state: Optional[int] = None, pixel_num_node: Optional[int] = None,
                 instance_num_state: Optional[int] = None, instance_num_node: Optional[int] = None,
                 sampling_ratio: int = 2, aligned: bool = True):
        super().__init__()
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

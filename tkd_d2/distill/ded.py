"""DED, decoupled expert distillation: attention-weighted fg / bg feature imitation + structure.

Per FPN level, with teacher features ``T``, student features ``S`` (both (N, C, H, W)), the
teacher's spatial attention ``A_s`` (N, H, W) and channel attention ``A_c`` (N, C) at
temperature ``tau`` (the "expert prior"), and the GT masks ``M_fg``, ``M_bg`` of
:mod:`.masks`::

    fg   = sum_{n,c,h,w} (S - T)² · A_s · A_c · M_fg / N
    bg   = sum_{n,c,h,w} (S - T)² · A_s · A_c · M_bg / N
    ssim = (1 - SSIM(S, T)) / 2                  (11×11 Gaussian window, mean over everything)

and each term is summed over the levels. This is the reference's formula: it multiplies
both feature maps by ``sqrt(A_s) sqrt(A_c) sqrt(M)`` and takes a summed MSE divided by the
batch size, which is the same number. Only the teacher's attention weights the loss.

Optional ``"attention"`` term (the reference's FGD-inherited "mask loss", weight 0 by default
in TKD and removed in the journal version): ``sum|A_c^S - A_c^T| / N + sum|A_s^S - A_s^T| / N``.
"""
from typing import Dict, Iterable, Sequence

import torch
from torch import Tensor, nn

from .attention import expert_attention
from .common import check_terms, promote_half
from .masks import boxes_with_batch_index, foreground_background_masks
from .ssim import ssim

__all__ = ["DecoupledExpertLoss", "DED_TERMS"]

DED_TERMS = ("fg", "bg", "ssim")
_ALL_TERMS = DED_TERMS + ("attention",)


class DecoupledExpertLoss(nn.Module):
    """Decoupled expert loss over FPN levels. Holds no parameters.

    Args:
        temperature: of the teacher's spatial / channel attention (reference 0.5).
        ssim_window, ssim_sigma: Gaussian window of the structural term (reference 11, 1.5).
    """

    def __init__(self, temperature: float = 0.5, ssim_window: int = 11, ssim_sigma: float = 1.5):
        super().__init__()
        self.temperature = temperature
        self.ssim_window = ssim_window
        self.ssim_sigma = ssim_sigma

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, ssim_window={self.ssim_window}, ssim_sigma={self.ssim_sigma}"

    def forward(
        self,
        student_features: Sequence[Tensor],
        teacher_features: Sequence[Tensor],
        gt_boxes: Sequence,
        strides: Sequence[float],
        compute: Iterable[str] = DED_TERMS,
    ) -> Dict[str, Tensor]:
        """Unweighted DED terms summed over levels.

        Args:
            student_features, teacher_features: per level (N, C, H, W), same shapes.
            gt_boxes: per image, (n_i, 4) XYXY boxes in input pixels (or detectron2 ``Boxes``).
            strides: per level, its stride in input pixels.
            compute: the terms to compute, any of "fg", "bg", "ssim", "attention"; the others
                are not computed at all and are absent from the result.

        Half-precision features are evaluated in float32.

        Returns:
            ``{term: scalar tensor}`` for the requested terms.
        """
        compute = check_terms(compute, _ALL_TERMS)
        if len(student_features) != len(teacher_features) or len(student_features) != len(strides):
            raise ValueError("DED: need one student feature, teacher feature and stride per level")
        if not student_features:
            raise ValueError("DED: no feature levels given")
        student_features = promote_half(student_features)
        teacher_features = promote_half(teacher_features)
        losses = {term: 0.0 for term in compute}
        need_masks = "fg" in compute or "bg" in compute
        need_attention = need_masks or "attention" in compute
        rois = None
        if need_masks:
            # box coordinates keep their own (float32+) precision; only the masks take the features' dtype
            rois = boxes_with_batch_index(gt_boxes, device=student_features[0].device)
        for student, teacher, stride in zip(student_features, teacher_features, strides):
            if student.shape != teacher.shape:
                raise ValueError(f"DED: student {tuple(student.shape)} vs teacher {tuple(teacher.shape)}")
            teacher = teacher.detach()
            n = student.shape[0]
            if need_attention:
                spatial_t, channel_t = expert_attention(teacher, self.temperature)
            if need_masks:
                # (S - T)² summed over channels with the channel prior, then the spatial prior
                weighted_error = torch.einsum("nc,nchw->nhw", channel_t, (student - teacher).square())
                weighted_error = weighted_error * spatial_t
                fg, bg = foreground_background_masks(rois, student.shape[-2:], stride, num_images=n,
                                                     dtype=student.dtype, device=student.device)
                if "fg" in compute:
                    losses["fg"] = losses["fg"] + (weighted_error * fg).sum() / n
                if "bg" in compute:
                    losses["bg"] = losses["bg"] + (weighted_error * bg).sum() / n
            if "ssim" in compute:
                similarity = ssim(student, teacher, self.ssim_window, self.ssim_sigma)
                losses["ssim"] = losses["ssim"] + (1.0 - similarity) / 2.0
            if "attention" in compute:
                spatial_s, channel_s = expert_attention(student, self.temperature)
                losses["attention"] = losses["attention"] + (
                    (channel_s - channel_t).abs().sum() + (spatial_s - spatial_t).abs().sum()) / n
        return losses

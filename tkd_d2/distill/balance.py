"""Loss balancing: scales that set each group of KD terms to a share of the detection loss.

Over the first ``iters`` calibration steps the balancer sums, per group, the group's terms
(at full weight) and the detection loss; when the window closes each group's scale is fixed
at ``target × Σ detection / Σ group``, so on the window's batches the scaled group makes
``target`` × the detection loss. A ratio of sums, not a mean of ratios: a batch where a term
is zero (an image without boxes) dilutes the estimate instead of dominating it. The sums and
the scales are buffers: a checkpoint keeps them and a resumed run neither recalibrates nor
moves its scales. A group below ``min_ratio`` × the detection loss over the whole window (zero,
or float noise, as when the student already is the teacher) keeps scale 1: scaling noise
up to a share would train on it.

"Per term" balancing is one group per term; "joint" balancing one group of several terms.
What is observed is the caller's choice: the terms' values (a share of the detection loss), or
their gradient norms on some maps (``gradient_norms``: a share of the detection loss's pull).
"""
from typing import Dict, Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = ["LossBalancer", "gradient_norms", "BALANCE_MEASURES"]

# MODEL.TKD.BALANCE.MEASURE: what a share is of. "loss": the detection loss's value; "fpn_gradient":
# the norm of the detection loss's gradient on the student's FPN maps
BALANCE_MEASURES = ("loss", "fpn_gradient")


class LossBalancer(nn.Module):
    """Args:
        groups: group name → the loss names it holds (each loss in at most one group).
        targets: group name → its share of the detection loss once calibrated (> 0).
        iters: calibration steps (at least 1).
        min_ratio: a group below this multiple of the detection loss keeps scale 1.
    """

    def __init__(self, groups: Mapping[str, Sequence[str]], targets: Mapping[str, float], iters: int,
                 min_ratio: float = 1e-6):
        super().__init__()
        self.groups = {g: tuple(names) for g, names in groups.items()}
        self.targets = {g: float(targets[g]) for g in self.groups}
        if any(t <= 0 for t in self.targets.values()):
            raise ValueError(f"balance targets must be > 0, got {self.targets}")
        self.iters = max(1, int(iters))
        self.min_ratio = float(min_ratio)
        # loss name → its group's index in ``scales`` (looked up per term every step)
        self.index_of = {name: i for i, names in enumerate(self.groups.values()) for name in names}
        n = len(self.groups)
        # [Σ group at full weight ..., Σ detection, steps seen]
        self.register_buffer("sums", torch.zeros(n + 2, dtype=torch.float64))
        self.register_buffer("scales", torch.ones(n, dtype=torch.float64))

    @property
    def calibrated(self) -> bool:
        return int(self.sums[-1]) >= self.iters

    def scale_of(self, name: str) -> float:
        """The multiplier of loss ``name`` (1 for a loss in no group)."""
        index = self.index_of.get(name)
        return 1.0 if index is None else float(self.scales[index])

    @torch.no_grad()
    def observe(self, weighted: Mapping[str, Tensor], detection: Tensor) -> bool:
        """Add one step's terms (``weighted``: loss name → value at full weight) and detection
        loss to the window; returns True on the step that closes it (the scales are then fixed).
        Does nothing once calibrated. Under DDP every rank sums the same (all-reduced) values."""
        if self.calibrated:
            return False
        step = torch.zeros_like(self.sums)
        for i, names in enumerate(self.groups.values()):
            values = [weighted[k].detach().double() for k in names if k in weighted]
            if values:
                step[i] = torch.stack(values).sum()
        step[-2] = detection.detach().double()
        step[-1] = 1.0
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
            torch.distributed.all_reduce(step)
            step[:-1] /= world
            step[-1] = 1.0
        self.sums += step
        if not self.calibrated:
            return False
        group_sums, detection_sum = self.sums[:-2], self.sums[-2]
        targets = torch.tensor(list(self.targets.values()), dtype=self.scales.dtype, device=self.scales.device)
        seen = group_sums > self.min_ratio * detection_sum
        self.scales.copy_(torch.where(seen, targets * detection_sum / group_sums.clamp_min(1e-30),
                                      torch.ones_like(targets)))
        return True

    def ratios(self) -> Dict[str, float]:
        """Group name → its calibration-window ratio to the detection loss (at full weight)."""
        detection = float(self.sums[-2]) or float("nan")
        return {g: float(self.sums[i]) / detection for i, g in enumerate(self.groups)}

    def summary(self) -> str:
        """One line per group: ratio before, scale, share after (for the log)."""
        ratios = self.ratios()
        return "; ".join(
            f"{g}: {ratios[g]:.3g}x -> x{float(self.scales[i]):.3g} = {self.targets[g]:.3g}x"
            if ratios[g] > self.min_ratio else f"{g}: {ratios[g]:.3g}x (negligible), scale 1"
            for i, g in enumerate(self.groups))


def gradient_norms(losses: Mapping[str, Tensor], inputs: Sequence[Tensor]) -> Dict[str, Tensor]:
    """Loss name → the norm (float64, detached) of its gradient on ``inputs`` taken together.

    One ``torch.autograd.grad`` per loss with the graph kept, so the training step's own
    backward still runs afterwards; only the inputs' gradients are computed (no parameter's
    ``.grad`` is touched). A loss that does not reach the inputs has norm 0."""
    inputs = list(inputs)
    out = {}
    for name, value in losses.items():
        if not value.requires_grad:
            out[name] = torch.zeros((), dtype=torch.float64, device=value.device)
            continue
        grads = torch.autograd.grad(value, inputs, retain_graph=True, allow_unused=True)
        squares = [g.detach().double().square().sum() for g in grads if g is not None]
        out[name] = torch.stack(squares).sum().sqrt() if squares else \
            torch.zeros((), dtype=torch.float64, device=value.device)
    return out

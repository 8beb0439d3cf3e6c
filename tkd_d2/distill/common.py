"""Small helpers the feature distillers (DED, DRD) share."""
from typing import Iterable, Sequence

import torch
from torch import Tensor

__all__ = ["promote_half", "check_terms"]


def promote_half(features: Sequence[Tensor]) -> list:
    """Features in float32 where they are fp16 / bf16: sums of squares over C·H·W overflow or
    lose precision there, so the losses run in float32."""
    return [f.float() if f.dtype in (torch.float16, torch.bfloat16) else f for f in features]


def check_terms(compute: Iterable[str], allowed) -> tuple:
    """``compute`` as a tuple; raise naming any term not in ``allowed``."""
    compute = tuple(compute)
    unknown = [t for t in compute if t not in allowed]
    if unknown:
        raise ValueError(f"unknown loss term(s) {unknown}; expected some of {allowed}")
    return compute

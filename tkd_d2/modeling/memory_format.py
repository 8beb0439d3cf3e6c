"""Channels-last (NHWC) memory for a detector's convolutions (``MODEL.CHANNELS_LAST``).

oneDNN's CPU convolutions, depthwise ones above all, run faster on NHWC tensors (BENCHMARKS.md,
"Step speed"); the values are the same up to float rounding. The conv weights are stored
channels-last and every backbone converts its input image batch; the layers after keep the
layout by themselves.
"""
import torch
from detectron2.modeling import Backbone

__all__ = ["apply_memory_format"]


def _nhwc_input(module, args):
    x = args[0]
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return (x.contiguous(memory_format=torch.channels_last),) + tuple(args[1:])
    return None


def apply_memory_format(cfg, model):
    """``model`` (a detector or the TKD distiller, whose teacher follows) in channels-last
    memory when ``cfg.MODEL.CHANNELS_LAST``; returns ``model``."""
    if not cfg.MODEL.CHANNELS_LAST:
        return model
    model.to(memory_format=torch.channels_last)
    teacher = getattr(model, "teacher", None)
    modules = list(model.modules()) + (list(teacher.modules()) if teacher is not None else [])
    for module in modules:
        if isinstance(module, Backbone) and not getattr(module, "_nhwc_hooked", False):
            module.register_forward_pre_hook(_nhwc_input)
            module._nhwc_hooked = True
    return model

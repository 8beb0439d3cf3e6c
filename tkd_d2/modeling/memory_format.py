"""Channels-last (NHWC) memory for a detector's convolutions (``MODEL.CHANNELS_LAST``).

oneDNN's CPU convolutions, depthwise ones above all, run faster on NHWC tensors (BENCHMARKS.md,
"Step speed"); the values are the same up to float rounding. The conv weights are stored
channels-last and every backbone converts its input image batch; the layers after keep the
layout by themselves.

``MODEL.HEAD_CHANNELS_LAST False`` keeps only the backbones (bottom-up and FPN) channels-last:
their outputs are handed on in NCHW, where the heads' (and the distiller's) modules stay.
oneDNN's depthwise convolutions gain most from NHWC, while the heads' dense 3x3 convolutions
can run their backward slower in it (BENCHMARKS.md, "Step time").
"""
import torch
from detectron2.modeling import Backbone

__all__ = ["apply_memory_format"]


def _nhwc_input(module, args):
    x = args[0]
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return (x.contiguous(memory_format=torch.channels_last),) + tuple(args[1:])
    return None


def _nchw_outputs(module, args, outputs):
    return {k: v.contiguous() for k, v in outputs.items()}


def apply_memory_format(cfg, model):
    """``model`` (a detector or the TKD distiller, whose teacher follows) in channels-last
    memory when ``cfg.MODEL.CHANNELS_LAST`` (only its backbones with ``MODEL.HEAD_CHANNELS_LAST``
    False); returns ``model``."""
    if not cfg.MODEL.CHANNELS_LAST:
        return model
    teacher = getattr(model, "teacher", None)
    models = [model] + ([teacher] if teacher is not None else [])
    if cfg.MODEL.HEAD_CHANNELS_LAST:
        for m in models:
            m.to(memory_format=torch.channels_last)
    else:  # each detector's backbone (the detector's own, not the FPN's bottom-up)
        detectors = [d for m in models for d in m.modules() if isinstance(getattr(d, "backbone", None), Backbone)]
        for detector in detectors:
            detector.backbone.to(memory_format=torch.channels_last)
            if not getattr(detector.backbone, "_nchw_hooked", False):
                detector.backbone.register_forward_hook(_nchw_outputs)
                detector.backbone._nchw_hooked = True
    modules = [module for m in models for module in m.modules()]
    for module in modules:
        if isinstance(module, Backbone) and not getattr(module, "_nhwc_hooked", False):
            module.register_forward_pre_hook(_nhwc_input)
            module._nhwc_hooked = True
    return model

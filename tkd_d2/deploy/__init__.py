"""Deployment: export a trained detector (a TKD config: its student) as one graph with
pre-processing, decoding and NMS inside (:func:`export_model`, ``tools/export.py``), run it
with ONNX Runtime or TorchScript (:class:`OnnxPredictor`, :class:`TorchScriptPredictor`),
evaluate it like the PyTorch model (:class:`ExportedModelAdapter`, ``train_net.py --eval-only
--exported DIR``).

:mod:`tkd_d2.deploy.runtime` needs only numpy, OpenCV and the runtime; the exporter copies it
into each export folder as ``predictor.py`` for machines without detectron2.
"""
from .runtime import (DeployError, Detections, OnnxPredictor, TorchScriptPredictor,
                      load_predictor, read_deploy_info, resized_shape)
from .export import FORMATS, build_deployable, export_model
from .evaluation import ExportedModelAdapter

__all__ = [
    "DeployError", "Detections", "OnnxPredictor", "TorchScriptPredictor", "load_predictor",
    "read_deploy_info", "resized_shape", "FORMATS", "build_deployable", "export_model",
    "ExportedModelAdapter",
]

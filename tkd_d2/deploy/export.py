"""Export a trained detector (a TKD config: its student) to ONNX or TorchScript.

:func:`export_model` builds the plain student of the config (:func:`tkd_d2.config.student_cfg`),
loads the checkpoint through the project's checked loader (a checkpoint that does not fit is
a :class:`~tkd_d2.errors.CheckpointError`), wraps it in :class:`DeployableDetector` and traces
it on one image, then writes the export folder described in :mod:`tkd_d2.deploy.runtime`.

Both formats come from the same ``torch.jit`` trace. ONNX uses torch's TorchScript-based
exporter (``dynamo=False``, opset 17): it needs no onnxscript, keeps the data-dependent parts
(score threshold, ``TopK`` with ``min(k, count)``, ``NonMaxSuppression`` registered by
torchvision) in one static graph, and exports height and width as dynamic axes. torch's
default exporter (``dynamo=True``, from ``torch.export``) needs the onnxscript package and
has to trace NMS's data-dependent output size; it is not used. TorchScript (``torch.jit``)
still works in torch 2.14 but is deprecated there (``torch.jit.load`` warns): ONNX is the
format to deploy.
"""
import datetime
import logging
import os
import shutil
import warnings

import numpy as np
import torch

from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model

from ..checkpoint import load_weights
from ..config import student_cfg
from ..errors import ConfigError
from ..fileio import atomic_write_json
from ..modeling.family import family_of
from .graph import INPUT_NAMES, OUTPUT_NAMES, DeployableDetector
from .runtime import DEPLOY_FILE, FORMAT_VERSION, MODEL_FILES, DeployError, resized_shape

__all__ = ["FORMATS", "ONNX_OPSET", "build_deployable", "export_model", "sample_input"]

FORMATS = tuple(MODEL_FILES)
ONNX_OPSET = 17
logger = logging.getLogger(__name__)


def build_deployable(cfg, weights=None):
    """(:class:`DeployableDetector`, plain student cfg, class names) for ``cfg`` with
    ``weights`` (default ``cfg.MODEL.WEIGHTS``) loaded through the checked loader."""
    cfg = student_cfg(cfg)
    try:
        family_of(cfg)
    except ConfigError as e:
        raise ConfigError(f"cannot export this model: {e}") from None
    weights = cfg.MODEL.WEIGHTS if weights is None else weights
    if cfg.MODEL.EFFICIENTNET.PRETRAINED:  # the checkpoint holds every backbone tensor
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.EFFICIENTNET.PRETRAINED = False
    model = build_model(cfg).eval()
    if not weights:
        raise ConfigError("MODEL.WEIGHTS is empty: give the checkpoint to export "
                          "(tools/export.py ... MODEL.WEIGHTS path/to/model_final.pth)")
    checkpoint = load_weights(model, weights, what="MODEL.WEIGHTS (the checkpoint to export)")
    classes = checkpoint.get("thing_classes") if isinstance(checkpoint, dict) else None
    if not classes and len(cfg.DATASETS.TEST):
        classes = MetadataCatalog.get(cfg.DATASETS.TEST[0]).get("thing_classes")
    num_classes = model.num_classes
    if not classes or len(classes) != num_classes:
        classes = [f"class_{i}" for i in range(num_classes)]
    return DeployableDetector(model, cfg.INPUT.FORMAT), cfg, list(classes)


def sample_input(cfg, sample_image=None):
    """The uint8 (1, H, W, 3) BGR batch the trace runs on: ``sample_image`` (a file) resized to
    the test size, or a mid-grey image of the test size."""
    min_size, max_size = cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST
    if sample_image is None:
        side = min_size or 224
        rng = np.random.default_rng(0)
        image = rng.integers(96, 160, size=(side, side, 3), dtype=np.uint8)
    else:
        import cv2

        image = cv2.imread(os.fspath(sample_image), cv2.IMREAD_COLOR)
        if image is None:
            raise ConfigError(f"--sample-image {sample_image}: not a readable image file")
        new_h, new_w = resized_shape(*image.shape[:2], min_size, max_size)
        if (new_h, new_w) != image.shape[:2]:
            image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(np.ascontiguousarray(image))[None]


def _trace_quietly(fn):
    # the tracer warns about every Python int taken from a shape; the graph keeps them dynamic
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return fn()


def _export_onnx(deployable, image, path):
    _trace_quietly(lambda: torch.onnx.export(
        deployable, (image,), path, input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
        dynamic_axes={"images": {0: "batch", 1: "height", 2: "width"}, "boxes": {0: "detections"},
                      "scores": {0: "detections"}, "classes": {0: "detections"},
                      "image_index": {0: "detections"}},
        opset_version=ONNX_OPSET, dynamo=False, do_constant_folding=True))


def _export_torchscript(deployable, image, path):
    traced = _trace_quietly(lambda: torch.jit.trace(deployable, (image,), check_trace=False))
    traced.save(path)


def export_model(cfg, output_dir, fmt="onnx", weights=None, sample_image=None,
                 source_config=None):
    """Write ``output_dir``/{model.onnx | model.ts, deploy.json, predictor.py, tiling.py}; return the
    deploy.json content (with ``model_path``)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not one of {list(FORMATS)}")
    deployable, cfg, classes = build_deployable(cfg, weights)
    image = sample_input(cfg, sample_image)
    os.makedirs(output_dir, exist_ok=True)
    model_path = os.path.join(output_dir, MODEL_FILES[fmt])
    partial = model_path + ".partial"
    try:
        (_export_onnx if fmt == "onnx" else _export_torchscript)(deployable, image, partial)
    except Exception as e:
        if os.path.exists(partial):
            os.remove(partial)
        raise DeployError(f"exporting {cfg.MODEL.META_ARCHITECTURE} to {fmt} failed: "
                          f"{type(e).__name__}: {e}") from e
    os.replace(partial, model_path)
    detector = deployable.detector
    info = {
        "format_version": FORMAT_VERSION,
        "format": fmt,
        "model_file": MODEL_FILES[fmt],
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "classes": classes,
        "input": {
            "name": INPUT_NAMES[0], "dtype": "uint8", "layout": "NHWC", "channels": "BGR",
            "model_channels": cfg.INPUT.FORMAT,  # the graph reorders BGR to this itself
            "resize": {"rule": "ResizeShortestEdge", "min_size": int(cfg.INPUT.MIN_SIZE_TEST),
                       "max_size": int(cfg.INPUT.MAX_SIZE_TEST)},
            "size_divisibility": deployable.size_divisibility,  # padded inside the graph
            "pixel_mean": [float(v) for v in cfg.MODEL.PIXEL_MEAN],
            "pixel_std": [float(v) for v in cfg.MODEL.PIXEL_STD],
        },
        "outputs": {"boxes": "float32 (N, 4) XYXY, resized-image pixels",
                    "scores": "float32 (N,) descending", "classes": "int64 (N,)",
                    "image_index": "int64 (N,): the image of the batch"},
        "score_threshold": float(detector.test_score_thresh),
        "topk_candidates": int(detector.test_topk_candidates),
        "nms_threshold": float(detector.test_nms_thresh),
        "max_detections": int(detector.max_detections_per_image),
        # TEST.TILE: the predictor tiles larger (resized) images and merges as the eager model
        "tile": {"size": int(cfg.TEST.TILE.SIZE), "overlap": int(cfg.TEST.TILE.OVERLAP),
                 "iou_thresh": float(cfg.TEST.TILE.IOU_THRESH),
                 "containment_thresh": float(cfg.TEST.TILE.CONTAINMENT_THRESH)},
        "onnx_opset": ONNX_OPSET if fmt == "onnx" else None,
        "source": {"config": source_config, "weights": weights or cfg.MODEL.WEIGHTS,
                   "torch": torch.__version__,
                   "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                       timespec="seconds")},
    }
    atomic_write_json(os.path.join(output_dir, DEPLOY_FILE), info)
    shutil.copyfile(os.path.join(os.path.dirname(__file__), "runtime.py"),
                    os.path.join(output_dir, "predictor.py"))
    # the one tile-merge rule, imported by predictor.py beside it
    shutil.copyfile(os.path.join(os.path.dirname(os.path.dirname(__file__)), "tiling.py"),
                    os.path.join(output_dir, "tiling.py"))
    logger.info("exported %s (%s) to %s", cfg.MODEL.META_ARCHITECTURE, fmt, model_path)
    return dict(info, model_path=model_path)

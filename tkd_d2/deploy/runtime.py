"""Run an exported detector: :class:`OnnxPredictor` (ONNX Runtime) and
:class:`TorchScriptPredictor`, with detectron2's ``DefaultPredictor`` interface.

This file imports only numpy, OpenCV and the runtime (onnxruntime / torch) at the top, and of
tkd_d2 only its numpy tiling module: ``tools/export.py`` copies both into every export folder
(``predictor.py``, ``tiling.py``), so a machine with neither detectron2 nor this project
installed runs the model with ``from predictor import OnnxPredictor``. Where detectron2 is importable the results
come back as detectron2 ``Instances`` (Visualizer, evaluators work unchanged); otherwise as a
:class:`Detections` of numpy arrays with the same field names.

Export folder (``deploy.json``, format version 2)::

    model.onnx / model.ts   graph: uint8 (B, H, W, 3) BGR images of one size → boxes (N, 4)
                            float32 XYXY, scores (N,) float32, classes (N,) int64 in their
                            pixels, image_index (N,) int64 (which image); the predictor
                            passes one image, or the tiles of one in batches
    deploy.json             classes, input rules (resize, channel order), thresholds, tiles
    predictor.py            this file
    tiling.py               tkd_d2/tiling.py: the tile windows and merge of TEST.TILE

The graph runs on the image resized as detectron2's test-time ``ResizeShortestEdge`` sizes it
(:func:`resized_shape`); the predictor resizes with ``cv2.INTER_LINEAR`` (detectron2 resizes
uint8 images with PIL's bilinear filter: pixel values, not sizes, may differ slightly when a
resize happens), then scales the boxes back to the input image, clips them and drops empty
ones, as detectron2's ``detector_postprocess`` does.
"""
import json
import os

import numpy as np

try:  # inside the package: the project's error family; a copied predictor.py: a plain one
    from ..errors import TKDError as _ErrorBase
    from ..tiling import TILES_PER_BATCH, detect_tiled, tile_windows
except ImportError:  # pragma: no cover - only outside the package
    _ErrorBase = RuntimeError
    from tiling import TILES_PER_BATCH, detect_tiled, tile_windows

__all__ = [
    "DeployError", "OnnxPredictor", "TorchScriptPredictor", "Detections", "load_predictor",
    "read_deploy_info", "resized_shape", "FORMAT_VERSION", "DEPLOY_FILE", "MODEL_FILES",
]

FORMAT_VERSION = 2  # 2: the graph takes a batch (B, H, W, 3) and returns image_index
DEPLOY_FILE = "deploy.json"
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.ts"}


class DeployError(_ErrorBase):
    """An export folder, its runtime or its input is not usable; the message says which."""


def resized_shape(height, width, min_size, max_size):
    """(height, width) after detectron2's test-time ``ResizeShortestEdge(min_size, max_size)``
    (its ``get_output_shape``); ``min_size`` 0 keeps the size."""
    if min_size == 0:
        return height, width
    scale = min_size / min(height, width)
    new_h, new_w = (min_size, scale * width) if height < width else (scale * height, min_size)
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def read_deploy_info(model_dir):
    """``model_dir``/deploy.json, checked: its format version and its model file."""
    path = os.path.join(model_dir, DEPLOY_FILE)
    if not os.path.isfile(path):
        raise DeployError(f"{path} not found: {model_dir} is not an export folder of "
                          "tools/export.py (it writes model.onnx / model.ts and deploy.json)")
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError) as e:
        raise DeployError(f"cannot read {path}: {e}") from e
    version = info.get("format_version")
    if version != FORMAT_VERSION:
        raise DeployError(f"{path}: format_version {version!r}; this runtime reads version "
                          f"{FORMAT_VERSION}. Export the model again with this version.")
    model_file = os.path.join(model_dir, info.get("model_file", ""))
    if not os.path.isfile(model_file):
        raise DeployError(f"{path} names the model file {info.get('model_file')!r}, which is "
                          f"not in {model_dir}")
    info["model_path"] = model_file
    return info


class Detections:
    """Plain-numpy stand-in for detectron2's ``Instances`` (when detectron2 is not installed):
    ``image_size`` (h, w), ``pred_boxes`` (N, 4) XYXY, ``scores`` (N,), ``pred_classes`` (N,)."""

    def __init__(self, image_size, pred_boxes, scores, pred_classes):
        self.image_size = image_size
        self.pred_boxes, self.scores, self.pred_classes = pred_boxes, scores, pred_classes

    def __len__(self):
        return len(self.scores)

    def has(self, name):
        return name in ("pred_boxes", "scores", "pred_classes")


def to_instances(image_size, boxes, scores, classes):
    """detectron2 ``Instances`` when detectron2 is importable, else :class:`Detections`."""
    try:
        import torch
        from detectron2.structures import Boxes, Instances
    except ImportError:
        return Detections(image_size, boxes, scores, classes)
    return Instances(image_size, pred_boxes=Boxes(torch.from_numpy(boxes)),
                     scores=torch.from_numpy(scores), pred_classes=torch.from_numpy(classes))


def rescale_boxes(boxes, scores, classes, from_size, to_size):
    """Boxes of an image of ``from_size`` (h, w) in the pixels of ``to_size``: scaled, clipped,
    empty ones dropped (detectron2's ``detector_postprocess``)."""
    (from_h, from_w), (to_h, to_w) = from_size, to_size
    scale = np.array([to_w / from_w, to_h / from_h] * 2, dtype=np.float32)
    boxes = boxes.astype(np.float32) * scale
    boxes = np.minimum(np.maximum(boxes, 0), np.array([to_w, to_h, to_w, to_h], np.float32))
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], scores[keep], classes[keep]


class _ExportedPredictor:
    """What both runtimes share: deploy.json, resizing, rescaling, the output format."""

    format = None

    def __init__(self, model_dir, tiles_per_batch=TILES_PER_BATCH):
        self.model_dir = model_dir
        if int(tiles_per_batch) < 1:
            raise DeployError(f"tiles_per_batch {tiles_per_batch!r}: must be at least 1")
        self.tiles_per_batch = int(tiles_per_batch)  # a large image's tiles per graph call
        self.info = read_deploy_info(model_dir)
        if self.info.get("format") != self.format:
            raise DeployError(f"{model_dir} holds a {self.info.get('format')!r} export, not "
                              f"{self.format!r}: use load_predictor({model_dir!r})")
        self.classes = list(self.info["classes"])
        resize = self.info["input"]["resize"]
        self.min_size, self.max_size = int(resize["min_size"]), int(resize["max_size"])
        # exports written before tiling have no "tile": never tiled
        self.tile = dict({"size": 0, "overlap": 0, "iou_thresh": 0.5, "containment_thresh": 0.7},
                         **self.info.get("tile", {}))
        self.max_detections = int(self.info.get("max_detections", 100))
        if self.tile["size"] > 0:
            try:
                tile_windows(1, 1, self.tile["size"], self.tile["overlap"])
            except ValueError as e:
                raise DeployError(f"{model_dir}/{DEPLOY_FILE} tile: {e}") from None

    def run_batch(self, images):
        """The graph on already resized uint8 (B, H, W, 3) BGR images: boxes, scores, classes
        in their pixels and each detection's image index."""
        raise NotImplementedError

    def run_resized(self, image):
        """The graph on one already resized uint8 (H, W, 3) BGR image: boxes, scores, classes
        in its pixels."""
        boxes, scores, classes, _ = self.run_batch(image[None])
        return boxes, scores, classes

    def _check(self, image):
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            raise DeployError(f"expected a (H, W, 3) BGR numpy image as cv2.imread gives, got "
                              f"{getattr(image, 'shape', type(image).__name__)}")
        if image.dtype != np.uint8:
            raise DeployError(f"expected a uint8 image, got {image.dtype}")

    def predict(self, image, output_size=None):
        """Detections of a BGR uint8 (H, W, 3) ``image``. Without ``output_size`` the image is
        the original: it is resized here and the boxes come back in its pixels. With
        ``output_size`` (h, w) the image is already resized (the evaluation passes
        detectron2's) and the boxes are scaled to ``output_size``."""
        self._check(image)
        if output_size is None:
            import cv2

            output_size = image.shape[:2]
            new_h, new_w = resized_shape(*output_size, self.min_size, self.max_size)
            if (new_h, new_w) != output_size:
                image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        boxes, scores, classes = self.run_tiled(np.ascontiguousarray(image))
        boxes, scores, classes = rescale_boxes(boxes, scores, classes.astype(np.int64),
                                               image.shape[:2], output_size)
        return to_instances(tuple(output_size), boxes, scores, classes)

    def run_tiled(self, image):
        """:meth:`run_resized`, on the tiles of deploy.json's ``tile`` where the image is
        larger than one (the eager model's windows and merge, tkd_d2/tiling.py)."""
        size = int(self.tile["size"])
        if size <= 0:
            return self.run_resized(image)

        def detect(windows):  # the tiles of an image have one size: batches of tiles_per_batch
            out = []
            for start in range(0, len(windows), self.tiles_per_batch):
                chunk = windows[start:start + self.tiles_per_batch]
                tiles = np.stack([image[y0:y1, x0:x1] for x0, y0, x1, y1 in chunk])
                boxes, scores, classes, index = self.run_batch(tiles)
                for i in range(len(chunk)):  # each tile's boxes clipped to it, as the eager postprocess
                    mine = index == i
                    out.append(rescale_boxes(boxes[mine], scores[mine], classes[mine],
                                             tiles.shape[1:3], tiles.shape[1:3]))
            return out

        return detect_tiled(image.shape[0], image.shape[1], size, int(self.tile["overlap"]), detect,
                            float(self.tile["iou_thresh"]), float(self.tile["containment_thresh"]),
                            self.max_detections)

    def __call__(self, original_image):
        """One BGR uint8 (H, W, 3) image → ``{"instances": ...}``, as ``DefaultPredictor``."""
        return {"instances": self.predict(original_image)}


class OnnxPredictor(_ExportedPredictor):
    """An ONNX export (``model.onnx``) run by ONNX Runtime on the CPU.

    ``threads``: ONNX Runtime's intra-op threads (None: its default, all cores);
    ``optimization``: graph optimisation level "all", "extended", "basic" or "disable";
    ``providers``: ONNX Runtime execution providers (default CPU);
    ``tiles_per_batch``: a tiled image's tiles per graph call.
    """

    format = "onnx"

    def __init__(self, model_dir, threads=None, optimization="all", providers=None,
                 tiles_per_batch=TILES_PER_BATCH):
        super().__init__(model_dir, tiles_per_batch)
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise DeployError(
                f"OnnxPredictor needs onnxruntime, which is not installed ({e}): "
                "`pip install onnxruntime` (setup.sh installs it)") from e
        levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                  "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                  "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
        if optimization not in levels:
            raise DeployError(f"optimization {optimization!r} is not one of {sorted(levels)}")
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[optimization]
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(self.info["model_path"], options,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for unreadable graphs
            raise DeployError(f"ONNX Runtime cannot load {self.info['model_path']}: {e}") from e
        self.input_name = self.session.get_inputs()[0].name

    def run_batch(self, images):
        return tuple(self.session.run(None, {self.input_name: images}))


class TorchScriptPredictor(_ExportedPredictor):
    """A TorchScript export (``model.ts``) run by ``torch.jit.load`` (no detectron2 needed)."""

    format = "torchscript"

    def __init__(self, model_dir, threads=None, tiles_per_batch=TILES_PER_BATCH):
        super().__init__(model_dir, tiles_per_batch)
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        self.module = torch.jit.load(self.info["model_path"], map_location="cpu").eval()

    def run_batch(self, images):
        import torch

        with torch.no_grad():
            return tuple(t.numpy() for t in self.module(torch.from_numpy(images)))


def load_predictor(model_dir, **kwargs):
    """The predictor for the export in ``model_dir`` (by its deploy.json ``format``)."""
    fmt = read_deploy_info(model_dir).get("format")
    predictors = {"onnx": OnnxPredictor, "torchscript": TorchScriptPredictor}
    if fmt not in predictors:
        raise DeployError(f"{model_dir}/{DEPLOY_FILE}: unknown format {fmt!r}")
    return predictors[fmt](model_dir, **kwargs)

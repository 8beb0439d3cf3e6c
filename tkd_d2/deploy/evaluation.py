"""Evaluate an exported model with detectron2's ``inference_on_dataset`` and the project's
COCO evaluator: :class:`ExportedModelAdapter` makes an export look like a detectron2 model."""
import numpy as np
import torch
from torch import nn

from .runtime import DeployError, load_predictor

__all__ = ["ExportedModelAdapter", "loader_image"]


class ExportedModelAdapter(nn.Module):
    """``batched_inputs`` (the test mapper's dicts: ``image`` a CHW tensor already resized, in
    ``input_format`` channel order; ``height``/``width`` of the original) → detectron2's output
    list, computed by the exported model in ``model_dir`` (ONNX Runtime or TorchScript).

    The mapper's resized image is what the eager model sees, so both are evaluated on the
    same pixels. The export's predictor tiles by itself (deploy.json's ``tile``), so the
    evaluation does not wrap the adapter in tiles (``tiles_itself``)."""

    tiles_itself = True

    @classmethod
    def from_config(cls, model_dir, cfg, **predictor_kwargs):
        """The adapter for evaluating with ``cfg``'s test loader; the export must have been
        made for the same test size (the loader resizes, the graph does not)."""
        adapter = cls(model_dir, cfg.INPUT.FORMAT, **predictor_kwargs)
        resize = adapter.predictor.info["input"]["resize"]
        wanted = (int(cfg.INPUT.MIN_SIZE_TEST), int(cfg.INPUT.MAX_SIZE_TEST))
        if (int(resize["min_size"]), int(resize["max_size"])) != wanted:
            raise DeployError(
                f"{model_dir} was exported for test size min {resize['min_size']} / max "
                f"{resize['max_size']}, the config evaluates at INPUT.MIN_SIZE_TEST {wanted[0]} / "
                f"INPUT.MAX_SIZE_TEST {wanted[1]}: pass the config (and overrides) it was "
                "exported with")
        tile = adapter.predictor.tile
        exported = (int(tile["size"]), int(tile["overlap"]), float(tile["iou_thresh"]), float(tile["containment_thresh"]))
        wanted = (int(cfg.TEST.TILE.SIZE), int(cfg.TEST.TILE.OVERLAP), float(cfg.TEST.TILE.IOU_THRESH),
                  float(cfg.TEST.TILE.CONTAINMENT_THRESH))
        if exported != wanted and (exported[0] > 0 or wanted[0] > 0):
            raise DeployError(
                f"{model_dir} was exported with tiles (size, overlap, IoU, containment) {exported}, the "
                f"config evaluates with TEST.TILE {wanted}: pass the config (and overrides) it was exported with")
        return adapter

    def __init__(self, model_dir, input_format="BGR", **predictor_kwargs):
        super().__init__()
        self.predictor = load_predictor(model_dir, **predictor_kwargs)
        self.input_format = input_format

    def forward(self, batched_inputs):
        return [{"instances": self.predictor.predict(*loader_image(inputs, self.input_format))}
                for inputs in batched_inputs]


def loader_image(inputs, input_format="BGR"):
    """A detectron2 model input dict (the loader's resized (3, H, W) tensor in
    ``input_format``) as the export's input: a contiguous uint8 (H, W, 3) BGR image and the
    (height, width) to report boxes in."""
    # numpy, not torch ops: a torch op here wakes torch's OpenMP threads, which then spin
    # beside ONNX Runtime's for the same cores (40 instead of 70 images/s on 2 cores)
    image = np.asarray(inputs["image"].detach().cpu()).transpose(1, 2, 0)
    if input_format == "RGB":
        image = image[:, :, ::-1]
    # the mapper's tensor holds uint8 values: the conversion is exact
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    size = (int(inputs.get("height", image.shape[0])), int(inputs.get("width", image.shape[1])))
    return np.ascontiguousarray(image), size

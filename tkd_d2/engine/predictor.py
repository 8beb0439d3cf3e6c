"""The project's predictor: detectron2's ``DefaultPredictor`` loading through the checked
loader (a checkpoint that does not fit the config is an error, never a half-random model)."""
import detectron2.data.transforms as T
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from ..checkpoint import load_weights
from ..config import student_cfg
from ..modeling import apply_memory_format
from ..modeling.tiled import tiled

__all__ = ["Predictor", "resize_for_inference"]


def resize_for_inference(cfg):
    """The test-time resize of ``cfg`` (``DefaultPredictor``'s: shortest edge to
    ``INPUT.MIN_SIZE_TEST``, longest at most ``INPUT.MAX_SIZE_TEST``). Needs no model: callers
    that only prepare images (the pipeline's ONNX timing) use it without building one."""
    return T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)


class Predictor(DefaultPredictor):
    """One BGR uint8 image in, ``{"instances": Instances}`` out (boxes in input pixels), as
    detectron2's ``DefaultPredictor``.

    ``cfg`` may be a TKD distiller config: its student is built (a distilled checkpoint holds
    the student's weights). ``weights`` default to ``cfg.MODEL.WEIGHTS``. The checkpoint's
    class names are kept as ``checkpoint_classes`` (None for files that do not record them).
    With TEST.TILE.SIZE > 0 a test-scale image larger than a tile runs as merged tiles.
    """

    def __init__(self, cfg, weights=None):
        # DefaultPredictor.__init__ with the checked load in place of its unchecked one
        # (__call__ is detectron2's own)
        self.cfg = student_cfg(cfg).clone()
        self.model = apply_memory_format(self.cfg, build_model(self.cfg))
        self.model.eval()
        if len(self.cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(self.cfg.DATASETS.TEST[0])
        weights = self.cfg.MODEL.WEIGHTS if weights is None else weights
        self.checkpoint_classes = load_weights(self.model, weights).get("thing_classes")
        self.model = tiled(self.cfg, self.model)
        self.aug = resize_for_inference(self.cfg)
        self.input_format = self.cfg.INPUT.FORMAT

    def preprocess(self, original_image):
        """The model's input dict for one BGR uint8 image, as ``__call__`` builds it."""
        import torch

        if self.input_format == "RGB":
            original_image = original_image[:, :, ::-1]
        height, width = original_image.shape[:2]
        image = self.aug.get_transform(original_image).apply_image(original_image)
        image = torch.as_tensor(image.astype("float32").transpose(2, 0, 1))
        return {"image": image.to(self.cfg.MODEL.DEVICE), "height": height, "width": width}

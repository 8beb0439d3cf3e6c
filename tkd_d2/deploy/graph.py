"""The whole detector as one traceable module: a BGR uint8 image in, detections out.

:class:`DeployableDetector` wraps a built detectron2 ``RetinaNet`` or the project's
``FCOSDetector`` (eval mode) and runs, for one image, what ``model([{"image": ...}])`` runs:
channel order, normalisation, padding to the backbone's size divisibility, backbone + FPN,
head, anchors / points for the feature sizes at hand, box decoding, per-level top-k and score
threshold, per-class NMS and the detections-per-image cap. Every step is written with tensor
operations on the input's shape, so a trace (ONNX, TorchScript) keeps height and width
dynamic: anchors come from ``Range`` ops, top-k from ``TopK`` with ``min(k, count)``, NMS from
torchvision's ``batched_nms`` (ONNX ``NonMaxSuppression``).

Graph input: ``image``, uint8, (H, W, 3), BGR (as ``cv2.imread`` gives it), already resized to
the config's test size (:func:`tkd_d2.deploy.runtime.resized_shape`). Outputs, in that
image's pixels: ``boxes`` (N, 4) float32 XYXY clipped to the image, ``scores`` (N,) float32
(descending), ``classes`` (N,) int64.
"""
import torch
from torch import nn
from torch.nn import functional as F

from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from torchvision.ops import batched_nms

from ..errors import ConfigError
from ..modeling.family import FAMILIES

__all__ = ["DeployableDetector", "INPUT_NAMES", "OUTPUT_NAMES"]

INPUT_NAMES = ("image",)
OUTPUT_NAMES = ("boxes", "scores", "classes")


def _top_k(scores, k):
    """``scores.topk(min(k, len(scores)))`` that stays dynamic in a trace (ONNX TopK)."""
    if torch.jit.is_tracing():
        count = torch._shape_as_tensor(scores)[0]
        k = torch.clamp(count, max=k)
    else:
        k = min(k, scores.shape[0])
    return scores.topk(k)


class DeployableDetector(nn.Module):
    """One image → ``(boxes, scores, classes)``, as the wrapped detector's inference computes
    them (see the module docstring). ``detector``: a RetinaNet or FCOSDetector, not modified;
    ``input_format``: the channel order it was trained on (``cfg.INPUT.FORMAT``)."""

    def __init__(self, detector, input_format="BGR"):
        super().__init__()
        arch = type(detector).__name__
        families = {f.meta_architecture: f for f in FAMILIES}
        if arch not in families:
            raise ConfigError(
                f"cannot export a {arch}: the exporter supports "
                f"{sorted(families)} (MODEL.META_ARCHITECTURE / MODEL.TKD.STUDENT_META_ARCHITECTURE)"
            )
        self.family = families[arch]
        self.detector = detector.eval()
        if input_format not in ("BGR", "RGB"):
            raise ConfigError(f"INPUT.FORMAT {input_format!r}: the exporter supports BGR and RGB")
        self.rgb_input = input_format == "RGB"
        self.size_divisibility = max(int(detector.backbone.size_divisibility), 1)
        self.eval()  # exporters restore the wrapper's mode on the detector afterwards

    def preprocess(self, image):
        """uint8 (H, W, 3) BGR → normalised, padded (1, 3, H', W') float."""
        x = image.permute(2, 0, 1).to(torch.float32)
        if self.rgb_input:
            x = x.flip(0)
        d = self.detector
        x = (x - d.pixel_mean) / d.pixel_std
        height, width = x.shape[-2], x.shape[-1]
        divisor = self.size_divisibility
        # zeros after normalisation, at the bottom/right: detectron2's ImageList padding
        x = F.pad(x, (0, (-width) % divisor, 0, (-height) % divisor))
        return x[None], height, width

    def forward(self, image):
        d = self.detector
        x, height, width = self.preprocess(image)
        features = d.backbone(x)
        features = [features[f] for f in d.head_in_features]
        predictions = d.head(features)
        anchors = d.anchor_generator(features)
        num_classes = d.num_classes
        logits = [permute_to_N_HWA_K(t, num_classes)[0] for t in predictions[0]]
        deltas = [permute_to_N_HWA_K(t, 4)[0] for t in predictions[1]]
        if self.family.has_centerness:
            centerness = [permute_to_N_HWA_K(t, 1)[0] for t in predictions[2]]
            scores = [torch.sqrt(c.sigmoid() * z.sigmoid()) for c, z in zip(logits, centerness)]
        else:
            scores = [c.sigmoid() for c in logits]

        all_boxes, all_scores, all_classes = [], [], []
        for level_scores, level_deltas, level_anchors in zip(scores, deltas, anchors):
            # top-k of all scores, then the threshold: the same set as detectron2's threshold
            # then top-k, and TopK's input size follows from the feature size alone
            top_scores, top_index = _top_k(level_scores.flatten(), d.test_topk_candidates)
            keep = top_scores > d.test_score_thresh
            top_scores, top_index = top_scores[keep], top_index[keep]
            anchor_index = torch.div(top_index, num_classes, rounding_mode="floor")
            all_classes.append(top_index - anchor_index * num_classes)
            all_boxes.append(d.box2box_transform.apply_deltas(
                level_deltas[anchor_index], level_anchors.tensor[anchor_index]))
            all_scores.append(top_scores)
        boxes, scores, classes = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_classes)
        keep = batched_nms(boxes, scores, classes, d.test_nms_thresh)[: d.max_detections_per_image]
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
        # clip to the unpadded image, as detectron2's postprocessing does
        limits = torch.stack([width, height, width, height]).to(boxes.dtype) \
            if torch.jit.is_tracing() else boxes.new_tensor([width, height, width, height])
        boxes = torch.minimum(boxes.clamp(min=0), limits)
        return boxes, scores, classes

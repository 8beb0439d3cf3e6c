"""The whole detector as one traceable module: a batch of BGR uint8 images in, detections out.

:class:`DeployableDetector` wraps a built detectron2 ``RetinaNet`` or the project's
``FCOSDetector`` (eval mode) and runs, for each image of a batch of one size, what
``model([{"image": ...}, ...])`` runs: channel order, normalisation, padding to the backbone's
size divisibility, backbone + FPN, head, anchors / points for the feature sizes at hand, box
decoding, per-level top-k and score threshold, per-class NMS and the detections-per-image cap.
Every step is written with tensor operations on the input's shape, so a trace (ONNX,
TorchScript) keeps batch, height and width dynamic: anchors come from ``Range`` ops, top-k from
``TopK`` with ``min(k, count)``, NMS from torchvision's ``batched_nms`` (ONNX
``NonMaxSuppression``) with one group per image and class.

Graph input: ``images``, uint8, (B, H, W, 3), BGR (as ``cv2.imread`` gives them), already
resized to the config's test size (:func:`tkd_d2.deploy.runtime.resized_shape`); a batch is one
image, or the equal-sized tiles of one. Outputs, in those images' pixels, all images' detections
together: ``boxes`` (N, 4) float32 XYXY clipped to the image, ``scores`` (N,) float32
(descending), ``classes`` (N,) int64, ``image_index`` (N,) int64 (which image of the batch).
"""
import torch
from torch import nn
from torch.nn import functional as F

from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from torchvision.ops import batched_nms

from ..errors import ConfigError
from ..modeling.family import FAMILIES

__all__ = ["DeployableDetector", "INPUT_NAMES", "OUTPUT_NAMES"]

INPUT_NAMES = ("images",)
OUTPUT_NAMES = ("boxes", "scores", "classes", "image_index")


def _top_k(scores, k):
    """Row-wise ``scores.topk(min(k, scores.shape[1]))`` of (B, C) scores that stays dynamic in
    a trace (ONNX TopK)."""
    if torch.jit.is_tracing():
        count = torch._shape_as_tensor(scores)[1]
        k = torch.clamp(count, max=k)
    else:
        k = min(k, scores.shape[1])
    return scores.topk(k, dim=1)


class DeployableDetector(nn.Module):
    """(B, H, W, 3) images → ``(boxes, scores, classes, image_index)``, as the wrapped
    detector's inference computes them for each image (see the module docstring).
    ``detector``: a RetinaNet or FCOSDetector, not modified; ``input_format``: the channel
    order it was trained on (``cfg.INPUT.FORMAT``)."""

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

    def preprocess(self, images):
        """uint8 (B, H, W, 3) BGR → normalised, padded (B, 3, H', W') float."""
        x = images.permute(0, 3, 1, 2).to(torch.float32)
        if self.rgb_input:
            x = x.flip(1)
        d = self.detector
        x = (x - d.pixel_mean) / d.pixel_std
        height, width = x.shape[-2], x.shape[-1]
        divisor = self.size_divisibility
        # zeros after normalisation, at the bottom/right: detectron2's ImageList padding
        x = F.pad(x, (0, (-width) % divisor, 0, (-height) % divisor))
        return x, height, width

    def forward(self, images):
        d = self.detector
        x, height, width = self.preprocess(images)
        features = d.backbone(x)
        features = [features[f] for f in d.head_in_features]
        predictions = d.head(features)
        anchors = d.anchor_generator(features)  # the same for every image of the batch
        num_classes = d.num_classes
        logits = [permute_to_N_HWA_K(t, num_classes) for t in predictions[0]]  # (B, HWA, K)
        deltas = [permute_to_N_HWA_K(t, 4) for t in predictions[1]]
        if self.family.has_centerness:
            centerness = [permute_to_N_HWA_K(t, 1) for t in predictions[2]]
            scores = [torch.sqrt(c.sigmoid() * z.sigmoid()) for c, z in zip(logits, centerness)]
        else:
            scores = [c.sigmoid() for c in logits]

        all_boxes, all_scores, all_classes, all_images = [], [], [], []
        for level_scores, level_deltas, level_anchors in zip(scores, deltas, anchors):
            # per image, top-k of all scores, then the threshold: the same set as detectron2's
            # threshold then top-k, and TopK's input size follows from the feature size alone
            top_scores, top_index = _top_k(level_scores.flatten(1), d.test_topk_candidates)
            image_index, rank = (top_scores > d.test_score_thresh).nonzero(as_tuple=True)
            top_scores, top_index = top_scores[image_index, rank], top_index[image_index, rank]
            anchor_index = torch.div(top_index, num_classes, rounding_mode="floor")
            all_classes.append(top_index - anchor_index * num_classes)
            all_boxes.append(d.box2box_transform.apply_deltas(
                level_deltas[image_index, anchor_index], level_anchors.tensor[anchor_index]))
            all_scores.append(top_scores)
            all_images.append(image_index)
        boxes, scores, classes = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_classes)
        image_index = torch.cat(all_images)
        # per-class NMS within each image (one group per image and class), by decreasing score
        keep = batched_nms(boxes, scores, image_index * num_classes + classes, d.test_nms_thresh)
        # the detections-per-image cap: each kept detection's rank among its image's
        batch = torch.arange(images.shape[0], device=keep.device)
        same = (image_index[keep][:, None] == batch[None]).long()
        rank = (same.cumsum(0) * same).sum(1)
        keep = keep[rank <= d.max_detections_per_image]
        boxes, scores, classes, image_index = boxes[keep], scores[keep], classes[keep], image_index[keep]
        # clip to the unpadded image, as detectron2's postprocessing does
        limits = torch.stack([width, height, width, height]).to(boxes.dtype) \
            if torch.jit.is_tracing() else boxes.new_tensor([width, height, width, height])
        boxes = torch.minimum(boxes.clamp(min=0), limits)
        return boxes, scores, classes, image_index

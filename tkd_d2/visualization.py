"""Draw what a detector sees: predictions and ground truth with detectron2's Visualizer.

One drawing path for ``tools/visualize.py`` (a folder of images) and the side-by-side
pictures of the pipeline (ground truth | teacher | baseline | TKD). Predictions come from
:class:`tkd_d2.engine.Predictor`; this module only reads images and draws:

* :func:`list_images`, :func:`read_image`: input images, with clear errors;
* :func:`draw_predictions`, :func:`draw_ground_truth`: one panel each, class names and scores
  on the boxes, one colour per class in every panel;
* :func:`side_by_side`: titled panels in a row; :func:`save_png`.
"""
import logging
import os

import numpy as np

from .errors import TKDError

__all__ = [
    "IMAGE_EXTENSIONS",
    "VisualizationError",
    "class_metadata",
    "draw_ground_truth",
    "draw_predictions",
    "list_images",
    "read_image",
    "save_png",
    "side_by_side",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Panels are drawn at least this many pixels on their short side, so that labels stay
# readable on 128-200 px defect images.
MIN_PANEL_SIDE = 400


class VisualizationError(TKDError, RuntimeError):
    """A user-facing problem (missing file, unreadable image, empty folder)."""


# ------------------------------------------------------------------------------ inputs
def list_images(inputs):
    """Image files named by ``inputs`` (files, or folders whose images are taken, sorted).

    Raises :class:`VisualizationError` for a path that does not exist, a file that is not an
    image by its extension, or when no image is found at all.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found = []
    for path in map(str, inputs):
        if os.path.isdir(path):
            images = sorted(
                os.path.join(path, f)
                for f in os.listdir(path)
                if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, f))
            )
            if not images:
                raise VisualizationError(
                    f"folder {path} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)})"
                )
            found.extend(images)
        elif os.path.isfile(path):
            if not path.lower().endswith(IMAGE_EXTENSIONS):
                raise VisualizationError(
                    f"{path} is not an image file (expected one of {', '.join(IMAGE_EXTENSIONS)})"
                )
            found.append(path)
        else:
            raise VisualizationError(f"input {path} does not exist")
    if not found:
        raise VisualizationError("no input images given")
    return found


def read_image(path, format="BGR"):
    """The image at ``path`` as an HxWx3 uint8 array in ``format`` ("BGR" or "RGB")."""
    from detectron2.data.detection_utils import read_image as d2_read_image
    from PIL import Image

    try:
        image = d2_read_image(path, format=format)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise VisualizationError(
            f"could not read image {path} ({type(e).__name__}: {e}); the file is missing, "
            "truncated or not an image"
        ) from e
    if image.ndim == 2:  # e.g. format "L"
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image)


# ------------------------------------------------------------------------------ drawing
def class_metadata(class_names):
    """A private detectron2 ``Metadata`` with ``class_names`` and one fixed colour per class
    (so a class has the same colour in the ground-truth panel and every model's panel)."""
    from detectron2.data.catalog import Metadata
    from detectron2.utils.colormap import colormap

    names = list(class_names or [])
    palette = colormap(rgb=True, maximum=255)
    colors = [tuple(int(c) for c in palette[i % len(palette)]) for i in range(len(names))]
    return Metadata(name="tkd_d2_visualization", thing_classes=names, thing_colors=colors)


def _visualizer(image_rgb, metadata, scale):
    from detectron2.utils.visualizer import ColorMode, Visualizer

    if scale is None:
        scale = max(1.0, MIN_PANEL_SIDE / max(1, min(image_rgb.shape[:2])))
    mode = ColorMode.SEGMENTATION if metadata.get("thing_colors", None) else ColorMode.IMAGE
    return Visualizer(image_rgb, metadata, scale=scale, instance_mode=mode)


def draw_predictions(image_rgb, instances, metadata, score_thresh=0.3, scale=None):
    """RGB picture of ``instances`` with score ≥ ``score_thresh`` (class name + score)."""
    instances = instances.to("cpu")
    if instances.has("scores"):
        instances = instances[instances.scores >= score_thresh]
    vis = _visualizer(image_rgb, metadata, scale)
    return vis.draw_instance_predictions(instances).get_image()


def draw_ground_truth(image_rgb, dataset_dict, metadata, scale=None):
    """RGB picture of the annotations of a detectron2 dataset dict (class names)."""
    vis = _visualizer(image_rgb, metadata, scale)
    return vis.draw_dataset_dict(dataset_dict).get_image()


def _title_bar(width, title, height=None):
    import cv2

    height = height or max(24, width // 16)
    bar = np.full((height, width, 3), 255, np.uint8)
    scale = height / 40.0
    thickness = max(1, int(round(scale * 1.5)))
    (tw, th), _ = cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    while tw > width - 8 and scale > 0.3:  # shrink long titles to fit
        scale *= 0.9
        (tw, th), _ = cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    org = (max(4, (width - tw) // 2), (height + th) // 2)
    cv2.putText(bar, title, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return bar


def side_by_side(panels, gap=8):
    """One RGB image of ``panels`` = [(title, rgb image), ...] in a row, each titled."""
    import cv2

    if not panels:
        raise ValueError("side_by_side needs at least one panel")
    height = max(img.shape[0] for _, img in panels)
    columns = []
    for title, img in panels:
        if img.shape[0] != height:  # same height for all, keeping the aspect ratio
            width = int(round(img.shape[1] * height / img.shape[0]))
            img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
        columns.append(np.vstack([_title_bar(img.shape[1], title), img]))
    bar_height = columns[0].shape[0]
    spacer = np.full((bar_height, gap, 3), 255, np.uint8)
    row = [columns[0]]
    for col in columns[1:]:
        row += [spacer, col]
    return np.hstack(row)


def save_png(path, image_rgb):
    """Write an RGB uint8 image as PNG (folders created); raises if it cannot be written."""
    import cv2

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, np.ascontiguousarray(image_rgb[:, :, ::-1])):
        raise VisualizationError(f"could not write {path}")
    return path

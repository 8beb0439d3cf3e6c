"""Deterministic synthetic steel-surface defect images with exact boxes (a NEU-DET look-alike).

Each image is a grayscale hot-rolled-steel texture (fine grain + streaks along the rolling
direction, horizontal here + low-frequency illumination) with 1-4 defects of the six NEU-DET
kinds, drawn so that a small detector can tell them apart:

==================  ================================================================
crazing             a network of thin dark cracks (branching random walks)
inclusion           1-3 smooth elongated blobs in a chain, dark or light
patches             one large irregular, mottled dark region
pitted_surface      a cluster of small round dark pits
rolled-in_scale     scattered small dark flakes elongated along the rolling direction
scratches           one long thin (slightly curved) bright or dark line, any direction
==================  ================================================================

Large-image mode (``defect_size`` < ``image_size``, issue #27): each defect is drawn on a
``defect_size`` canvas and placed at a random spot of a large surface, so defects stay a few
dozen pixels across on 1024-2048 px images; a large image holds 2-8 of them.

Every defect is drawn into its own mask; its box is the tight box of the mask's visible
pixels (inside the image by construction). The output folder is a VOC dataset
(``IMAGES/*.jpg``, ``ANNOTATIONS/*.xml``) read back with :func:`load_voc_instances`, plus a
``DONE`` marker written last. Image ``i`` depends only on (seed, split, i): the same seed gives
byte-identical files, and train/test draw from different seeds derived from seed and split.
"""
import json
import logging
import os
import shutil
import uuid
import zlib

import cv2
import numpy as np

from ..errors import DatasetFormatError
from .registry import replace_registration
from .voc import load_voc_instances, write_voc_annotation

__all__ = [
    "SYNTHETIC_CLASSES",
    "GENERATOR_VERSION",
    "generate_synthetic_defects",
    "register_synthetic_defects",
    "synthetic_cache_dir",
    "synthetic_dataset_cached",
    "render_defect_image",
]

logger = logging.getLogger(__name__)

# The six NEU-DET defect kinds (NEU_DET_CLASSES in builtin.py is this tuple).
SYNTHETIC_CLASSES = (
    "crazing",
    "inclusion",
    "patches",
    "pitted_surface",
    "rolled-in_scale",
    "scratches",
)
# Bump when the drawing changes, so cached datasets of the old look are not reused.
GENERATOR_VERSION = 1
DONE_MARKER = "DONE"
_JPEG_QUALITY = 95
_VISIBLE = 0.15  # mask level counted as drawn when taking the tight box
# A defect covering more than this fraction of an earlier one (or vice versa) is redrawn elsewhere.
_MAX_OVERLAP = 0.2


# ------------------------------------------------------------------------------ texture
def steel_texture(rng, size):
    """A float32 (size, size) hot-rolled steel background, mean ~95-150 gray levels."""
    base = rng.uniform(95.0, 150.0)
    # Low-frequency illumination: a coarse random grid, smoothly upsampled.
    illumination = cv2.resize(
        rng.normal(0.0, 1.0, (4, 4)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC
    ) * rng.uniform(5.0, 12.0)
    # Rolling streaks: noise stretched along x (the rolling direction) + a per-row profile.
    streaks = (
        cv2.resize(
            rng.normal(0.0, 1.0, (size, max(size // 25, 2))).astype(np.float32),
            (size, size),
            interpolation=cv2.INTER_LINEAR,
        )
        * rng.uniform(3.0, 7.0)
    )
    rows = np.convolve(rng.normal(0.0, 1.0, size + 4), np.ones(5) / 5.0, mode="valid")
    streaks += (rows.astype(np.float32) * rng.uniform(2.0, 5.0))[:, None]
    grain = cv2.GaussianBlur(rng.normal(0.0, 6.0, (size, size)).astype(np.float32), (3, 3), 0.8)
    grain += rng.normal(0.0, 2.0, (size, size)).astype(np.float32)
    return base + illumination + streaks + grain


# ------------------------------------------------------------------------------ defects
# Each drawer returns (mask float32 in [0, 1], signed amplitude in gray levels).
def _centre(rng, size, margin):
    margin = min(margin, size / 2 - 1)
    return rng.uniform(margin, size - margin), rng.uniform(margin, size - margin)


def _crazing(rng, size):
    mask = np.zeros((size, size), np.uint8)
    cx, cy = _centre(rng, size, 0.2 * size)
    half_w, half_h = rng.uniform(0.1, 0.2, 2) * size
    lo = np.array([max(cx - half_w, 1), max(cy - half_h, 1)])
    hi = np.array([min(cx + half_w, size - 2), min(cy + half_h, size - 2)])
    vertices = []
    for _ in range(rng.integers(12, 22)):
        if vertices and rng.random() < 0.7:  # branch from an existing crack: a network
            point = vertices[rng.integers(len(vertices))].copy()
        else:
            point = rng.uniform(lo, hi)
        angle = rng.uniform(0, 2 * np.pi)
        steps = rng.integers(4, 10)
        # Jagged: each step turns by up to ±45°, 3-6 px long.
        angles = angle + np.cumsum(rng.uniform(-0.8, 0.8, steps))
        lengths = rng.uniform(3.0, 6.0, steps)
        path = point + np.cumsum(
            np.stack([np.cos(angles), np.sin(angles)], 1) * lengths[:, None], 0
        )
        path = np.vstack([point, path])
        outside = np.flatnonzero(((path < lo) | (path > hi)).any(1))
        path = path[: outside[0]] if outside.size else path  # a crack stops at the region edge
        if len(path) < 2:
            continue
        vertices.extend(path[1:])
        cv2.polylines(mask, [np.round(path).astype(np.int32)], False, 255, 1, cv2.LINE_AA)
    return mask.astype(np.float32) / 255.0, -rng.uniform(50.0, 75.0)


def _inclusion(rng, size):
    mask = np.zeros((size, size), np.uint8)
    cx, cy = _centre(rng, size, 0.15 * size)
    angle = rng.uniform(-30.0, 30.0)
    direction = np.array([np.cos(np.radians(angle)), np.sin(np.radians(angle))])
    for k in range(rng.integers(1, 4)):
        length = rng.uniform(0.04, 0.1) * size
        width = rng.uniform(2.5, 5.0)
        offset = (k * 2.6 - 1.3) * length * rng.uniform(0.8, 1.1)
        centre = (int(round(cx + offset * direction[0])), int(round(cy + offset * direction[1])))
        cv2.ellipse(mask, centre, (int(length), int(width)), angle, 0, 360, 255, -1, cv2.LINE_AA)
    mask = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (5, 5), 1.0)
    sign = -1.0 if rng.random() < 0.65 else 1.0
    return mask, sign * rng.uniform(45.0, 65.0)


def _patches(rng, size):
    mask = np.zeros((size, size), np.uint8)
    cx, cy = _centre(rng, size, 0.2 * size)
    radius = rng.uniform(0.09, 0.18) * size
    stretch = rng.uniform(1.0, 1.7)  # a little wider along the rolling direction
    angles = np.linspace(0, 2 * np.pi, 18, endpoint=False)
    radii = radius * (1 + np.convolve(rng.uniform(-0.45, 0.45, 20), np.ones(3) / 3, "valid"))
    polygon = np.stack([cx + stretch * radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 255, cv2.LINE_AA)
    sigma = max(radius / 6.0, 1.0)
    mask = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), sigma)
    mottle = cv2.resize(
        rng.uniform(0.55, 1.0, (6, 6)).astype(np.float32),
        (size, size),
        interpolation=cv2.INTER_CUBIC,
    )
    return mask * mottle, -rng.uniform(45.0, 65.0)


def _pitted_surface(rng, size):
    mask = np.zeros((size, size), np.uint8)
    cx, cy = _centre(rng, size, 0.12 * size)
    spread = rng.uniform(0.03, 0.08) * size
    count = rng.integers(12, 30)
    centres = np.clip(rng.normal((cx, cy), spread, (count, 2)), 2, size - 3)
    radii = rng.uniform(1.2, 3.0, count)
    for (x, y), r in zip(centres, radii):
        cv2.circle(mask, (int(round(x)), int(round(y))), int(round(r)), 255, -1, cv2.LINE_AA)
    mask = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (3, 3), 0.6)  # round, soft pits
    return mask, -rng.uniform(60.0, 85.0)


def _rolled_in_scale(rng, size):
    mask = np.zeros((size, size), np.uint8)
    cx, cy = _centre(rng, size, 0.2 * size)
    half_w, half_h = rng.uniform(0.14, 0.28) * size, rng.uniform(0.06, 0.16) * size
    count = rng.integers(8, 20)
    centres = rng.uniform((cx - half_w, cy - half_h), (cx + half_w, cy + half_h), (count, 2))
    centres = np.clip(centres, 4, size - 5)
    for (x, y) in centres:
        axes = (int(rng.integers(3, 8)), int(rng.integers(1, 3)))
        cv2.ellipse(
            mask, (int(x), int(y)), axes, rng.uniform(-12, 12), 0, 360, 255, -1, cv2.LINE_AA
        )
    mask = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (3, 3), 0.7)
    return mask, -rng.uniform(50.0, 70.0)


def _scratches(rng, size):
    mask = np.zeros((size, size), np.uint8)
    cx, cy = _centre(rng, size, 0.3 * size)
    length = rng.uniform(0.4, 0.85) * size
    angle = rng.uniform(0, np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    t = np.linspace(-0.5, 0.5, 24)[:, None]
    bend = rng.uniform(-0.06, 0.06) * length * (1 - 4 * t ** 2)  # a shallow arc
    path = np.array([cx, cy]) + t * length * direction + bend * normal
    path = np.clip(path, 1, size - 2)
    thickness = 1 if rng.random() < 0.75 else 2
    cv2.polylines(mask, [np.round(path).astype(np.int32)], False, 255, thickness, cv2.LINE_AA)
    sign = 1.0 if rng.random() < 0.6 else -1.0
    return mask.astype(np.float32) / 255.0, sign * rng.uniform(55.0, 80.0)


_DRAWERS = (_crazing, _inclusion, _patches, _pitted_surface, _rolled_in_scale, _scratches)


def _tight_box(mask):
    """Tight XYXY box (pixel edges) of the visible part of ``mask``, or None if empty."""
    visible = mask > _VISIBLE
    cols, rows = np.flatnonzero(visible.any(0)), np.flatnonzero(visible.any(1))
    if cols.size == 0:
        return None
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def _overlap(a, b):
    """Intersection over the smaller box's area (catches a small box inside a big one)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return iw * ih / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))


def render_defect_image(rng, size, first_kind, defect_size=None):
    """One image: (uint8 (size, size) array, [(class_name, box XYXY_ABS)]). ``defect_size``
    (< ``size``): each defect drawn on a canvas that large, placed at a random spot."""
    image = steel_texture(rng, size)
    canvas = size if not defect_size or defect_size >= size else int(defect_size)
    extra = rng.integers(0, 4) if canvas == size else rng.integers(1, 8)
    kinds = [first_kind] + list(rng.integers(0, len(_DRAWERS), extra))
    objects = []
    for kind in kinds:
        for _attempt in range(8):
            mask, amplitude = _DRAWERS[kind](rng, canvas)
            box = _tight_box(mask)
            if box is None or box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            x0, y0 = (0, 0) if canvas == size else (int(v) for v in rng.integers(0, size - canvas + 1, 2))
            box = [box[0] + x0, box[1] + y0, box[2] + x0, box[3] + y0]
            if all(_overlap(box, other) <= _MAX_OVERLAP for _, other in objects):
                image[y0:y0 + canvas, x0:x0 + canvas] += amplitude * mask
                objects.append((SYNTHETIC_CLASSES[kind], box))
                break
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), objects


# ------------------------------------------------------------------------------ dataset
def _split_seed(seed, split):
    # crc32, not hash(): the same in every process and Python version.
    return np.random.SeedSequence([int(seed), zlib.crc32(split.encode("utf-8"))])


def _params(num_images, image_size, seed, split, defect_size=0):
    params = {
        "version": GENERATOR_VERSION,
        "num_images": int(num_images),
        "image_size": int(image_size),
        "seed": int(seed),
        "split": split,
    }
    if defect_size:  # large-image mode only: the NEU-DET-like sets keep their cache key
        params["defect_size"] = int(defect_size)
    return params


def _is_complete(out_dir, params):
    marker = os.path.join(out_dir, DONE_MARKER)
    if not os.path.isfile(marker):
        return False
    try:
        with open(marker, encoding="utf-8") as f:
            return json.load(f) == params
    except (OSError, ValueError):
        return False


def _load(out_dir):
    return load_voc_instances(
        os.path.join(out_dir, "IMAGES"),
        os.path.join(out_dir, "ANNOTATIONS"),
        SYNTHETIC_CLASSES,
        bad_box_policy="error",
    )


def _write_dataset(out_dir, params):
    size, split = params["image_size"], params["split"]
    images_dir, annotations_dir = os.path.join(out_dir, "IMAGES"), os.path.join(
        out_dir, "ANNOTATIONS"
    )
    os.makedirs(images_dir)
    os.makedirs(annotations_dir)
    per_image = _split_seed(params["seed"], split).spawn(params["num_images"])
    for index, seed_sequence in enumerate(per_image):
        rng = np.random.default_rng(seed_sequence)
        image, objects = render_defect_image(rng, size, first_kind=index % len(SYNTHETIC_CLASSES),
                                             defect_size=params.get("defect_size"))
        stem = f"synthetic_{split}_{index:06d}"
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode {stem}.jpg")
        with open(os.path.join(images_dir, stem + ".jpg"), "wb") as f:
            f.write(encoded.tobytes())
        write_voc_annotation(
            os.path.join(annotations_dir, stem + ".xml"),
            stem + ".jpg",
            size,
            size,
            objects,
            depth=1,
            database="tkd_d2 synthetic defects",
        )
    # Last: only a complete folder carries the marker.
    with open(os.path.join(out_dir, DONE_MARKER), "w", encoding="utf-8") as f:
        json.dump(params, f, sort_keys=True)


def synthetic_dataset_cached(dataset_name):
    """Whether the registered synthetic dataset ``dataset_name`` is already generated on disk
    (None for a dataset that is not synthetic)."""
    from detectron2.data import MetadataCatalog

    metadata = MetadataCatalog.get(dataset_name)
    params = metadata.get("synthetic_params", None)
    if params is None:
        return None
    return _is_complete(metadata.get("dirname"), params)


def _looks_generated(out_dir):
    return set(os.listdir(out_dir)) <= {"IMAGES", "ANNOTATIONS", DONE_MARKER}


def generate_synthetic_defects(out_dir, num_images, image_size=200, seed=0, split="train", defect_size=0):
    """Generate (or reuse) a synthetic defect dataset in ``out_dir``; return its dataset dicts.

    ``out_dir`` is reused when its ``DONE`` marker records the same parameters; otherwise it
    is generated in a temporary sibling folder and moved into place (so an interrupted or
    concurrent generation never leaves a half-written ``out_dir`` that looks complete).
    Classes: :data:`SYNTHETIC_CLASSES`; every class appears when ``num_images >= 6``.
    ``defect_size`` > 0 (and < ``image_size``): the large-image mode (module docstring).
    """
    if int(num_images) < 1 or int(image_size) < 32:
        raise ValueError(
            f"need num_images >= 1 and image_size >= 32, got {num_images}, {image_size}"
        )
    if defect_size and not 32 <= int(defect_size) < int(image_size):
        raise ValueError(f"DATASETS.SYNTHETIC.DEFECT_SIZE must be 0 or in [32, IMAGE_SIZE={image_size}), "
                         f"got {defect_size}")
    params = _params(num_images, image_size, seed, split, defect_size)
    out_dir = os.path.normpath(out_dir)
    if _is_complete(out_dir, params):
        return _load(out_dir)
    if os.path.exists(out_dir) and not _looks_generated(out_dir):
        raise DatasetFormatError(
            f"{out_dir} exists and is not a synthetic dataset folder (it holds other files); "
            "choose a new or empty folder for the synthetic dataset."
        )

    parent = os.path.dirname(out_dir) or "."
    os.makedirs(parent, exist_ok=True)
    tmp_dir = f"{out_dir}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    logger.info(
        "Generating %d synthetic defect images (%s split) in %s ...", num_images, split, out_dir
    )
    try:
        os.makedirs(tmp_dir)
        _write_dataset(tmp_dir, params)
        if os.path.exists(out_dir) and not _is_complete(out_dir, params):
            shutil.rmtree(out_dir)  # stale parameters or an interrupted generation
        try:
            os.rename(tmp_dir, out_dir)
        except OSError:
            if not _is_complete(out_dir, params):  # not just another process finishing first
                raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return _load(out_dir)


def synthetic_cache_dir(root, split, num_images, image_size=200, seed=0, defect_size=0):
    """Folder under ``root`` for the generated dataset with these parameters."""
    large = f"-defects{int(defect_size)}" if defect_size else ""
    key = f"{split}-n{int(num_images)}-size{int(image_size)}{large}-seed{int(seed)}-v{GENERATOR_VERSION}"
    return os.path.join(root, "synthetic_defects", key)


def register_synthetic_defects(name, root, split, num_images, image_size=200, seed=0, defect_size=0):
    """Register a synthetic defect dataset, generated on the first ``DatasetCatalog.get``
    into :func:`synthetic_cache_dir` (``root/synthetic_defects/<parameters>``)."""
    out_dir = synthetic_cache_dir(root, split, num_images, image_size, seed, defect_size)
    replace_registration(
        name,
        lambda: generate_synthetic_defects(out_dir, num_images, image_size, seed, split, defect_size),
        thing_classes=list(SYNTHETIC_CLASSES),
        evaluator_type="coco",
        dirname=out_dir,
        synthetic_params=_params(num_images, image_size, seed, split, defect_size),
    )

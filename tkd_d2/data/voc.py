"""Pascal-VOC XML detection datasets → detectron2 dataset dicts.

Layout: one XML per image in ``annotations_dir`` (``<stem>.xml``) and the image at
``images_dir/<stem><image_ext>`` (falling back to the XML's ``<filename>``). The image list
is a split file (one stem per line) or, without one, every XML in ``annotations_dir``,
sorted. Nothing is decoded at load time: image existence is checked on the file system and
the size is read from ``<size>`` (the image header is read only when ``<size>`` is absent or
zero). Every problem raises :class:`DatasetFormatError` naming the file and the fix.
"""
import logging
import math
import os
import xml.etree.ElementTree as ET

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ..errors import DatasetFormatError
from .registry import LOAD_REPORTS, OUTSIDE_TOLERANCE_PX, check_bad_box_policy, clip_box, replace_registration

__all__ = ["load_voc_instances", "register_voc", "write_voc_annotation", "read_split_file"]

logger = logging.getLogger(__name__)

def read_split_file(split_file):
    """Stems listed in a VOC split file: first token of each line; blank and '#' lines skipped."""
    if not os.path.isfile(split_file):
        raise DatasetFormatError(
            f"split file {split_file} does not exist. Give the path of a text file with one "
            "image stem per line, or no split file to use every XML in the annotations folder."
        )
    stems = []
    with open(split_file, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            stem = line.split()[0]
            if stem.lower().endswith(".xml"):
                stem = stem[: -len(".xml")]
            stems.append((line_number, stem))
    if not stems:
        raise DatasetFormatError(f"split file {split_file} lists no images; add one stem per line.")
    return stems


def check_class_names(class_names, where):
    """``class_names`` as a list, or a one-line error naming ``where`` (the dataset): an empty
    list leaves every object unknown, a name listed twice would map to its last id only."""
    class_names = list(class_names)
    key = "(DATASETS.CUSTOM.CLASSES for datasets registered from the config)"
    if not class_names:
        raise DatasetFormatError(f"{where}: the class list {key} is empty; give the class names.")
    duplicated = sorted({c for c in class_names if class_names.count(c) > 1})
    if duplicated:
        raise DatasetFormatError(
            f"{where}: class names {duplicated} are listed more than once in the class list "
            f"{key}; give each class once, in category order."
        )
    return class_names


def _list_dir(path, what):
    if not os.path.isdir(path):
        raise DatasetFormatError(
            f"{what} folder {path} does not exist (cwd: {os.getcwd()}). Check the dataset path; "
            "builtin datasets live under $DETECTRON2_DATASETS (default ./datasets)."
        )
    return os.listdir(path)


def _number(parent, tag, xml_path, where):
    text = parent.findtext(tag)
    if text is None or not text.strip():
        raise DatasetFormatError(
            f"{xml_path}: {where} has no <{tag}> value. Add it or remove the {where.split()[0]}."
        )
    try:
        value = float(text)
    except ValueError:
        raise DatasetFormatError(
            f"{xml_path}: {where} <{tag}> is {text.strip()!r}, not a number. Fix the value."
        ) from None
    if not math.isfinite(value):
        raise DatasetFormatError(f"{xml_path}: {where} <{tag}> is {text.strip()!r}. Fix the value.")
    return value


def _size_from_xml(root, xml_path):
    """(width, height) from <size>, or None when it is absent or zero (read the image then)."""
    size = root.find("size")
    if size is None:
        return None
    if not (size.findtext("width") or "").strip() or not (size.findtext("height") or "").strip():
        return None
    width = _number(size, "width", xml_path, "<size>")
    height = _number(size, "height", xml_path, "<size>")
    if width < 0 or height < 0 or width != int(width) or height != int(height):
        raise DatasetFormatError(
            f"{xml_path}: <size> is {width}x{height}; width and height must be whole pixel "
            "counts. Fix them (or remove <size> to read the size from the image)."
        )
    if width == 0 or height == 0:
        return None
    return int(width), int(height)


def _size_from_image(image_path, xml_path):
    from PIL import Image

    try:
        with Image.open(image_path) as image:  # reads the header only
            return image.size
    except Exception as e:  # noqa: BLE001  (any decoder failure means: unreadable)
        raise DatasetFormatError(
            f"{xml_path}: <size> is missing or zero and the size could not be read from "
            f"{image_path} ({type(e).__name__}: {e}). Add <size> to the XML or fix the image."
        ) from e


class _ImageFinder:
    """Finds an annotation's image with one directory listing (no per-file stat calls)."""

    def __init__(self, images_dir, image_ext):
        self.images_dir = images_dir
        self.image_ext = image_ext
        self.names = set(_list_dir(images_dir, "images"))
        self.lower = {}
        for name in sorted(self.names):
            self.lower.setdefault(name.lower(), name)

    def find(self, stem, filename_tag):
        candidates = [stem + self.image_ext]
        if filename_tag:
            base = filename_tag.replace("\\", "/").split("/")[-1]
            candidates.append(base if os.path.splitext(base)[1] else base + self.image_ext)
        for candidate in candidates:
            if candidate in self.names:
                return os.path.join(self.images_dir, candidate), candidates
            if candidate.lower() in self.lower:
                return os.path.join(self.images_dir, self.lower[candidate.lower()]), candidates
        return None, candidates


def _parse_annotation(xml_path, stem, image_finder, class_to_id, class_names, policy, stats):
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise DatasetFormatError(
            f"{xml_path}: malformed XML ({e}). Fix the file, or remove it (and its line in the "
            "split file)."
        ) from None

    image_path, candidates = image_finder.find(stem, (root.findtext("filename") or "").strip())
    if image_path is None:
        tried = " or ".join(
            os.path.join(image_finder.images_dir, c) for c in dict.fromkeys(candidates)
        )
        raise DatasetFormatError(
            f"{xml_path}: its image {tried} does not exist. Add the image, or remove the XML "
            "(and its line in the split file)."
        )

    size = _size_from_xml(root, xml_path)
    width, height = size if size is not None else _size_from_image(image_path, xml_path)

    annotations = []
    for index, obj in enumerate(root.findall("object"), 1):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DatasetFormatError(
                f"{xml_path}: <object> #{index} has no <name>. Add the class name or remove "
                "the object."
            )
        if name not in class_to_id:
            raise DatasetFormatError(
                f"{xml_path}: <object> #{index} has class {name!r}, which is not a known class "
                f"{list(class_names)}. Fix the name in the XML, or add the class to the class list "
                "(DATASETS.CUSTOM.CLASSES for datasets registered from the config)."
            )
        where = f"<object> #{index} ({name}) <bndbox>"
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DatasetFormatError(
                f"{xml_path}: <object> #{index} ({name}) has no <bndbox>. Add the box or remove "
                "the object."
            )
        xmin, ymin, xmax, ymax = (
            _number(bndbox, tag, xml_path, where) for tag in ("xmin", "ymin", "xmax", "ymax")
        )
        # Same convention as detectron2's own pascal_voc loader: VOC coordinates are 1-based
        # inclusive pixel indices, so (xmin=1, xmax=W) covers the whole image = [0, W] here.
        raw = [xmin - 1.0, ymin - 1.0, xmax, ymax]
        box, changed = clip_box(raw, width, height)
        outside = max(abs(a - b) for a, b in zip(box, raw)) > OUTSIDE_TOLERANCE_PX
        empty = box[2] <= box[0] or box[3] <= box[1]
        if outside and not empty:
            if policy == "error":
                raise DatasetFormatError(
                    f"{xml_path}: {where} (xmin={xmin:g}, ymin={ymin:g}, xmax={xmax:g}, "
                    f"ymax={ymax:g}) of image {image_path} reaches outside the {width}x{height} "
                    "image. Fix the box, or use DATASETS.BAD_BOX_POLICY drop to clip it."
                )
            stats["outside"] += 1
            stats.setdefault(
                "outside_example", f"{xml_path} {where} ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g})"
            )
        if empty:
            if policy == "error":
                raise DatasetFormatError(
                    f"{xml_path}: {where} (xmin={xmin:g}, ymin={ymin:g}, xmax={xmax:g}, "
                    f"ymax={ymax:g}) has zero or negative size after clipping to the "
                    f"{width}x{height} image. Fix the box, or use bad box policy 'drop' "
                    "(DATASETS.BAD_BOX_POLICY) to skip such boxes."
                )
            stats["dropped"] += 1
            stats.setdefault(
                "example", f"{xml_path} {where} ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g})"
            )
            continue
        stats["clipped"] += int(changed)
        annotations.append(
            {"bbox": box, "bbox_mode": BoxMode.XYXY_ABS, "category_id": class_to_id[name]}
        )
    return {"file_name": image_path, "height": height, "width": width, "annotations": annotations}


def load_voc_instances(
    images_dir,
    annotations_dir,
    class_names,
    split_file=None,
    bad_box_policy="drop",
    image_ext=".jpg",
    dataset_name=None,
):
    """Load a VOC XML dataset as detectron2 dataset dicts.

    Args:
        images_dir: folder of the images.
        annotations_dir: folder of ``<stem>.xml`` files.
        class_names: class names in category-id order; each object's class is its ``<name>``.
        split_file: text file with one stem per line; None = every XML in ``annotations_dir``.
        bad_box_policy: boxes are clipped to the image; a box of zero size after clipping is
            dropped and counted in one warning ("drop"), or raises naming the file ("error").
        image_ext: image file extension tried first (then the XML's ``<filename>``).
        dataset_name: the registered name (the box counts go to ``LOAD_REPORTS[name]``).

    Returns:
        list of dicts with ``file_name``, ``image_id`` (position in the list), ``height``,
        ``width`` and ``annotations`` (``bbox`` XYXY_ABS floats, ``bbox_mode``, ``category_id``).
    """
    check_bad_box_policy(bad_box_policy)
    class_names = check_class_names(class_names, f"annotations folder {annotations_dir}")
    class_to_id = {name: i for i, name in enumerate(class_names)}
    xml_names = set(_list_dir(annotations_dir, "annotations"))

    if split_file is None:
        stems = [n[: -len(".xml")] for n in sorted(xml_names) if n.lower().endswith(".xml")]
        if not stems:
            raise DatasetFormatError(
                f"annotations folder {annotations_dir} holds no .xml files; point it at the VOC "
                "annotations folder."
            )
    else:
        listed = read_split_file(split_file)
        missing = [(n, s) for n, s in listed if s + ".xml" not in xml_names]
        if missing:
            (line_number, stem), more = missing[0], len(missing) - 1
            raise DatasetFormatError(
                f"{split_file}: line {line_number} names {stem!r} but "
                f"{os.path.join(annotations_dir, stem + '.xml')} does not exist"
                + (f" ({more} more lines have no XML either)" if more else "")
                + ". Remove those lines or add the XML files."
            )
        stems = [s for _, s in listed]

    image_finder = _ImageFinder(images_dir, image_ext)
    stats = {"dropped": 0, "clipped": 0, "outside": 0}
    dataset_dicts = []
    for image_id, stem in enumerate(stems):
        xml_path = os.path.join(annotations_dir, stem + ".xml")
        record = _parse_annotation(
            xml_path, stem, image_finder, class_to_id, class_names, bad_box_policy, stats
        )
        record["image_id"] = image_id
        dataset_dicts.append(record)

    if stats["dropped"]:
        logger.warning(
            "Dropped %d box(es) of zero or negative size after clipping to the image in %s "
            "(e.g. %s). Use bad box policy 'error' to fail on them instead.",
            stats["dropped"],
            annotations_dir,
            stats["example"],
        )
    if dataset_name:
        LOAD_REPORTS[dataset_name] = {"outside": stats["outside"], "empty": stats["dropped"]}
    if stats["outside"]:
        logger.warning("Clipped %d box(es) reaching outside their image in %s (e.g. %s).",
                       stats["outside"], annotations_dir, stats["outside_example"])
    if stats["clipped"]:
        logger.info("Clipped %d box(es) to the image in %s.", stats["clipped"], annotations_dir)
    return dataset_dicts


def register_voc(
    name,
    images_dir,
    annotations_dir,
    class_names,
    split_file=None,
    bad_box_policy="drop",
    image_ext=".jpg",
    **metadata,
):
    """Register a VOC dataset lazily (no file access until ``DatasetCatalog.get(name)``).

    Re-registering a name replaces it. Metadata: ``thing_classes``, ``evaluator_type="coco"``
    (evaluated with detectron2's COCOEvaluator), ``dirname`` (parent of the annotations
    folder), ``images_dir``, ``annotations_dir``, ``split_file`` and any extra ``metadata``.
    """
    check_bad_box_policy(bad_box_policy)
    class_names = check_class_names(class_names, f"dataset {name!r}")
    replace_registration(
        name,
        lambda: load_voc_instances(
            images_dir, annotations_dir, class_names, split_file, bad_box_policy, image_ext, name
        ),
        thing_classes=class_names,
        evaluator_type="coco",
        dirname=os.path.dirname(os.path.normpath(annotations_dir)),
        images_dir=images_dir,
        annotations_dir=annotations_dir,
        split_file=split_file,
        **metadata,
    )


def _format_coordinate(value):
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def write_voc_annotation(xml_path, image_filename, width, height, objects, depth=3, database=""):
    """Write a VOC XML file; the inverse of :func:`load_voc_instances` for one image.

    ``objects``: iterable of ``(class_name, (x0, y0, x1, y1))`` in detectron2's XYXY_ABS
    coordinates; they are stored as VOC 1-based inclusive pixel indices (xmin = x0 + 1).
    """
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = image_filename
    if database:
        ET.SubElement(ET.SubElement(root, "source"), "database").text = database
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", depth)):
        ET.SubElement(size, tag).text = str(int(value))
    ET.SubElement(root, "segmented").text = "0"
    for class_name, (x0, y0, x1, y1) in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = class_name
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
            ET.SubElement(bndbox, tag).text = _format_coordinate(value)
    ET.indent(root, space="\t")
    with open(xml_path, "wb") as f:
        f.write(ET.tostring(root, encoding="utf-8") + b"\n")

"""The project's builtin datasets, config-driven custom datasets and a registration check.

Builtin datasets live under ``root`` = ``$DETECTRON2_DATASETS`` (default ``./datasets``, the
detectron2 convention), relative to the working directory:

``NEU-DET/`` (``neu_det_train`` / ``neu_det_test``, 6 classes) and ``GC10-DET/``
(``gc10_det_train`` / ``gc10_det_test``, 10 classes), both in the VOC layout::

    IMAGES/<stem>.jpg            the images
    ANNOTATIONS/<stem>.xml       one Pascal-VOC XML per image; class = each object's <name>
    ImageSets/train.txt          one stem per line
    ImageSets/test.txt

GC10-DET's class names are those of its VOC release (``1_chongkong`` punching hole,
``2_hanfeng`` weld line, ``3_yueyawan`` crescent gap, ``4_shuiban`` water spot, ``5_youban``
oil spot, ``6_siban`` silk spot, ``7_yiwu`` inclusion, ``8_yahen`` rolled pit, ``9_zhehen``
crease, ``10_yaozhe`` waist folding); it ships no split, so ``ImageSets/{train,test}.txt``
are the user's.

``synthetic_defects_train`` / ``synthetic_defects_test`` are generated on first use into
``root/synthetic_defects/<parameters>/`` (see :mod:`tkd_d2.data.synthetic`).
Registration is lazy: nothing is read until ``DatasetCatalog.get``.
"""
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..errors import DatasetFormatError, DatasetNotRegisteredError
from .coco import register_coco
from .registry import REGISTERED_BY_TKD, check_bad_box_policy, replace_registration
from .synthetic import SYNTHETIC_CLASSES, register_synthetic_defects
from .voc import load_voc_instances, register_voc

__all__ = [
    "NEU_DET_CLASSES",
    "GC10_DET_CLASSES",
    "default_root",
    "register_all",
    "register_from_cfg",
    "parse_custom_entry",
    "absolute_custom_entry",
    "assert_datasets_registered",
    "train_thing_classes",
]

# The synthetic set draws exactly the six NEU-DET defect kinds, in the same order.
NEU_DET_CLASSES = SYNTHETIC_CLASSES
GC10_DET_CLASSES = (
    "1_chongkong",
    "2_hanfeng",
    "3_yueyawan",
    "4_shuiban",
    "5_youban",
    "6_siban",
    "7_yiwu",
    "8_yahen",
    "9_zhehen",
    "10_yaozhe",
)
# dataset name prefix -> (folder under root, class names)
_BUILTIN_VOC = {
    "neu_det": ("NEU-DET", NEU_DET_CLASSES),
    "gc10_det": ("GC10-DET", GC10_DET_CLASSES),
}
# Same defaults as DATASETS.SYNTHETIC.* in tkd_d2/config/keys.py.
_SYNTHETIC_DEFAULTS = {"num_train": 240, "num_test": 60, "image_size": 200, "seed": 0, "defect_size": 0}


def default_root():
    """``$DETECTRON2_DATASETS`` or ``datasets`` (relative to the working directory)."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def _load_builtin_voc(name, dataset_dir, split, class_names, bad_box_policy):
    if not os.path.isdir(dataset_dir):
        raise DatasetFormatError(
            f"dataset {name!r}: folder {os.path.abspath(dataset_dir)} does not exist. Put "
            f"{os.path.basename(dataset_dir)}/ (IMAGES/, ANNOTATIONS/, ImageSets/{split}.txt) "
            "under $DETECTRON2_DATASETS (default ./datasets) or set DETECTRON2_DATASETS to the "
            "folder that holds it."
        )
    return load_voc_instances(
        os.path.join(dataset_dir, "IMAGES"),
        os.path.join(dataset_dir, "ANNOTATIONS"),
        class_names,
        split_file=os.path.join(dataset_dir, "ImageSets", split + ".txt"),
        bad_box_policy=bad_box_policy,
        dataset_name=name,
    )


def register_all(
    root=None,
    bad_box_policy="drop",
    synthetic_num_train=_SYNTHETIC_DEFAULTS["num_train"],
    synthetic_num_test=_SYNTHETIC_DEFAULTS["num_test"],
    synthetic_image_size=_SYNTHETIC_DEFAULTS["image_size"],
    synthetic_seed=_SYNTHETIC_DEFAULTS["seed"],
    synthetic_defect_size=_SYNTHETIC_DEFAULTS["defect_size"],
):
    """(Re-)register the builtin datasets under ``root`` (default :func:`default_root`)."""
    root = default_root() if root is None else os.path.expanduser(root)
    check_bad_box_policy(bad_box_policy)
    for prefix, (folder, class_names) in _BUILTIN_VOC.items():
        dataset_dir = os.path.join(root, folder)
        for split in ("train", "test"):
            name = f"{prefix}_{split}"
            replace_registration(
                name,
                # default arguments bind this iteration's values
                lambda n=name, d=dataset_dir, s=split, c=class_names: _load_builtin_voc(
                    n, d, s, c, bad_box_policy
                ),
                thing_classes=list(class_names),
                evaluator_type="coco",
                dirname=dataset_dir,
                split=split,
            )
    for split, num_images in (("train", synthetic_num_train), ("test", synthetic_num_test)):
        register_synthetic_defects(
            f"synthetic_defects_{split}",
            root,
            split,
            num_images,
            image_size=synthetic_image_size,
            seed=synthetic_seed,
            defect_size=synthetic_defect_size,
        )


def _split_entry(entry):
    """Split on ':' but keep Windows drive letters ("C:\\data") inside their path."""
    parts = []
    for part in entry.split(":"):
        if parts and len(parts[-1]) == 1 and parts[-1].isalpha() and part[:1] in ("\\", "/"):
            parts[-1] += ":" + part
        else:
            parts.append(part)
    return parts


_ENTRY_FORMATS = (
    "'name:coco:images_dir:annotations.json' or "
    "'name:voc:images_dir:annotations_dir[:split_file]'"
)


def parse_custom_entry(entry):
    """One DATASETS.CUSTOM.ENTRIES item → dict(name, format, images_dir, annotations,
    split_file)."""
    parts = [p.strip() for p in _split_entry(str(entry))]
    fmt = parts[1].lower() if len(parts) > 1 else ""
    expected = {"coco": (4,), "voc": (4, 5)}.get(fmt)
    problem = None
    if expected is None:
        problem = f"format {parts[1]!r} is not 'coco' or 'voc'" if len(parts) > 1 else "no format"
    elif len(parts) not in expected:
        counts = " or ".join(map(str, expected))
        problem = f"{len(parts)} ':'-separated fields, a {fmt} entry has {counts}"
    elif not all(parts):
        problem = "an empty field"
    if problem:
        raise DatasetFormatError(
            f"DATASETS.CUSTOM.ENTRIES item {entry!r}: {problem}. Write it as {_ENTRY_FORMATS}."
        )
    return {
        "name": parts[0],
        "format": fmt,
        "images_dir": parts[2],
        "annotations": parts[3],
        "split_file": parts[4] if len(parts) == 5 else None,
    }


def absolute_custom_entry(entry, base=None):
    """The same DATASETS.CUSTOM.ENTRIES item with its paths made absolute against ``base``
    (default: the working folder), so it means the same from any folder a training runs in."""
    parsed = parse_custom_entry(entry)
    paths = [parsed["images_dir"], parsed["annotations"]] + ([parsed["split_file"]] if parsed["split_file"] else [])
    base = os.path.abspath(base or os.getcwd())
    return ":".join([parsed["name"], parsed["format"]] + [os.path.join(base, os.path.expanduser(p)) for p in paths])


def register_from_cfg(cfg, root=None):
    """Register the datasets a config describes; returns the custom dataset names.

    Re-registers the builtin datasets with DATASETS.BAD_BOX_POLICY and the
    ``synthetic_defects_*`` datasets with DATASETS.SYNTHETIC.*, then registers every
    DATASETS.CUSTOM.ENTRIES item (VOC classes from DATASETS.CUSTOM.CLASSES).
    """
    policy = check_bad_box_policy(cfg.DATASETS.BAD_BOX_POLICY)
    synthetic = cfg.DATASETS.SYNTHETIC
    register_all(
        root,
        bad_box_policy=policy,
        synthetic_num_train=synthetic.NUM_TRAIN,
        synthetic_num_test=synthetic.NUM_TEST,
        synthetic_image_size=synthetic.IMAGE_SIZE,
        synthetic_seed=synthetic.SEED,
        synthetic_defect_size=synthetic.DEFECT_SIZE,
    )
    classes = list(cfg.DATASETS.CUSTOM.CLASSES)
    entries = [parse_custom_entry(entry) for entry in cfg.DATASETS.CUSTOM.ENTRIES]
    names = [e["name"] for e in entries]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DatasetFormatError(
            f"DATASETS.CUSTOM.ENTRIES names {duplicated} more than once; give each entry its "
            "own name."
        )
    for entry in entries:
        if entry["format"] == "coco":
            register_coco(entry["name"], entry["annotations"], entry["images_dir"], policy)
            continue
        if not classes:
            raise DatasetFormatError(
                f"DATASETS.CUSTOM.ENTRIES item {entry['name']!r} is a VOC dataset but "
                "DATASETS.CUSTOM.CLASSES is empty; list the class names (the <name> values of "
                "the XML objects) in category order."
            )
        register_voc(
            entry["name"],
            entry["images_dir"],
            entry["annotations"],
            classes,
            split_file=entry["split_file"],
            bad_box_policy=policy,
        )
    return names


def train_thing_classes(cfg):
    """Class names of ``cfg``'s first training set (what a checkpoint's outputs mean), or None."""
    if not cfg.DATASETS.TRAIN or cfg.DATASETS.TRAIN[0] not in DatasetCatalog.list():
        return None
    return list(MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("thing_classes", None) or []) or None


def assert_datasets_registered(names):
    """Raise :class:`DatasetNotRegisteredError` for the first of ``names`` not registered."""
    if isinstance(names, str):
        names = [names]
    registered = set(DatasetCatalog.list())
    missing = [n for n in names if n and n not in registered]
    if not missing:
        return
    ours = [n for n in REGISTERED_BY_TKD if n in registered]
    others = sorted(registered - set(ours))
    raise DatasetNotRegisteredError(
        f"dataset(s) {missing} not registered. Registered by tkd_d2: {ours}; "
        f"{len(others)} more from detectron2 (e.g. {others[:4]}). To add a dataset, list it in "
        f"DATASETS.CUSTOM.ENTRIES as {_ENTRY_FORMATS} (VOC classes in DATASETS.CUSTOM.CLASSES), "
        "or call tkd_d2.data.register_voc / register_coco before building the trainer."
    )

"""Datasets: VOC XML / COCO json registration, synthetic defects, the builtin datasets.

Importing this package registers the builtin datasets (lazily) under
``$DETECTRON2_DATASETS`` (default ``./datasets``); :func:`register_from_cfg` re-registers
them with a config's options and adds its DATASETS.CUSTOM.ENTRIES.
"""
from .builtin import (
    GC10_DET_CLASSES,
    NEU_DET_CLASSES,
    assert_datasets_registered,
    default_root,
    parse_custom_entry,
    absolute_custom_entry,
    register_all,
    register_from_cfg,
    train_thing_classes,
)
from .checks import check_image, check_images, find_unreadable_images
from .inspection import derive_settings, format_inspection, inspect_dataset, settings_overrides
from .coco import coco_category_names, load_coco_instances, register_coco
from ..errors import DatasetFormatError, DatasetNotRegisteredError, ImageReadError
from .mapper import TKDDatasetMapper
from .synthetic import (
    SYNTHETIC_CLASSES,
    generate_synthetic_defects,
    register_synthetic_defects,
    synthetic_cache_dir,
    synthetic_dataset_cached,
)
from .voc import load_voc_instances, register_voc, write_voc_annotation

__all__ = [
    "GC10_DET_CLASSES",
    "NEU_DET_CLASSES",
    "SYNTHETIC_CLASSES",
    "DatasetFormatError",
    "DatasetNotRegisteredError",
    "ImageReadError",
    "TKDDatasetMapper",
    "assert_datasets_registered",
    "check_image",
    "derive_settings",
    "format_inspection",
    "inspect_dataset",
    "settings_overrides",
    "check_images",
    "find_unreadable_images",
    "coco_category_names",
    "default_root",
    "generate_synthetic_defects",
    "load_coco_instances",
    "load_voc_instances",
    "parse_custom_entry",
    "absolute_custom_entry",
    "register_all",
    "register_coco",
    "register_from_cfg",
    "register_synthetic_defects",
    "register_voc",
    "synthetic_cache_dir",
    "synthetic_dataset_cached",
    "train_thing_classes",
    "write_voc_annotation",
]

register_all()

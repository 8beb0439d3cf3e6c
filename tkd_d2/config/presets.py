"""MODEL.TKD.PRESET: "tuned" (the keys' defaults and the yaml files) or "reference" (the official
TKD code's choices), applied under the keys a user set after naming the preset."""
from ..errors import ConfigError
from .files import yaml_files, yaml_keys
from .keys import TKD_PRESETS, is_distiller_config

__all__ = ["preset_values", "apply_preset"]

# The official TKD code's choices for each student family (meta-architecture). Keys the
# reference does not have keep their defaults (they are listed where the default is its
# choice, so that "reference" stays the reference when a default changes).
_REFERENCE_COMMON = {
    "MODEL.TKD.WARMUP_ITERS": 0,
    "MODEL.TKD.FEATURE_WEIGHT": 1.0,
    "MODEL.TKD.DED.FG_WEIGHT": 5e-4,
    "MODEL.TKD.DED.BG_WEIGHT": 5e-4,
    "MODEL.TKD.DED.SSIM_WEIGHT": 5e-4,
    "MODEL.TKD.DED.TEMPERATURE": 0.5,
    "MODEL.TKD.DED.SSIM_WINDOW": 11,
    "MODEL.TKD.DED.SSIM_SIGMA": 1.5,
    "MODEL.TKD.DRD.INSTANCE_WEIGHT": 5e-4,
    "MODEL.TKD.DRD.PIXEL_WEIGHT": 5e-4,
    "MODEL.TKD.DRD.ROI_SIZE": 6,
    "MODEL.TKD.DRD.GRAPH_MODE": "per_step",
    "MODEL.TKD.DRD.INSTANCE_FORM": "reference",
    "MODEL.TKD.DRD.PIXEL_NUM_STATE": 0,
    "MODEL.TKD.DRD.PIXEL_NUM_NODE": 0,
    "MODEL.TKD.DRD.INSTANCE_NUM_STATE": 0,
    "MODEL.TKD.DRD.INSTANCE_NUM_NODE": 0,
    "MODEL.TKD.CRD.REUSED_HEAD_INDEX": -1,
    "MODEL.TKD.CRD.BETA": 1.0,
    "MODEL.TKD.CRD.CENTERNESS_WEIGHT": 0.0,
    "MODEL.TKD.CRD.NORMALIZER": "reference",
    "MODEL.TKD.CRD.IGNORED_ANCHORS": "exclude",
    "MODEL.TKD.CRD.TRUST": "always",
    "MODEL.TKD.BALANCE.ENABLED": False,
    "MODEL.TKD.CALIBRATE_FRACTION": 0.0,
}
_REFERENCE_CRD = {
    # the reference's RetinaNet: CIoU for R-101 -> R-50, GIoU for R-50 -> R-18 (see preset_values)
    "RetinaNet": {"MODEL.TKD.CRD.CLS_WEIGHT": 1.0, "MODEL.TKD.CRD.BOX_WEIGHT": 1.0},
    "FCOSDetector": {"MODEL.TKD.CRD.CLS_WEIGHT": 0.4, "MODEL.TKD.CRD.BOX_WEIGHT": 0.75,
                     "MODEL.TKD.CRD.BOX_LOSS": "log_iou"},
}


def _student_arch(cfg):
    if is_distiller_config(cfg):
        return cfg.MODEL.TKD.STUDENT_META_ARCHITECTURE
    return cfg.MODEL.META_ARCHITECTURE


def preset_values(cfg, name=None):
    """``{dotted key: value}`` that preset ``name`` (default: the config's MODEL.TKD.PRESET)
    sets on ``cfg``. "tuned" sets nothing: its values are the keys' defaults and the yaml
    files'. "reference" sets the official TKD code's choices; its RetinaNet CRD box loss is
    CIoU for a ResNet-50-or-deeper student (the reference's R-101 -> R-50) and GIoU for
    any other (its R-50 -> R-18).
    """
    name = cfg.MODEL.TKD.PRESET if name is None else name
    if name not in TKD_PRESETS:
        raise ConfigError(f"MODEL.TKD.PRESET={name!r} is not a preset; choose one of {list(TKD_PRESETS)}")
    if name == "tuned":
        return {}
    arch = _student_arch(cfg)
    if arch not in _REFERENCE_CRD:
        raise ConfigError(
            f"MODEL.TKD.PRESET={name!r}: no reference values for the student {arch!r}; the preset "
            f"knows {sorted(_REFERENCE_CRD)}"
        )
    values = dict(_REFERENCE_COMMON)
    values.update(_REFERENCE_CRD[arch])
    if arch == "RetinaNet":
        deep_resnet = "resnet" in cfg.MODEL.BACKBONE.NAME.lower() and cfg.MODEL.RESNETS.DEPTH >= 50
        values["MODEL.TKD.CRD.BOX_LOSS"] = "ciou" if deep_resnet else "giou"
    return values


def apply_preset(cfg, config_file, opts):
    """Set the preset's keys except those the user set after naming it (see MODEL.TKD.PRESET)."""
    values = preset_values(cfg)
    if not values:
        return
    kept = set(opts[::2])
    if "MODEL.TKD.PRESET" not in kept:
        for path, raw in reversed(yaml_files(config_file)):  # the last file merged back to the one naming it
            keys = yaml_keys({k: v for k, v in raw.items() if k != "_BASE_"})
            kept |= keys
            if "MODEL.TKD.PRESET" in keys:
                break
    for key, value in values.items():
        if key in kept:
            continue
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = value

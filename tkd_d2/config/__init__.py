"""The project's configs: every key it adds (with its meaning; defaults follow the TKD paper),
and the one way to load a config file.

* :func:`add_tkd_config`: the project's keys on a detectron2 ``get_cfg()`` node.
* :func:`load_config`: yaml + ``KEY VALUE`` overrides → a checked, frozen config, its datasets
  registered, relative teacher paths resolved (see :func:`resolve_config_reference`). A yaml's
  ``_BASE_`` is a path or a list of paths (relative to it), merged in order, a later one winning.
* :func:`student_cfg`: a TKD distiller config → the plain student config it trains.
* :func:`schedule_overrides`: overrides that train a config for N iterations, schedule scaled.
* :func:`apply_epoch_schedule`: SOLVER.EPOCHS → MAX_ITER for the training set's size.
"""
import difflib
import logging
import os

import yaml

from detectron2.config import get_cfg

from ..data import assert_datasets_registered, register_from_cfg
from ..errors import ConfigError
from .files import yaml_keys, yaml_setting
from .keys import DEFAULT_TKD_PARTS, DISTILLER, TKD_PARTS, TKD_PRESETS, add_tkd_config, is_distiller_config, student_cfg
from .presets import apply_preset, preset_values
from .schedule import apply_epoch_schedule, epoch_iterations, scale_schedule, schedule_of, schedule_overrides

__all__ = [
    "add_tkd_config",
    "load_config",
    "student_cfg",
    "resolve_config_reference",
    "schedule_overrides",
    "epoch_iterations",
    "apply_epoch_schedule",
    "PACKAGE_DIR",
    "PACKAGE_CONFIGS",
    "TKD_PARTS",
    "DEFAULT_TKD_PARTS",
    "TKD_PRESETS",
    "preset_values",
    "is_distiller_config",
    "DISTILLER",
]

logger = logging.getLogger(__name__)

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The project's configs/, shipped with the package (a link in the source tree, package data
# in an installed copy; see setup.py).
PACKAGE_CONFIGS = os.path.join(PACKAGE_DIR, "configs")


def _explain_key_error(cfg, err, source):
    text = str(err.args[0]) if err.args else str(err)
    key = text.split(":", 1)[-1].strip() if "Non-existent" in text else text
    hint = difflib.get_close_matches(key, sorted(yaml_keys(cfg)), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(hint)}?" if hint else ""
    return ConfigError(
        f"Config key {key} (from {source}) does not exist.{hint} The project's keys are listed, "
        "with comments, in tkd_d2/config/keys.py; detectron2's in detectron2/config/defaults.py."
    )


def _ints_as_floats(cfg, opts):
    """``KEY 0`` for a float key means 0.0: yacs would refuse the int, so it is written as a float."""
    opts = list(opts)
    for i in range(0, len(opts) - 1, 2):
        *parents, leaf = str(opts[i]).split(".")
        node = cfg
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        default = node.get(leaf) if isinstance(node, dict) else None
        value = opts[i + 1]
        if isinstance(default, float) and isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            opts[i + 1] = str(float(value))
        elif isinstance(default, float) and type(value) is int:
            opts[i + 1] = float(value)
    return opts


def _merge_opts(cfg, opts):
    try:
        cfg.merge_from_list(_ints_as_floats(cfg, opts))
    except KeyError as e:
        raise _explain_key_error(cfg, e, "the command line") from None
    except AssertionError as e:
        if "Non-existent" in str(e):
            raise _explain_key_error(cfg, e, "the command line") from None
        raise ConfigError(f"Command-line overrides must be KEY VALUE pairs: {e}") from None
    except ValueError as e:
        raise ConfigError(f"Command-line overrides {list(opts)}: {e}") from None


def resolve_config_reference(value, naming_file=None):
    """An absolute path for a config file that a config names (e.g. the teacher's).

    A relative ``value`` is looked up next to ``naming_file`` (the yaml that names it; None for
    a command-line override: the working directory), then in the package's configs
    (:data:`PACKAGE_CONFIGS`, with or without a leading ``configs/``). If none exists, the
    first candidate is returned so that the error names it.
    """
    if not value or os.path.isabs(value):
        return value
    first = os.path.dirname(os.path.abspath(naming_file)) if naming_file else os.getcwd()
    candidates = [os.path.join(d, value) for d in (first, PACKAGE_CONFIGS, PACKAGE_DIR)]
    return os.path.abspath(next((c for c in candidates if os.path.isfile(c)), candidates[0]))


def load_config(config_file, opts=(), *, device=None, student=False, register_datasets=True,
                freeze=True):
    """The project config of ``config_file`` with ``KEY VALUE`` ``opts`` applied.

    ``MODEL.TKD.TEACHER.CONFIG`` becomes an absolute path (:func:`resolve_config_reference`),
    so a dumped ``config.yaml`` names the same teacher from anywhere. ``device`` sets
    MODEL.DEVICE (default: as configured, the CPU when no GPU is present). ``student``: a
    TKD config becomes its plain student config. ``register_datasets``: register the
    datasets the config describes and check that its DATASETS.TRAIN / TEST exist.
    Raises :class:`~tkd_d2.errors.ConfigError` naming the file or key at fault.
    """
    import torch

    config_file = os.fspath(config_file)
    if not os.path.isfile(config_file):
        raise ConfigError(f"config file not found: {config_file}")
    cfg = get_cfg()
    add_tkd_config(cfg)
    try:
        cfg.merge_from_file(config_file)
    except KeyError as e:
        raise _explain_key_error(cfg, e, config_file) from None
    except (yaml.YAMLError, AssertionError, ValueError, TypeError) as e:
        raise ConfigError(f"config {config_file}: {type(e).__name__}: {e}") from None
    opts = [str(o) for o in opts]
    base_schedule = schedule_of(cfg)
    _merge_opts(cfg, opts)
    apply_preset(cfg, config_file, opts)
    scale_schedule(cfg, base_schedule, given=set(opts[::2]))
    teacher = cfg.MODEL.TKD.TEACHER.CONFIG
    if teacher:
        from_command_line = "MODEL.TKD.TEACHER.CONFIG" in opts[::2]
        naming = None if from_command_line else yaml_setting(config_file, ("MODEL", "TKD", "TEACHER", "CONFIG"))
        cfg.MODEL.TKD.TEACHER.CONFIG = resolve_config_reference(teacher, naming)
    unknown = [p for p in cfg.MODEL.TKD.PARTS if p not in TKD_PARTS]
    if unknown:
        raise ConfigError(f"MODEL.TKD.PARTS: {unknown} not among {list(TKD_PARTS)}")
    if device:
        cfg.MODEL.DEVICE = device
    elif cfg.MODEL.DEVICE != "cpu" and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    if student:
        cfg = student_cfg(cfg)
    if register_datasets:
        register_from_cfg(cfg)
        assert_datasets_registered(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    if freeze:
        cfg.freeze()
    return cfg

"""tkd_d2: Triple Knowledge Distillation (TKD) for industrial defect detection on detectron2.

Importing the package adapts detectron2 to the environment (:mod:`tkd_d2.compat`), then
registers the project's meta-architectures, backbones and datasets.

The entry layer, which tools, tests, benchmarks and the trainer all go through:
:func:`load_config` / :func:`student_cfg` (:mod:`tkd_d2.config`), :func:`load_weights`
(:mod:`tkd_d2.checkpoint`), :class:`TKDError` (:mod:`tkd_d2.errors`), and
:class:`tkd_d2.engine.Predictor`.
"""
from . import compat

compat.apply()

from .errors import TKDError  # noqa: E402
from . import data  # noqa: E402,F401  (registers datasets)
from .config import add_tkd_config, load_config, student_cfg  # noqa: E402
from .checkpoint import load_weights  # noqa: E402
from . import modeling  # noqa: E402,F401  (registers FCOS, backbones, TKDDistiller)

__all__ = ["add_tkd_config", "load_config", "student_cfg", "load_weights", "TKDError", "compat"]
__version__ = "0.1.0"

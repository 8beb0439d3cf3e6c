"""tkd_d2: Triple Knowledge Distillation (TKD) for industrial defect detection on detectron2.

Importing the package adapts detectron2 to the environment (:mod:`tkd_d2.compat`), then
registers the project's meta-architectures, backbones and datasets.
"""
from . import compat

compat.apply()

from .config import add_tkd_config  # noqa: E402
from . import data  # noqa: E402,F401  (registers datasets)
from . import modeling  # noqa: E402,F401  (registers FCOS, backbones, TKDDistiller)

__all__ = ["add_tkd_config", "compat"]
__version__ = "0.1.0"

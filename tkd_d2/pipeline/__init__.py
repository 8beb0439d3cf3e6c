"""The main job as a library: teacher, baseline, TKD student, evaluation, pictures, speed, report.

    from tkd_d2.pipeline import run_pipeline
    report = run_pipeline(tiny=True, output="/tmp/try")   # from the project root

* :mod:`.stages`: :class:`Pipeline` (the stages) and :class:`PipelineOptions` (its settings);
  ``tools/tkd_pipeline.py`` is its command line.
* :mod:`.runner`: the generic stage machinery (:class:`StageRunner`, the ``stages.json``
  :class:`Status`, :class:`StageError`, :class:`SettingsChanged`).

The top layer of the package: nothing else in tkd_d2 imports it.
"""
from .runner import SettingsChanged, Stage, StageError, StageRunner, Status
from .stages import (
    DETECTORS,
    DATASET_CONFIG_DIRS,
    MODELS,
    REDO_CHOICES,
    STAGES,
    TINY_MAX_ITER,
    Pipeline,
    PipelineOptions,
    expand_redo,
    run_pipeline,
)

__all__ = [
    "DATASET_CONFIG_DIRS",
    "DETECTORS",
    "MODELS",
    "REDO_CHOICES",
    "STAGES",
    "TINY_MAX_ITER",
    "Pipeline",
    "PipelineOptions",
    "SettingsChanged",
    "Stage",
    "StageError",
    "StageRunner",
    "Status",
    "expand_redo",
    "run_pipeline",
]

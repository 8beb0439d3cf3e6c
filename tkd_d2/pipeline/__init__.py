"""The main job as a library: teacher, baseline, TKD student, evaluation, pictures, speed, report.

    from tkd_d2.pipeline import run_pipeline
    report = run_pipeline(tiny=True, output="/tmp/try")   # from the project root

* :mod:`.stages`: :class:`Pipeline` (the stages) and :class:`PipelineOptions` (its settings);
  ``tools/tkd_pipeline.py`` is its command line.
* :mod:`.runner`: the generic stage machinery (:class:`StageRunner`, the ``stages.json``
  :class:`Status`, :class:`StageError`, :class:`SettingsChanged`).

The top layer of the package: nothing else in tkd_d2 imports it.
"""
from . import runner, stages
from .runner import *  # noqa: F401,F403  (the names in runner.__all__)
from .stages import *  # noqa: F401,F403  (the names in stages.__all__)

__all__ = runner.__all__ + stages.__all__

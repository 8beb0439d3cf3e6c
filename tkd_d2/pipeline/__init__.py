"""The main job as a library: teacher, baseline, TKD student, evaluation, pictures, speed, report.

    from tkd_d2.pipeline import run_pipeline
    report = run_pipeline(tiny=True, output="/tmp/try")   # from the project root

The stage model, from the bottom up:

* :mod:`.runner`: :class:`Stage` (what a stage is), :class:`Job` (one run of it: settings,
  outputs, inputs, how it runs), :class:`StageRunner` (the one reuse rule, ``stages.json``,
  logs, :class:`StageError`, :class:`SettingsChanged`);
* :mod:`.stages`: the main job's stage table; the ``--redo`` choices, the report's wall-time
  rows and its command list are read from it;
* :mod:`.options`: :class:`PipelineOptions` (``tools/tkd_pipeline.py``'s options), the
  ``--tiny`` scale; :mod:`.plan`: the configs and overrides they resolve to;
* :mod:`.training` (data, train, evaluate: also ``benchmarks/bench_accuracy.py``'s runs),
  :mod:`.pictures`, :mod:`.speed` (speed, export, the timing helper), :mod:`.report`
  (the typed :class:`Report` and its Markdown);
* :mod:`.budget` (the plan's arithmetic: each stage's planned time, ``--budget``'s schedule)
  and :mod:`.probe` (the timing probe it reads);
* :mod:`.pipeline`: :class:`Pipeline`, which runs them in order.

The top layer of the package: nothing else in tkd_d2 imports it.
"""
from . import budget, options, pipeline, plan, runner, stages
from .budget import *  # noqa: F401,F403
from .options import *  # noqa: F401,F403
from .pipeline import *  # noqa: F401,F403
from .plan import *  # noqa: F401,F403
from .runner import *  # noqa: F401,F403
from .stages import *  # noqa: F401,F403

__all__ = budget.__all__ + runner.__all__ + stages.__all__ + options.__all__ + plan.__all__ + pipeline.__all__

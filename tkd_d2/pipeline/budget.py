"""Time before training: what each stage of the main job will take on this machine, and the
schedule that fits ``--budget``.

Pure arithmetic on :class:`Timings` (what :mod:`.probe` measured, or a fake in the tests):

* :func:`stage_seconds`: every stage's planned wall time for given iterations;
* :func:`fit_budget`: the iterations that fit a budget. The rule: both students train the
  same number of epochs (baseline and TKD compare at one schedule) and the teacher
  ``teacher_epochs`` times as many, the most that fit after the evaluations, pictures, speed
  and export are paid for, and never more than the schedule the run would have had without a
  budget (time a capped model cannot use goes to the others). The teacher gets at least the
  students' epochs: a teacher trained less than its student is not worth distilling, and a
  larger network needs more epochs to pass the smaller one. Each model is charged its own
  measured step; per epoch the TKD step costs the most.
"""
import dataclasses
import math
import re
from typing import Dict

from ..errors import ConfigError
from .report import fmt_seconds

__all__ = ["Timings", "BudgetFit", "fit_budget", "format_plan", "parse_duration", "refit_students",
           "stage_seconds", "TRAININGS"]

TRAININGS = ("teacher", "baseline", "tkd")
# the inference each evaluation runs: the TKD student is the student network
_INFER_OF = {"eval_teacher": "teacher", "eval_baseline": "student", "eval_tkd": "student"}
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text, flag="--budget"):
    """Seconds in ``text``: ``90s``, ``45m``, ``2h``, ``1h30m`` (also ``1.5h``, ``1h 30m``);
    raises :class:`ConfigError` naming ``flag`` for anything else or a non-positive value."""
    s = str(text).strip().lower().replace(" ", "")
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", s)
    if not s or "".join(n + u for n, u in parts) != s or len({u for _, u in parts}) != len(parts):
        raise ConfigError(f"{flag} {text!r}: give a duration such as 90s, 45m, 2h or 1h30m")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"{flag} {text!r}: the duration must be positive")
    return seconds


@dataclasses.dataclass
class Timings:
    """What one training or evaluation costs on this machine (seconds)."""

    # model trained here (teacher, baseline, tkd; a given --teacher is not) → seconds per iteration
    step: Dict[str, float]
    infer: Dict[str, float]  # "teacher" / "student" → seconds per test image at batch 1
    start: float  # one training / evaluation process: start-up, model build, first batch
    build: float  # one model built and loaded inside the pipeline's process
    probe_seconds: float = 0.0  # what measuring all this cost

    @classmethod
    def from_dict(cls, data):
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})

    @property
    def trained(self):
        """The models this run trains (those whose step was timed), in TRAININGS order."""
        return tuple(m for m in TRAININGS if m in self.step)


def stage_seconds(timings, iterations, test_images, pictures, speed_iters):
    """{stage: planned seconds} of every stage after the plan, for ``iterations`` (training
    model → iterations), ``test_images`` evaluated, ``pictures`` drawn and ``speed_iters``
    ((warm-up, timed) of the speed stage). A model not trained here (a given teacher) has no
    training stage."""
    t, s = timings.infer["teacher"], timings.infer["student"]
    timed = sum(speed_iters)
    plan = {m: timings.start + iterations[m] * timings.step[m] for m in timings.trained}
    plan.update({stage: timings.start + test_images * timings.infer[model]
                 for stage, model in _INFER_OF.items()})
    plan["pictures"] = 3 * timings.build + pictures * (t + 2 * s)
    plan["speed"] = 2 * timings.build + timed * (t + s)
    # export, then ONNX Runtime over the test set (about the eager student's speed) and timed
    plan["deploy"] = timings.start + (test_images + timed) * s
    plan["report"] = timings.build
    return plan


@dataclasses.dataclass
class BudgetFit:
    iterations: Dict[str, int]  # training model → iterations
    epochs: float  # of each student (the teacher: teacher_epochs times as many, unless capped)
    note: str  # what the budget chose and what it gave up, in a sentence


def fit_budget(budget, timings, *, default_iterations, batch, train_images, test_images, pictures,
               speed_iters, spent=0.0, min_iterations=100, teacher_epochs=1.0, flag="--budget"):
    """The iterations per training model that end the whole run within ``budget`` seconds
    (``spent`` of it already gone: data and plan), by the module's rule; capped at
    ``default_iterations`` (model → the schedule without a budget). ``batch``: model → images
    per iteration. Raises :class:`ConfigError` when fewer than ``min_iterations`` fit. A model
    not in ``timings.step`` (a given teacher) keeps ``default_iterations`` and costs nothing."""
    trained = timings.trained
    fixed = stage_seconds(timings, dict.fromkeys(TRAININGS, 0), test_images, pictures, speed_iters)
    left = budget - spent - sum(fixed.values())
    if teacher_epochs < 1:
        raise ConfigError(f"--teacher-epochs {teacher_epochs}: the teacher trains at least the "
                          "students' epochs (>= 1)")
    share = {"teacher": float(teacher_epochs), "baseline": 1.0, "tkd": 1.0}
    epoch_cost = {m: share[m] * timings.step[m] * train_images / batch[m] for m in trained}
    fit, free = {}, list(trained)
    while free:  # the students' epochs; a model capped at its schedule leaves its time to the rest
        epochs = max(0.0, left - sum(fit[m] * timings.step[m] for m in fit)) / sum(epoch_cost[m] for m in free)
        want = {m: int(math.floor(share[m] * epochs * train_images / batch[m])) for m in free}
        capped = [m for m in free if want[m] >= default_iterations[m]]
        if not capped:
            fit.update(want)
            break
        for m in capped:
            fit[m] = default_iterations[m]
            free.remove(m)
    smallest = min(fit.values())
    fit = {m: fit.get(m, default_iterations[m]) for m in TRAININGS}
    if smallest < min_iterations:
        least = dict.fromkeys(TRAININGS, min_iterations)
        need = spent + sum(stage_seconds(timings, least, test_images, pictures, speed_iters).values())
        raise ConfigError(
            f"{flag} {fmt_seconds(budget)} is too small: the least useful run ({min_iterations} "
            f"iteration{'s' if min_iterations != 1 else ''} per model, then evaluation, pictures "
            f"and export) takes about {fmt_seconds(need)} on this machine (measured steps: "
            + ", ".join(f"{m} {timings.step[m]:.2f} s" for m in trained) + ")")
    chosen = {m: fit[m] * batch[m] / train_images for m in TRAININGS}
    epochs = min(chosen["baseline"], chosen["tkd"])
    default_epochs = min(default_iterations[m] * batch[m] / train_images for m in trained)
    per_model = (f"{epochs:.3g} epochs per model" if "teacher" not in trained or chosen["teacher"] <= epochs * 1.01
                 else f"{epochs:.3g} epochs per student, {chosen['teacher']:.3g} for the teacher")
    shown, shown_default = ({m: d[m] for m in trained} for d in (fit, default_iterations))
    if all(fit[m] == default_iterations[m] for m in trained):
        note = (f"the full schedule ({_iters(shown)}, {default_epochs:.3g} epochs) fits {flag} "
                f"{fmt_seconds(budget)}")
    else:
        note = (f"{flag} {fmt_seconds(budget)}: {per_model} ({_iters(shown)}) "
                f"instead of {default_epochs:.3g} epochs ({_iters(shown_default)}); LR steps and "
                "warm-ups scaled with them")
        if epochs < 1:
            note += (". Less than one epoch fits: a smaller input (INPUT.MIN_SIZE_TRAIN) or "
                     "training on crops (INPUT.DEFECT_CROP) would see every image in the time")
    if "teacher" not in trained:
        note += " (the teacher is given: the time is the students')"
    return BudgetFit(iterations=fit, epochs=epochs, note=note)


def refit_students(budget, timings, iterations, *, elapsed, slowdown, test_images, pictures,
                   speed_iters, min_iterations=100):
    """After the teacher trained ``slowdown`` times slower than the probe said (a busier
    machine): the iterations of both students (one schedule for the two) that still end the
    run within ``budget``, ``elapsed`` seconds being gone, if the rest runs that much slower
    too. Never more than planned; never fewer than ``min_iterations`` (then the run ends late
    rather than useless)."""
    rest = stage_seconds(timings, dict.fromkeys(TRAININGS, 0), test_images, pictures, speed_iters)
    fixed = sum(v for k, v in rest.items() if k != "teacher")
    left = budget - elapsed - slowdown * fixed
    per_iteration = slowdown * (timings.step["baseline"] + timings.step["tkd"])
    fit = int(math.floor(max(0.0, left) / per_iteration))
    return max(min_iterations, min(iterations["baseline"], fit))


def _iters(iterations):
    values = sorted(set(iterations.values()))
    if len(values) == 1:
        return f"{values[0]} iterations"
    return ", ".join(f"{m} {n}" for m, n in iterations.items()) + " iterations"


def format_plan(planned, iterations, timings, labels, budget=None, note=""):
    """The plan as the console prints it before the first training: one line per stage and
    the total. ``planned``: {stage: seconds}; ``labels``: {stage: its name in the table}."""
    lines = ["  measured: " + ", ".join(f"{m} step {timings.step[m]:.2f} s" for m in timings.trained)
             + f"; inference {timings.infer['teacher']:.3f} s (teacher), "
             f"{timings.infer['student']:.3f} s (student) per image"]
    for stage, seconds in planned.items():
        extra = f" ({iterations[stage]} iterations)" if stage in iterations else ""
        lines.append(f"  {labels.get(stage, stage):<28} {fmt_seconds(seconds):>12}{extra}")
    total = sum(planned.values())
    lines.append(f"  {'total':<28} {fmt_seconds(total):>12}"
                 + (f" (budget {fmt_seconds(budget)})" if budget else ""))
    if note:
        lines.append(f"  {note}")
    return lines

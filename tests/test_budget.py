"""The plan before training and ``--budget`` (tkd_d2/pipeline/budget.py, the pipeline's plan
stage), with a fake step timer: deterministic, no training."""
import json
import math
from pathlib import Path

import pytest

from tkd_d2.errors import ConfigError
from tkd_d2.pipeline import PipelineOptions, Plan
from tkd_d2.pipeline import pipeline as pipeline_module
from tkd_d2.pipeline.budget import (TRAININGS, Timings, fit_budget, format_plan, parse_duration, refit_students,
                                    stage_seconds)
from tkd_d2.pipeline.runner import StageError

REPO = Path(__file__).resolve().parents[1]


def fake_timings(teacher=4.0, baseline=2.0, tkd=3.0):
    return Timings(step={"teacher": teacher, "baseline": baseline, "tkd": tkd},
                   infer={"teacher": 0.5, "student": 0.25}, start=10.0, build=2.0, probe_seconds=30.0)


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("45m", 2700), ("2h", 7200), ("1h30m", 5400),
                                          ("1.5h", 5400), ("1h 30m", 5400), ("2H", 7200)])
def test_durations_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "45", "abc", "1h1h", "45 minutes", "m", "-5m", "5m-"])
def test_bad_durations_are_one_line_errors_naming_the_flag(text):
    with pytest.raises(ConfigError, match=r"^--budget .*90s, 45m, 2h or 1h30m"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["0m", "0s", "0h0m"])
def test_non_positive_durations_are_refused(text):
    with pytest.raises(ConfigError, match=r"^--budget .*must be positive"):
        parse_duration(text)


def test_stage_seconds_charge_each_stage_its_measured_cost():
    t = fake_timings()
    planned = stage_seconds(t, {"teacher": 100, "baseline": 100, "tkd": 50}, test_images=40,
                            pictures=4, speed_iters=(5, 20))
    assert planned["teacher"] == 10 + 100 * 4.0
    assert planned["baseline"] == 10 + 100 * 2.0
    assert planned["tkd"] == 10 + 50 * 3.0
    assert planned["eval_teacher"] == 10 + 40 * 0.5
    assert planned["eval_baseline"] == planned["eval_tkd"] == 10 + 40 * 0.25
    assert planned["pictures"] == 3 * 2.0 + 4 * (0.5 + 2 * 0.25)
    assert planned["speed"] == 2 * 2.0 + 25 * 0.75
    assert planned["deploy"] == 10 + 65 * 0.25


def _fit(budget, t=None, **kw):
    args = dict(default_iterations=dict.fromkeys(TRAININGS, 3000), batch=dict.fromkeys(TRAININGS, 4),
                train_images=1000, test_images=500, pictures=6, speed_iters=(5, 20), spent=40.0)
    args.update(kw)
    return fit_budget(budget, t or fake_timings(), **args)


def test_budget_gives_every_model_the_same_epochs_that_fit():
    t = fake_timings()
    fit = _fit(3600, t)
    fixed = sum(stage_seconds(t, dict.fromkeys(TRAININGS, 0), 500, 6, (5, 20)).values())
    # one epoch = 250 iterations of each model: 250 * (4 + 2 + 3) s
    epochs = (3600 - 40 - fixed) / (250 * 9.0)
    assert fit.iterations == dict.fromkeys(TRAININGS, math.floor(epochs * 250))
    planned = stage_seconds(t, fit.iterations, 500, 6, (5, 20))
    assert 40 + sum(planned.values()) <= 3600 < 40 + sum(planned.values()) + 9.0  # one step short
    assert "--budget 1 h 00 min" in fit.note and "instead of 12 epochs (3000 iterations)" in fit.note
    assert "Less than one epoch" not in fit.note


def test_a_given_teacher_costs_nothing_and_its_time_goes_to_the_students():
    t = fake_timings()
    del t.step["teacher"]  # --teacher: not trained, so not timed
    assert t.trained == ("baseline", "tkd")
    planned = stage_seconds(t, dict.fromkeys(TRAININGS, 100), 500, 6, (5, 20))
    assert "teacher" not in planned and planned["eval_teacher"] == 10 + 500 * 0.5
    fit = _fit(3600, t)
    fixed = sum(stage_seconds(t, dict.fromkeys(TRAININGS, 0), 500, 6, (5, 20)).values())
    students = math.floor((3600 - 40 - fixed) / (250 * 5.0) * 250)
    assert fit.iterations == {"teacher": 3000, "baseline": students, "tkd": students}
    assert students > _fit(3600).iterations["baseline"]
    assert "the teacher is given" in fit.note and f"({students} iterations)" in fit.note
    lines = format_plan(planned, fit.iterations, t, {})
    assert "teacher step" not in lines[0] and "baseline step 2.00 s" in lines[0]
    with pytest.raises(ConfigError, match="measured steps: baseline 2.00 s, tkd 3.00 s\\)"):
        _fit(300, t)


def test_budget_splits_by_epochs_when_batches_differ():
    fit = _fit(3600, batch={"teacher": 8, "baseline": 4, "tkd": 4})
    assert fit.iterations["baseline"] == fit.iterations["tkd"]
    assert abs(fit.iterations["teacher"] * 8 - fit.iterations["baseline"] * 4) <= 8


def test_budget_gives_the_teacher_its_share_of_epochs_and_the_students_one_schedule():
    t = fake_timings()
    fit = _fit(3600, t, teacher_epochs=2.0)
    fixed = sum(stage_seconds(t, dict.fromkeys(TRAININGS, 0), 500, 6, (5, 20)).values())
    # one student epoch = 250 iterations of each model, the teacher twice: 250 * (2 * 4 + 2 + 3) s
    epochs = (3600 - 40 - fixed) / (250 * 13.0)
    assert fit.iterations == {"teacher": math.floor(2 * epochs * 250), "baseline": math.floor(epochs * 250),
                              "tkd": math.floor(epochs * 250)}
    assert fit.epochs == fit.iterations["baseline"] / 250
    planned = stage_seconds(t, fit.iterations, 500, 6, (5, 20))
    assert 40 + sum(planned.values()) <= 3600
    assert f"{fit.epochs:.3g} epochs per student, {fit.iterations['teacher'] * 4 / 1000:.3g} for the teacher" in fit.note
    with pytest.raises(ConfigError, match="teacher-epochs 0.5"):
        _fit(3600, t, teacher_epochs=0.5)


def test_time_a_capped_teacher_cannot_use_goes_to_the_students():
    t = fake_timings()
    fit = _fit(3600, t, teacher_epochs=4.0, default_iterations={"teacher": 300, "baseline": 3000, "tkd": 3000})
    fixed = sum(stage_seconds(t, dict.fromkeys(TRAININGS, 0), 500, 6, (5, 20)).values())
    assert fit.iterations["teacher"] == 300
    students = math.floor((3600 - 40 - fixed - 300 * 4.0) / (2.0 + 3.0))
    assert fit.iterations["baseline"] == fit.iterations["tkd"] == students


def test_budget_never_trains_longer_than_the_schedule_without_it():
    fit = _fit(10 * 24 * 3600)
    assert fit.iterations == dict.fromkeys(TRAININGS, 3000)
    assert fit.note.startswith("the full schedule (3000 iterations, 12 epochs) fits")


def test_budget_below_one_epoch_says_what_it_gave_up():
    fit = _fit(2400)
    assert 100 <= fit.iterations["teacher"] < 250
    assert "Less than one epoch fits" in fit.note and "INPUT.DEFECT_CROP" in fit.note


def test_too_small_budget_is_one_line_naming_the_minimum_measured():
    t = fake_timings()
    with pytest.raises(ConfigError) as e:
        _fit(600, t)
    message = str(e.value)
    assert "\n" not in message and message.startswith("--budget 10 min 00 s is too small")
    least = 40 + sum(stage_seconds(t, dict.fromkeys(TRAININGS, 100), 500, 6, (5, 20)).values())
    minutes, seconds = divmod(int(round(least)), 60)
    assert f"takes about {minutes} min {seconds:02d} s" in message
    assert "teacher 4.00 s" in message


def test_students_refit_to_the_budget_when_the_teacher_ran_slower():
    t = fake_timings()
    planned = dict.fromkeys(TRAININGS, 300)
    kw = dict(test_images=500, pictures=6, speed_iters=(5, 20))
    fixed = sum(v for k, v in stage_seconds(t, dict.fromkeys(TRAININGS, 0), **kw).items() if k != "teacher")
    elapsed = 40 + 2 * (10 + 300 * 4.0)  # the teacher took twice its plan
    n = refit_students(6000, t, planned, elapsed=elapsed, slowdown=2.0, **kw)
    assert n == math.floor((6000 - elapsed - 2 * fixed) / (2 * (2.0 + 3.0)))
    assert n < 300
    # no slower than planned: the plan stands (never more); far slower: the least useful run
    assert refit_students(10 ** 6, t, planned, elapsed=elapsed, slowdown=1.0, **kw) == 300
    assert refit_students(6000, t, planned, elapsed=elapsed, slowdown=50.0, **kw) == 100


def test_plan_lines_list_every_stage_and_the_total():
    t = fake_timings()
    planned = stage_seconds(t, dict.fromkeys(TRAININGS, 10), 8, 2, (1, 2))
    lines = format_plan(planned, dict.fromkeys(TRAININGS, 10), t, {"teacher": "2 train teacher"},
                        budget=600, note="a note")
    assert any(l.strip().startswith("2 train teacher") and "(10 iterations)" in l for l in lines)
    assert "(budget 10 min 00 s)" in lines[-2] and lines[-1].strip() == "a note"
    assert "teacher step 4.00 s" in lines[0]


def test_budget_iterations_scale_lr_steps_and_warmups():
    plan = Plan(PipelineOptions(tiny=True, output="/tmp/unused_budget_plan"), REPO)
    before = plan.trained_configs()["tkd"]
    base = Plan(PipelineOptions(output="/tmp/unused_budget_plan"), REPO).trained_configs()["tkd"]
    plan.set_budget_iterations(dict.fromkeys(TRAININGS, base.SOLVER.MAX_ITER // 2))
    after = plan.trained_configs()["tkd"]
    assert before.SOLVER.MAX_ITER != after.SOLVER.MAX_ITER == base.SOLVER.MAX_ITER // 2
    assert list(after.SOLVER.STEPS) == [round(s / 2) for s in base.SOLVER.STEPS]
    assert after.SOLVER.WARMUP_ITERS == round(base.SOLVER.WARMUP_ITERS / 2)
    assert after.MODEL.TKD.WARMUP_ITERS == round(base.MODEL.TKD.WARMUP_ITERS / 2)


# ------------------------------------------------------------------ the plan stage
@pytest.fixture
def planned_pipeline(tmp_path, monkeypatch):
    """A pipeline (tiny synthetic data) whose timing probe is a fake: returns a factory
    ``make(budget, **fields)`` → the Pipeline after its data and plan stages, and the probe
    calls made."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    calls = []

    def fake_probe(plan, warmup, iters, process_start=None, start_command=None):
        calls.append((warmup, iters))
        return Timings(step={"teacher": 0.04, "baseline": 0.02, "tkd": 0.03},
                       infer={"teacher": 0.01, "student": 0.005}, start=1.0, build=0.1,
                       probe_seconds=1.0)

    monkeypatch.setattr(pipeline_module, "probe_timings", fake_probe)

    def make(budget, **fields):
        # --tiny with 500 iterations as the schedule without a budget
        options = PipelineOptions(tiny=True, output=str(tmp_path / "out"), budget=budget,
                                  max_iter=500, **fields)
        pipe = pipeline_module.Pipeline(options, project_root=REPO)
        pipe.stage_data()
        pipe.stage_plan()
        return pipe

    return make, calls


def test_plan_is_printed_with_the_budget_schedule_and_kept_on_resume(planned_pipeline, capsys):
    make, calls = planned_pipeline
    pipe = make("45s")
    printed = capsys.readouterr().out
    assert "planning:" in printed and "ends about" in printed
    chosen = pipe.plan.iterations("teacher")
    assert 1 <= chosen < 500
    assert all(pipe.plan.iterations(m) == chosen for m in TRAININGS)
    assert f"SOLVER.MAX_ITER {chosen}" in " ".join(pipe.plan.train_opts["tkd"])
    status = json.loads((Path(pipe.out) / "stages.json").read_text())
    assert status["stages"]["plan"]["result"]["iterations"]["tkd"] == chosen
    # a rerun (a resumed run) reuses the recorded plan: no new probe, the same schedule
    again = make("45s")
    assert len(calls) == 1
    assert "done before" in capsys.readouterr().out
    assert again.plan.train_opts == pipe.plan.train_opts
    # a different budget plans again
    make("1m")
    assert len(calls) == 2


def test_a_slow_teacher_shortens_both_students_and_a_rerun_keeps_it(planned_pipeline, capsys):
    make, calls = planned_pipeline
    pipe = make("45s")
    chosen = pipe.plan.iterations("teacher")
    planned = pipe.status.get("plan")["result"]["planned"]["teacher"]
    pipe.status.update("teacher", status="done", seconds=3 * planned)  # the machine got busier
    pipe.refit_after_teacher()
    students = pipe.plan.iterations("baseline")
    assert pipe.plan.iterations("tkd") == students < chosen
    assert pipe.plan.iterations("teacher") == chosen
    assert f"both students train {students} iterations instead of {chosen}" in capsys.readouterr().out
    assert "The teacher took 3.00x its planned time" in pipe.plan_note()
    again = make("45s")  # a rerun: the recorded plan, the refit included, no new probe
    again.refit_after_teacher()
    assert len(calls) == 1 and again.plan.train_opts == pipe.plan.train_opts


def test_too_small_budget_stops_at_the_plan_stage(planned_pipeline):
    make, _ = planned_pipeline
    with pytest.raises(StageError, match=r"stage 1/6 \(plan\) failed: --budget 2.0 s is too small"):
        make("2s")


def test_user_iterations_win_over_the_budget(planned_pipeline):
    make, _ = planned_pipeline
    pipe = make("45s", opts=["SOLVER.MAX_ITER", "400"])
    assert pipe.plan.iterations("teacher") == 400
    assert "--opts SOLVER.MAX_ITER 400 wins over --budget 45s" in pipe.plan_note()


def test_command_line_refuses_a_bad_budget_in_one_line():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(REPO / "tools" / "tkd_pipeline.py"), "--budget", "45"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    errors = [l for l in proc.stderr.splitlines() if "error:" in l]
    assert errors == ["tkd_pipeline.py: error: --budget '45': give a duration such as 90s, 45m, 2h or 1h30m"]


def test_real_probe_times_steps_inference_and_a_process_start(tmp_path, monkeypatch):
    # the probe itself, at the smoke-test scale: every model's step and both inferences are
    # measured, and a process's start-up is the timed start command plus a build and a batch
    import sys

    from tkd_d2.pipeline.probe import probe_timings

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    pipe = pipeline_module.Pipeline(PipelineOptions(tiny=True, output=str(tmp_path / "out")), project_root=REPO)
    pipe.stage_data()
    # process_start 0: only the timed start command can account for the 2 s
    timings = probe_timings(pipe.plan, 0, 1, process_start=0.0,
                            start_command=[sys.executable, "-c", "import time; time.sleep(2)"])
    assert set(timings.step) == set(TRAININGS) and all(v > 0 for v in timings.step.values())
    assert set(timings.infer) == {"teacher", "student"} and all(v > 0 for v in timings.infer.values())
    assert timings.start >= 2.0 + timings.build > 2.0
    assert timings.probe_seconds >= 2.0 + sum(timings.step.values())

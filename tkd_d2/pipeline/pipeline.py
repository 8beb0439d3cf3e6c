"""The main job: :class:`Pipeline` runs the stages of :data:`~.stages.STAGES` in order, each
built as a :class:`~.runner.Job` and run (or reused) by one :class:`~.runner.StageRunner`;
then it writes the report."""
import dataclasses
import datetime
import os

from ..data import default_root
from .options import PipelineOptions
from .budget import (TRAININGS, Timings, fit_budget, format_plan, parse_duration, refit_students,
                     stage_seconds)
from .pictures import listed_pictures, pictures_job
from .probe import probe_timings, process_age
from .plan import Plan
from .report import ModelResult, Report, StageTime, plot_training_curves, speed_section, write_report
from .runner import Job, StageError, StageRunner, now
from .speed import deploy_job, deploy_section, speed_job
from .stages import COMMAND_STAGES, MODELS, STAGE_LABELS, STAGES
from .training import entry_command, eval_job, run_data_stage, train_job

__all__ = ["Pipeline", "run_pipeline"]


class Pipeline:
    """The main job for ``options`` (:class:`~.options.PipelineOptions`, or a dict of its
    fields).

    ``project_root`` holds ``configs/`` (default: the working directory); the trainings and
    evaluations run from there, as ``entry`` (the program's argv; default
    ``python -m tkd_d2.train``, see :func:`~.training.entry_command`).
    ``written_by`` names the caller in the report.
    """

    def __init__(self, options, *, project_root=None, written_by="tkd_d2.pipeline", entry=None):
        self.plan = plan = Plan(options, project_root)
        self.options, self.family, self.out = plan.options, plan.family, plan.out
        self.written_by = written_by
        self.entry = list(entry or entry_command())
        os.makedirs(self.out, exist_ok=True)
        # Trainings run from the project root: a relative dataset root would point elsewhere.
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   DETECTRON2_DATASETS=os.path.abspath(default_root()))
        self.runner = StageRunner(self.out, STAGES, cwd=plan.project_root, env=env,
                                  redo=plan.options.redo)
        self.status = self.runner.status
        self.pictures = []  # set by stage_pictures
        self.process_start = process_age()  # this process's imports: as a training's start-up

    # what the plan resolved, under the names callers know
    configs = property(lambda self: self.plan.configs)
    eval_opts = property(lambda self: self.plan.eval_opts)
    train_opts = property(lambda self: self.plan.train_opts)
    classes = property(lambda self: self.plan.classes)

    def trained_configs(self):
        return self.plan.trained_configs()

    # ---------------------------------------------------------------- stages
    def stage_data(self):
        run_data_stage(self.runner, self.plan)

    def stage_plan(self):
        """Time each model's step and inference, print every stage's planned wall time;
        with ``--budget``, give every training the iterations that fit. The plan is recorded
        in stages.json, so a resumed run keeps the schedule (and budget) it started with."""
        plan, options = self.plan, self.options
        warmup, iters = options.probe_iters
        settings = {"train_opts": plan.train_opts, "configs": plan.configs, "budget": options.budget,
                    "teacher_epochs": options.teacher_epochs, "probe": [warmup, iters], "eval_opts": plan.eval_opts}
        self.runner.execute(Job("plan", f"planning: {warmup} + {iters} timed training steps of "
                                "each model and test inference", settings,
                                compute=self.make_plan, record_result=True))
        result = self.status.get("plan")["result"]
        if result["iterations"] != {m: plan.iterations(m) for m in TRAININGS}:
            plan.set_budget_iterations(result["iterations"])
        total = sum(result["planned"].values())
        finish = datetime.datetime.now() + datetime.timedelta(seconds=total)
        labels = {name: STAGE_LABELS.get(name, name) for name in result["planned"]}
        lines = format_plan(result["planned"], result["iterations"],
                            Timings.from_dict(result["timings"]), labels, result["budget"],
                            result["note"])
        print("\n".join(lines) + f"\n  ends about {finish:%H:%M} if the machine stays as quiet",
              flush=True)

    def make_plan(self):
        """The plan stage's work: measure, fit the budget, estimate each stage."""
        plan, options = self.plan, self.options
        # a real start of the entry (imports and exit: seconds, more on a busy machine); the
        # smoke-test scale takes this process's own start-up instead
        start_command = None if options.tiny else [*self.entry, "--help"]
        timings = probe_timings(plan, *options.probe_iters, process_start=self.process_start,
                                start_command=start_command)
        iterations = {m: plan.iterations(m) for m in TRAININGS}
        test_images = plan.test_images()
        budget = parse_duration(options.budget) if options.budget else None
        note = ""
        if budget:
            user = plan.user_sets_iterations()
            if user:
                note = f"{user} wins over --budget {options.budget}: the iterations are yours"
            else:
                cfgs = plan.trained_configs()
                spent = (self.status.get("data").get("seconds") or 0.0) + timings.probe_seconds
                fit = fit_budget(budget, timings, default_iterations=iterations,
                                 batch={m: cfgs[m].SOLVER.IMS_PER_BATCH for m in TRAININGS},
                                 train_images=plan.train_images(), test_images=test_images,
                                 pictures=options.num_images, speed_iters=options.speed_iters,
                                 spent=spent, min_iterations=1 if options.tiny else 100,
                                 teacher_epochs=options.teacher_epochs)
                iterations, note = fit.iterations, fit.note
        planned = {"data": self.status.get("data").get("seconds") or 0.0,
                   "plan": timings.probe_seconds}
        planned.update(stage_seconds(timings, iterations, test_images, options.num_images,
                                     options.speed_iters))
        return {"timings": dataclasses.asdict(timings), "iterations": iterations,
                "planned": planned, "budget": budget, "note": note,
                "chosen_by_budget": bool(budget) and not plan.user_sets_iterations()}

    def refit_after_teacher(self):
        """--budget: when the teacher took longer than planned (the machine got busier), give
        both students the iterations that still end the run in time (recorded with the plan,
        so a rerun keeps them)."""
        result = self.status.get("plan").get("result") or {}
        teacher = self.status.get("teacher").get("seconds")
        if not result.get("chosen_by_budget") or "refit" in result or not teacher:
            return
        slowdown = teacher / result["planned"]["teacher"]
        refit = {"slowdown": slowdown, "students_before": result["iterations"]["baseline"]}
        if slowdown > 1.05:
            elapsed = sum(self.status.get(s).get("seconds") or 0.0 for s in ("data", "plan", "teacher"))
            n = refit_students(result["budget"], Timings.from_dict(result["timings"]), result["iterations"],
                               elapsed=elapsed, slowdown=slowdown, test_images=self.plan.test_images(),
                               pictures=self.options.num_images, speed_iters=self.options.speed_iters,
                               min_iterations=1 if self.options.tiny else 100)
            if n != result["iterations"]["baseline"]:
                result["iterations"].update(baseline=n, tkd=n)
                self.plan.set_budget_iterations(result["iterations"])
                print(f"  the teacher took {slowdown:.2f}x its planned time: both students train {n} "
                      f"iterations instead of {refit['students_before']} to keep to --budget "
                      f"{self.options.budget}", flush=True)
        result["refit"] = refit
        self.status.update("plan", result=result)

    def stage_train(self, key):
        plan = self.plan
        if key == "teacher" and plan.teacher_given:
            self.use_given_teacher()
            return
        titles = {
            "teacher": f"training teacher: {plan.label('teacher')}",
            "baseline": f"training baseline student (no KD): {plan.label('baseline')}",
            "tkd": f"training TKD student: {plan.label('teacher')} -> {plan.label('tkd')}",
        }
        opts, precondition = list(plan.train_opts[key]), None
        if key == "tkd":
            # The config the entry dumped beside the teacher's weights: the user's overrides
            # included, so the teacher is built as it was trained.
            teacher_config = os.path.join(plan.dirs["teacher"], "config.yaml")
            opts += ["MODEL.TKD.TEACHER.CONFIG", teacher_config,
                     "MODEL.TKD.TEACHER.WEIGHTS", plan.weights["teacher"]]

            def precondition():
                if not os.path.isfile(teacher_config):
                    raise StageError(f"{self.runner.describe(key)}: the teacher's {teacher_config} is "
                                     "missing (training writes it beside model_final.pth); pass --redo teacher")

        self.runner.execute(train_job(key, titles[key], self.entry, plan.configs[key], opts,
                                      plan.dirs[key], precondition))

    def use_given_teacher(self):
        """--teacher: nothing to train; the stage is recorded as given, taking no time."""
        folder = self.plan.dirs["teacher"]
        self.runner.header("teacher", f"teacher given: {folder} (not trained here)")
        self.status.update("teacher", status="done", seconds=0.0, finished=now(), settings={"teacher": folder},
                           note=f"given (--teacher {self.runner.shown_path(folder)}), not trained")

    def stage_eval(self, key):
        plan = self.plan
        name = f"eval_{key}"
        config = plan.configs["baseline" if key == "tkd" else key]  # TKD: plain student config
        self.runner.execute(eval_job(name, f"evaluating {plan.label(key)} on {plan.test_dataset}",
                                     self.entry, config, plan.eval_opts_of(key), plan.weights[key],
                                     os.path.join(self.out, name), plan.ap_results_path(key)))

    def stage_pictures(self):
        self.runner.execute(pictures_job(self.plan))
        self.pictures = listed_pictures(os.path.join(self.out, "pictures"))

    def stage_speed(self):
        self.runner.execute(speed_job(self.plan))

    def stage_deploy(self):
        self.runner.execute(deploy_job(self.plan, self.status.get("deploy").get("result")))

    # ---------------------------------------------------------------- report
    def stage_rows(self):
        """The report's wall-time table: one row per stage of :data:`STAGE_LABELS`."""
        rows = []
        for stage, label in STAGE_LABELS.items():
            recorded = self.status.get(stage)
            note = recorded.get("note", "")
            if stage not in self.runner.ran and recorded.get("status") == "done" and not note:
                note = "reused from an earlier run"
            if recorded.get("resumed"):
                note = (note + "; " if note else "") + "resumed after an interruption (time summed)"
            rows.append(StageTime(label, recorded.get("seconds"),
                                  recorded.get("status", "not recorded"), note,
                                  planned=self.planned().get(stage)))
        return rows

    def planned(self):
        """{stage: seconds} the plan stage printed before training ({} without one)."""
        return (self.status.get("plan").get("result") or {}).get("planned", {})

    def plan_note(self):
        result = self.status.get("plan").get("result")
        if not result:
            return ""
        budget = f" with --budget {self.options.budget}" if result.get("budget") else ""
        note = (f"Planned: the plan stage's estimate before the first training{budget}, from "
                "timed training steps and test inference on this machine.")
        chosen = result.get("note") or ""
        note += f" {chosen[0].upper()}{chosen[1:]}." if chosen else ""
        refit = result.get("refit") or {}
        if refit.get("students_before", result["iterations"]["baseline"]) != result["iterations"]["baseline"]:
            note += (f" The teacher took {refit['slowdown']:.2f}x its planned time, so both students "
                     f"trained {result['iterations']['baseline']} iterations instead of "
                     f"{refit['students_before']} (the planned column is the first plan).")
        return note

    def summary(self, curves):
        """The :class:`~.report.Report` of this run: its models, speed, stage times, pictures
        and commands; ``curves`` is the training-curve PNG."""
        plan, options, shown = self.plan, self.options, self.runner.shown_path
        speed = speed_section(
            self.status.get("speed").get("result"), plan.label("teacher"),
            f"student {plan.backbone('tkd')} (baseline and TKD: same network)",
        )
        commands = [(stage, self.status.get(stage)["command"]) for stage in COMMAND_STAGES
                    if self.status.get(stage).get("command")]
        overrides = plan.train_opts["baseline"]
        intro = [
            f"{self.family.label} on `{options.dataset_label()}`: a {plan.backbone('teacher')} teacher, "
            f"a {plan.backbone('baseline')} student trained alone (baseline) and the same student "
            "trained with Triple Knowledge Distillation (TKD) from the teacher, same schedule "
            f"({plan.iterations('tkd')} iterations) and seed; "
            + (f"the teacher was given (`--teacher {shown(plan.dirs['teacher'])}`), trained before this run "
               f"({plan.iterations('teacher')} iterations by its config). " if plan.teacher_given else
               f"the teacher trained {plan.iterations('teacher')} iterations. ")
            + "TKD parts that ran (`MODEL.TKD.PARTS`): "
            + ", ".join(p.upper() for p in plan.trained_configs()["tkd"].MODEL.TKD.PARTS) + ".",
            "",
            f"Written by `{self.written_by}` on {now()}. Configs: "
            + ", ".join(f"`{shown(plan.configs[m])}`" for m in MODELS)
            + (f"; overrides: `{' '.join(overrides)}`" if overrides else "")
            + ".",
        ]
        if plan.inspection:  # --dataset custom: what the data hold and the settings they gave
            intro += ["", "The training data and the settings derived from them (pass "
                      "--no-derive to train with the configs' own):", ""] + list(plan.inspection)
        return Report(
            title=f"TKD report: {self.family.label} {plan.backbone('teacher')} -> "
                  f"{plan.backbone('tkd')} on {options.dataset_label()}",
            intro=intro,
            dataset=plan.test_dataset,
            models=[ModelResult(m, plan.label(m), plan.ap_results_path(m)) for m in MODELS],
            speed=speed,
            deploy=deploy_section(plan, self.status, shown),
            stages=self.stage_rows(),
            plan_note=self.plan_note(),
            curves=curves,
            pictures=self.pictures,
            pictures_note=f"Each picture: ground truth | teacher | baseline | TKD student "
                          f"(boxes scoring at least {options.score_thresh:g}).",
            commands=commands,
            teacher_given=plan.teacher_given,
        )

    def stage_report(self):
        name = "report"
        self.runner.header(name, "writing report.md and curves.png")
        curves = os.path.join(self.out, "curves.png")

        def run():
            runs = {self.plan.label(m): os.path.join(self.plan.dirs[m], "metrics.json") for m in MODELS}
            plot_training_curves(runs, curves, kd_run=self.plan.label("tkd"))
            path = os.path.join(self.out, "report.md")
            write_report(path, self.summary(curves))
            return path

        path = self.runner.in_process(name, run)
        print(f"  {path}\n  {curves}", flush=True)
        return path

    # ---------------------------------------------------------------- all
    def run(self):
        """Every stage in order; returns the path of report.md."""
        options = self.options
        print(f"TKD pipeline: {options.dataset_label()} / {options.detector} -> {self.out}", flush=True)
        if options.redo:
            print(f"redo: {', '.join(sorted(options.redo))}", flush=True)
        self.stage_data()
        self.stage_plan()
        for key in MODELS:
            self.stage_train(key)
            if key == "teacher":
                self.refit_after_teacher()
        for key in MODELS:
            self.stage_eval(key)
        self.stage_pictures()
        self.stage_speed()
        self.stage_deploy()
        report = self.stage_report()
        print(f"\nDone. Report: {report}", flush=True)
        return report


def run_pipeline(options=None, *, project_root=None, written_by="tkd_d2.pipeline", entry=None,
                 **fields):
    """Run the main job: ``options`` (:class:`~.options.PipelineOptions`), or its fields as
    keyword arguments (``run_pipeline(tiny=True, output="/tmp/try")``). Returns the report's
    path; raises :class:`~tkd_d2.errors.TKDError` (e.g. :class:`StageError`) when a stage fails."""
    if options is None:
        options = PipelineOptions(**fields)
    elif fields:
        options = dataclasses.replace(options, **fields)
    return Pipeline(options, project_root=project_root, written_by=written_by, entry=entry).run()

"""tools/tkd_pipeline.py end to end at a tiny scale, the library under it (tkd_d2.pipeline),
and the report helpers it uses.

The end-to-end run is the session's ``tiny_pipeline`` (tests/tiny_runs.py: 16 train / 8 test
synthetic images of 128 px, 2 iterations per training, batch 2; a few minutes on 2 CPU
cores), which test_train.py reads too; the reruns here reuse it. The main job with defect
crops and tiled inference runs end to end in test_benchmarks.py's
test_bench_large_images_tiny (its crops route is that job).
"""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_runs import PIPELINE, PIPELINE_ARGS as TINY_ARGS, PIPELINE_OPTS as TINY_OPTS, run_pipeline

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = TINY_ARGS + TINY_OPTS
MODELS = ("teacher", "baseline", "tkd")


def explain(proc):
    return f"exit {proc.returncode}\n--- stdout (end)\n{proc.stdout[-6000:]}\n--- stderr (end)\n{proc.stderr[-4000:]}"


def assert_valid_png(path):
    import cv2

    path = Path(path)
    assert path.is_file(), f"{path} missing"
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    image = cv2.imread(str(path))
    assert image is not None and image.ndim == 3 and min(image.shape[:2]) > 10, path
    return image


def ap_results(out, key):
    paths = list((out / f"eval_{key}" / "inference").glob("*/ap_results.json"))
    assert len(paths) == 1, paths
    with open(paths[0]) as f:
        return json.load(f), paths[0]


def section(report, title_start):
    """The lines of the report section whose heading starts with ``title_start``."""
    lines = report.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(title_start))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("#")), len(lines))
    return lines[start + 1:end]


def table_rows(lines):
    rows = {}
    for line in lines:
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def fmt(value):
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def mtimes(out):
    files = [out / m / "model_final.pth" for m in MODELS]
    files += [ap_results(out, m)[1] for m in MODELS]
    files += sorted((out / "pictures").glob("*.png"))
    return {str(f): f.stat().st_mtime_ns for f in files}


# ------------------------------------------------------------------------------ end to end
@pytest.fixture
def pipeline(tiny_pipeline):
    """The session's tiny pipeline run: {"tmp", "out", "env", "first"}."""
    return tiny_pipeline


@pytest.mark.slow
def test_first_run_completes_every_stage(pipeline):
    proc = pipeline["first"]
    assert proc.returncode == 0, explain(proc)
    for k in range(1, 7):
        assert f"[stage {k}/6]" in proc.stdout
    commands = [l for l in proc.stdout.splitlines() if l.startswith("$ ")]
    assert sum("train_net.py --config-file" in c for c in commands) == 3, commands
    assert sum("train_net.py --eval-only" in c for c in commands) == 3, commands
    # the distilled checkpoint is evaluated with the plain student config
    eval_tkd = next(c for c in commands if "--eval-only" in c and "/tkd/model_final.pth" in c)
    assert "retinanet_Lite0_FPN.yaml" in eval_tkd and "tkd_retinanet" not in eval_tkd
    # the TKD student's teacher is built from the config its training dumped (overrides included)
    train_tkd = next(c for c in commands if "tkd_retinanet" in c)
    assert f"MODEL.TKD.TEACHER.CONFIG {pipeline['out'] / 'teacher' / 'config.yaml'}" in train_tkd
    # detectron2's own training log is streamed
    assert "Starting training from iteration 0" in proc.stdout
    # the plan comes before the first training, and the report sets it beside the actual times
    plan_at = proc.stdout.index("[stage 1/6] planning")
    assert plan_at < proc.stdout.index("$ ") and "ends about" in proc.stdout[plan_at:]
    times = table_rows(section((pipeline["out"] / "report.md").read_text(), "## Wall time"))
    assert times["stage"][:2] == ["planned", "wall time"]
    assert times["2 train teacher"][0].endswith(" s") and times["total"][1].endswith(" s")
    out = pipeline["out"]
    for m in MODELS:
        assert (out / m / "model_final.pth").is_file()
        assert (out / "logs" / f"{m}.log").is_file()
    assert (out / "report.md").is_file()
    # the report states how long each model trained (TINY_ARGS: --max-iter 2 for every model)
    report = (out / "report.md").read_text()
    assert "same schedule (2 iterations) and seed; the teacher trained 2 iterations" in report
    # and which TKD parts the student trained with (the default's)
    from tkd_d2.config import DEFAULT_TKD_PARTS
    assert "TKD parts that ran (`MODEL.TKD.PARTS`): " + ", ".join(p.upper() for p in DEFAULT_TKD_PARTS) + "." in report


@pytest.mark.slow
def test_report_numbers_are_those_of_ap_results(pipeline):
    assert pipeline["first"].returncode == 0, explain(pipeline["first"])
    out = pipeline["out"]
    report = (out / "report.md").read_text()
    accuracy = table_rows(section(report, "## Accuracy"))
    per_class = table_rows(section(report, "### Per-class AP50"))
    labels = {m: next(k for k in accuracy if k.lower().startswith({"teacher": "teacher",
              "baseline": "baseline", "tkd": "tkd"}[m])) for m in MODELS}
    header = per_class.pop("class")
    for m in MODELS:
        data, path = ap_results(out, m)
        bbox = data["bbox"]
        row = accuracy[labels[m]]
        assert row[:3] == [fmt(bbox.get(k)) for k in ("AP", "AP50", "AP75")], (m, row, bbox)
        assert os.path.relpath(path, out) in row[3]  # links the file it read
        column = header.index(labels[m])
        classes = [k[len("AP50-"):] for k in bbox if k.startswith("AP50-")]
        assert classes, bbox
        for c in classes:
            assert per_class[c][column] == fmt(bbox[f"AP50-{c}"]), (m, c)
        # and verbatim, every digit
        assert json.dumps(data, indent=2) in report
        assert not math.isnan(bbox["AP"])  # score threshold 0: real numbers were compared


@pytest.mark.slow
def test_pictures_curves_and_links(pipeline):
    assert pipeline["first"].returncode == 0, explain(pipeline["first"])
    out = pipeline["out"]
    pictures = sorted((out / "pictures").glob("*.png"))
    assert len(pictures) == 2
    for p in pictures:
        image = assert_valid_png(p)
        assert image.shape[1] > 3 * image.shape[0]  # four panels side by side
    assert_valid_png(out / "curves.png")
    report = (out / "report.md").read_text()
    targets = re.findall(r"\]\(([^)]+)\)", report)
    assert "curves.png" in targets
    assert all(f"pictures/{p.name}" in targets for p in pictures)
    for target in targets:
        assert (out / target).is_file(), target
    speed = table_rows(section(report, "## Size and CPU speed"))
    assert any(k.startswith("teacher") for k in speed) and len(speed) == 3, speed


@pytest.mark.slow
def test_report_deploy_table_has_the_exported_students_ap(pipeline):
    assert pipeline["first"].returncode == 0, explain(pipeline["first"])
    out = pipeline["out"]
    assert (out / "deploy" / "onnx" / "model.onnx").is_file()
    lines = [l for l in section((out / "report.md").read_text(), "## Deploy") if l.startswith("|")]
    rows = [[c.strip() for c in l.strip().strip("|").split("|")] for l in lines]
    assert rows[0] == ["model", "runtime", "size (MB)", "images/s", "AP", "AP50"]
    assert [r[1] for r in rows[2:]] == ["PyTorch eager", "PyTorch eager", "ONNX Runtime"]
    # the export's AP, AP50 in the table are the eager student's
    assert [abs(float(a) - float(b)) <= 0.1 for a, b in zip(rows[4][4:], rows[3][4:])] == [True] * 2
    exported = json.loads((out / "stages.json").read_text())["stages"]["deploy"]["result"]
    onnx_bbox = json.loads(Path(exported["ap_results"]).read_text())["bbox"]
    tkd_bbox = ap_results(out, "tkd")[0]["bbox"]
    # the export evaluated through the same loader and evaluator gives the PyTorch AP
    assert abs(onnx_bbox["AP"] - tkd_bbox["AP"]) <= 0.1 and abs(onnx_bbox["AP50"] - tkd_bbox["AP50"]) <= 0.1
    assert exported["size_mb"] > 0 and exported["images_per_second"] > 0


@pytest.mark.slow
def test_stage_file_records_wall_times_and_commands(pipeline):
    assert pipeline["first"].returncode == 0, explain(pipeline["first"])
    out = pipeline["out"]
    stages = json.loads((out / "stages.json").read_text())["stages"]
    for name in ("teacher", "baseline", "tkd", "eval_teacher", "eval_baseline", "eval_tkd",
                 "pictures", "speed"):
        assert stages[name]["status"] == "done", (name, stages[name])
        assert stages[name]["seconds"] > 0
    for name in MODELS:
        assert "train_net.py --config-file" in stages[name]["command"]
    result = stages["speed"]["result"]
    assert result["teacher"]["params"] > result["student"]["params"] > 0
    report = (out / "report.md").read_text()
    assert "| 2 train teacher |" in report


@pytest.mark.slow
def test_rerun_reuses_finished_stages(pipeline):
    assert pipeline["first"].returncode == 0, explain(pipeline["first"])
    out, env = pipeline["out"], pipeline["env"]
    before = mtimes(out)
    report_before = (out / "report.md").stat().st_mtime_ns
    proc = run_pipeline(out, env, *TINY, cwd=str(pipeline["tmp"]))
    assert proc.returncode == 0, explain(proc)
    assert not [l for l in proc.stdout.splitlines() if l.startswith("$ ")], "a stage ran again"
    assert proc.stdout.count("done before") >= 8
    assert mtimes(out) == before
    assert (out / "report.md").stat().st_mtime_ns > report_before  # the report is rewritten
    assert "reused from an earlier run" in (out / "report.md").read_text()


@pytest.mark.slow
def test_redo_runs_a_stage_and_what_depends_on_it_again(pipeline):
    assert pipeline["first"].returncode == 0, explain(pipeline["first"])
    out, env = pipeline["out"], pipeline["env"]
    before = mtimes(out)
    proc = run_pipeline(out, env, *TINY_ARGS, "--redo", "eval_tkd", *TINY_OPTS,
                        cwd=str(pipeline["tmp"]))
    assert proc.returncode == 0, explain(proc)
    commands = [l for l in proc.stdout.splitlines() if l.startswith("$ ")]
    assert len(commands) == 1 and "--eval-only" in commands[0] and "/tkd/" in commands[0], commands
    after = mtimes(out)
    _, tkd_results = ap_results(out, "tkd")
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {str(tkd_results)}, changed


@pytest.mark.slow
def test_changed_settings_are_not_silently_reused(pipeline):
    assert pipeline["first"].returncode == 0, explain(pipeline["first"])
    out, env = pipeline["out"], pipeline["env"]
    before = mtimes(out)
    args = list(TINY_ARGS)
    args[args.index("--max-iter") + 1] = "3"
    proc = run_pipeline(out, env, *args, *TINY_OPTS, cwd=str(pipeline["tmp"]))
    assert proc.returncode == 1, explain(proc)
    assert "--redo teacher" in proc.stderr, proc.stderr
    assert mtimes(out) == before


@pytest.mark.slow
def test_a_given_teacher_is_distilled_from_as_it_is_not_trained(pipeline):
    assert pipeline["first"].returncode == 0, explain(pipeline["first"])
    teacher = pipeline["out"] / "teacher"
    weights_before = (teacher / "model_final.pth").stat().st_mtime_ns
    out = pipeline["tmp"] / "given_teacher"
    proc = run_pipeline(out, pipeline["env"], *TINY_ARGS, "--teacher", str(teacher), *TINY_OPTS,
                        cwd=str(pipeline["tmp"]))
    assert proc.returncode == 0, explain(proc)
    commands = [l for l in proc.stdout.splitlines() if l.startswith("$ ")]
    trainings = [c for c in commands if "train_net.py --config-file" in c]
    assert len(trainings) == 2 and not any("Lite2_FPN" in c for c in trainings), trainings
    assert f"teacher given: {teacher} (not trained here)" in proc.stdout
    train_tkd = next(c for c in trainings if "tkd_retinanet" in c)
    assert f"MODEL.TKD.TEACHER.CONFIG {teacher / 'config.yaml'}" in train_tkd
    assert f"MODEL.TKD.TEACHER.WEIGHTS {teacher / 'model_final.pth'}" in train_tkd
    # evaluated by its own config, on the students' test set (its training had none)
    eval_teacher = next(c for c in commands if "--eval-only" in c and str(teacher) in c)
    assert f"--config-file {teacher / 'config.yaml'}" in eval_teacher and "DATASETS.TEST" in eval_teacher
    assert ap_results(out, "teacher")[0]["bbox"]
    assert not (out / "teacher").exists()
    assert (teacher / "model_final.pth").stat().st_mtime_ns == weights_before
    stages = json.loads((out / "stages.json").read_text())["stages"]
    assert stages["teacher"]["status"] == "done" and "command" not in stages["teacher"]
    assert "teacher" not in stages["plan"]["result"]["planned"]
    assert "teacher" not in stages["plan"]["result"]["timings"]["step"]
    report = (out / "report.md").read_text()
    assert f"the teacher was given (`--teacher {teacher}`), trained before this run" in report
    assert "given (--teacher" in table_rows(section(report, "## Wall time"))["2 train teacher"][3]


@pytest.mark.slow
def test_failing_stage_is_named_with_its_log(pipeline):
    out = pipeline["tmp"] / "failing"
    # an EfficientNet variant that does not exist: the config loads, building the teacher
    # fails, in the plan's timing probe, before any training
    proc = run_pipeline(out, pipeline["env"], "--tiny", "--max-iter", "1", "--opts",
                        "MODEL.EFFICIENTNET.VARIANT", "lite7", cwd=str(pipeline["tmp"]))
    assert proc.returncode == 1, explain(proc)
    match = re.search(r"stage 1/6 \(plan\) failed.*lite7.*Log: (\S+)", proc.stderr)
    assert match, proc.stderr
    log = Path(match.group(1))
    assert log.is_file() and "lite7" in log.read_text() and "Traceback" in log.read_text()
    assert not (out / "teacher").exists()  # stopped at the failing stage
    status = json.loads((out / "stages.json").read_text())["stages"]["plan"]
    assert status["status"] == "failed"


@pytest.mark.slow
def test_bad_config_key_fails_before_any_training(pipeline):
    out = pipeline["tmp"] / "bad_key"
    proc = run_pipeline(out, pipeline["env"], "--tiny", "--opts", "MODEL.NOT_A_KEY", "1",
                        cwd=str(pipeline["tmp"]))
    assert proc.returncode == 1, explain(proc)
    assert "stage 1/6 (data) failed" in proc.stderr and "MODEL.NOT_A_KEY" in proc.stderr
    # one line, no traceback
    assert [l for l in proc.stderr.splitlines() if l.strip()] == \
        [next(l for l in proc.stderr.splitlines() if "tkd_pipeline.py: error:" in l)], proc.stderr
    assert not (out / "teacher").exists()
    assert json.loads((out / "stages.json").read_text())["stages"]["data"]["status"] == "failed"


def test_help_explains_the_options():
    proc = subprocess.run([sys.executable, str(PIPELINE), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    for option in ("--dataset", "--detector", "--output", "--num-images", "--max-iter",
                   "--tiny", "--redo", "--opts"):
        assert option in proc.stdout


# ------------------------------------------------------------------------------ report helpers
def test_metrics_of_a_resumed_run_keep_the_last_line_per_iteration(tmp_path):
    from tkd_d2.pipeline.report import load_metrics, split_loss_keys

    path = tmp_path / "metrics.json"
    lines = [
        {"iteration": 19, "total_loss": 3.0, "loss_cls": 2.0, "loss_box_reg": 1.0},
        {"iteration": 39, "total_loss": 2.0, "loss_cls": 1.5, "loss_box_reg": 0.5, "loss_ded_fg": 0.1},
        # resumed from the checkpoint at 29: iteration 39 is logged again
        {"iteration": 39, "total_loss": 1.9, "loss_cls": 1.4, "loss_box_reg": 0.5, "loss_ded_fg": 0.2},
        {"iteration": 39, "bbox/AP": 12.5},
    ]
    path.write_text("\n".join(json.dumps(l) for l in lines) + "\n{\"iteration\": 4")  # cut line
    records = load_metrics(str(path))
    assert [r["iteration"] for r in records] == [19, 39]
    assert records[1]["loss_cls"] == 1.4 and records[1]["bbox/AP"] == 12.5
    assert split_loss_keys(records) == (["loss_cls", "loss_box_reg"], ["loss_ded_fg"])


def test_report_shows_nan_and_missing_classes_as_na(tmp_path):
    from tkd_d2.pipeline.report import ModelResult, Report, StageTime, write_report

    results = {}
    for key, bbox in (("teacher", {"AP": 51.234567, "AP50": 80.0, "AP75": float("nan"),
                                   "AP50-a": 90.0, "AP50-b": float("nan")}),
                      ("baseline", {"AP": 40.0, "AP50": 70.0, "AP75": 30.0, "AP50-a": 60.0})):
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps({"dataset": "d", "bbox": bbox}))
        results[key] = str(path)
    summary = Report(
        title="t", dataset="d",
        models=[ModelResult("teacher", "T", results["teacher"]),
                ModelResult("baseline", "B", results["baseline"]),
                ModelResult("tkd", "K", str(tmp_path / "missing.json"))],
        stages=[StageTime("2 train teacher", 75.0, "done")],
    )
    text = write_report(str(tmp_path / "report.md"), summary)
    rows = table_rows(section(text, "## Accuracy"))
    assert rows["T"][:3] == ["51.23", "80.00", "n/a"]
    assert rows["K"] == ["n/a", "n/a", "n/a", "missing"]
    classes = table_rows(section(text, "### Per-class AP50"))
    assert classes["a"] == ["90.00", "60.00", "n/a"] and classes["b"] == ["n/a", "n/a", "n/a"]
    assert "| 2 train teacher | 1 min 15 s | done |" in text


@pytest.mark.parametrize("teacher_ap50,warned", [(70.0, True), (69.0, True), (70.5, False)])
def test_report_warns_when_the_teacher_is_not_above_the_baseline(tmp_path, teacher_ap50, warned):
    # DeepPCB with --budget 1h: a 1.8-epoch Lite2 teacher below its Lite0 baseline
    from tkd_d2.pipeline.report import ModelResult, Report, write_report

    models = []
    for key, ap50 in (("teacher", teacher_ap50), ("baseline", 70.0), ("tkd", 68.0)):
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps({"dataset": "d", "bbox": {"AP": 40.0, "AP50": ap50, "AP75": 30.0}}))
        models.append(ModelResult(key, key.upper(), str(path)))
    text = write_report(str(tmp_path / "report.md"), Report(title="t", dataset="d", models=models, stages=[]))
    assert ("The teacher is not above the baseline student" in text) == warned
    if warned:
        assert f"AP50 {teacher_ap50:.2f} vs 70.00" in text and "--redo teacher" in text
        # a given teacher cannot be trained again by the run: the advice is another --teacher
        given = write_report(str(tmp_path / "given.md"), Report(title="t", dataset="d", models=models, stages=[],
                                                                teacher_given=True))
        assert "pass its folder as `--teacher`" in given and "--redo teacher" not in given


# ------------------------------------------------------------------------------ library
def test_options_fill_in_defaults_and_expand_redo(tmp_path):
    from tkd_d2.errors import ConfigError
    from tkd_d2.pipeline import MODELS as STAGE_MODELS
    from tkd_d2.pipeline import TINY_MAX_ITER, PipelineOptions

    options = PipelineOptions(tiny=True, redo=["eval,pictures"], output=str(tmp_path / "o")).resolved()
    assert options.max_iter == TINY_MAX_ITER and options.speed_iters == [1, 3]
    assert options.redo == {f"eval_{m}" for m in STAGE_MODELS} | {"pictures"}
    assert options.output == str(tmp_path / "o")
    assert options.resolved() == options  # resolving twice changes nothing
    assert PipelineOptions(redo=["all"]).resolved().redo >= {"teacher", "baseline", "tkd", "speed"}
    for bad in (dict(redo=["nope"]), dict(opts=["MODEL.DEVICE"]), dict(num_images=-1),
                dict(max_iter=0), dict(speed_iters=[1, 0]), dict(probe_iters=[-1, 1]),
                dict(budget="45"), dict(budget="0m"), dict(detector="yolo"),
                dict(dataset="coco"), dict(backbones="vgg")):
        with pytest.raises(ConfigError):
            PipelineOptions(**bad).resolved()


@pytest.mark.parametrize("backbones", ["resnet", "lite"])
@pytest.mark.parametrize("detector", ["retinanet", "fcos"])
def test_backbones_choose_existing_configs_of_the_family(tmp_path, backbones, detector):
    from tkd_d2.config import is_distiller_config, load_config
    from tkd_d2.modeling import family_of
    from tkd_d2.pipeline import Pipeline, PipelineOptions

    root = Path(__file__).resolve().parents[1]
    pipeline = Pipeline(PipelineOptions(backbones=backbones, detector=detector,
                                        output=str(tmp_path / "out")), project_root=str(root))
    for model, path in pipeline.configs.items():
        cfg = load_config(path, register_datasets=False)
        assert family_of(cfg).name == detector
        assert is_distiller_config(cfg) == (model == "tkd")
        lite = cfg.MODEL.BACKBONE.NAME == "build_efficientnet_lite_fpn_backbone"
        assert lite == (backbones == "lite"), (model, path)


def test_teacher_epochs_without_a_budget_multiply_the_teachers_iterations(tmp_path):
    from tkd_d2.config import load_config
    from tkd_d2.pipeline import Plan, PipelineOptions

    root = Path(__file__).resolve().parents[1]
    out = str(tmp_path / "out")
    plan = Plan(PipelineOptions(output=out, max_iter=300, teacher_epochs=2.0), root)
    assert [plan.iterations(m) for m in ("teacher", "baseline", "tkd")] == [600, 300, 300]
    teacher, student = (load_config(plan.configs[m], plan.train_opts[m], register_datasets=False).SOLVER
                        for m in ("teacher", "baseline"))
    assert [2 * s for s in student.STEPS] == list(teacher.STEPS)  # the LR steps scale with it
    # without --max-iter: R times the teacher config's own schedule
    own = load_config(plan.configs["teacher"], register_datasets=False).SOLVER.MAX_ITER
    assert Plan(PipelineOptions(output=out, teacher_epochs=1.5), root).iterations("teacher") == round(1.5 * own)
    assert Plan(PipelineOptions(output=out, max_iter=300), root).iterations("teacher") == 300


def _teacher_folder(folder, config, *opts):
    """A folder as a finished training leaves it: ``config`` (with ``opts``) dumped as its
    config.yaml, and a model_final.pth (empty: nothing here loads it)."""
    from tkd_d2.config import load_config

    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(load_config(str(config), list(opts), register_datasets=False).dump())
    (folder / "model_final.pth").write_bytes(b"")
    return folder


def test_a_given_teacher_folder_is_checked_before_anything_runs(tmp_path):
    from tkd_d2.errors import ConfigError
    from tkd_d2.pipeline import Plan, PipelineOptions

    root = Path(__file__).resolve().parents[1]
    out = str(tmp_path / "out")
    good = _teacher_folder(tmp_path / "good", root / "configs/Synthetic/retinanet_Lite2_FPN.yaml")
    plan = Plan(PipelineOptions(output=out, teacher=str(good)), root)
    assert plan.configs["teacher"] == str(good / "config.yaml") and plan.dirs["teacher"] == str(good)
    assert plan.weights["teacher"] == str(good / "model_final.pth")
    # used as it was trained: neither --opts nor the schedule reach it; its test set is the students'
    plan = Plan(PipelineOptions(output=out, teacher=str(good), max_iter=7,
                                opts=["INPUT.MIN_SIZE_TEST", "96"]), root)
    assert plan.train_opts["teacher"] == [] and "INPUT.MIN_SIZE_TEST" not in plan.eval_opts_of("teacher")
    assert plan.eval_opts_of("teacher")[-2:] == ["DATASETS.TEST", "('synthetic_defects_test',)"]
    assert plan.iterations("baseline") == 7 != plan.iterations("teacher")

    (tmp_path / "no_weights").mkdir()
    (tmp_path / "no_weights" / "config.yaml").write_text((good / "config.yaml").read_text())
    fcos = _teacher_folder(tmp_path / "fcos", root / "configs/Synthetic/fcos_Lite2_FPN.yaml")
    classes = _teacher_folder(tmp_path / "classes", root / "configs/Synthetic/retinanet_Lite2_FPN.yaml",
                              "MODEL.RETINANET.NUM_CLASSES", "9")
    for fields, message in (
        (dict(teacher=str(tmp_path / "absent")), "no such folder"),
        (dict(teacher=str(tmp_path / "no_weights")), "model_final.pth is missing"),
        (dict(teacher=str(good), teacher_config="x.yaml"), "--teacher and --teacher-config"),
        (dict(teacher=str(good), teacher_epochs=2.0), "--teacher-epochs"),
        (dict(teacher=str(good), redo=["teacher"]), "--redo teacher"),
        (dict(teacher=str(fcos)), r"is a FCOS .*--detector retinanet"),
        (dict(teacher=str(classes)), r"MODEL.RETINANET.NUM_CLASSES 9; the students' data have \d+ classes"),
    ):
        with pytest.raises(ConfigError, match=message):
            Plan(PipelineOptions(output=out, **fields), root)


def test_pipeline_needs_the_project_root(tmp_path):
    from tkd_d2.errors import ConfigError
    from tkd_d2.pipeline import Pipeline, PipelineOptions

    with pytest.raises(ConfigError, match="train_net.py"):
        Pipeline(PipelineOptions(output=str(tmp_path / "out")), project_root=str(tmp_path))


def test_stage_runner_names_the_failing_stage_and_its_log(tmp_path, capsys):
    from tkd_d2.errors import ConfigError, TKDError
    from tkd_d2.pipeline import SettingsChanged, Stage, StageError, StageRunner

    script = tmp_path / "fail.py"
    script.write_text("import sys\nprint('child output')\nsys.exit(3)\n")
    runner = StageRunner(tmp_path / "out", {"first": Stage(1), "second": Stage(2, ("first",))},
                         cwd=tmp_path)
    with pytest.raises(StageError) as failed:
        runner.timed("first", lambda: runner.run_command("first", [sys.executable, str(script)]))
    log = runner.log_path("first")
    assert str(failed.value) == f"stage 1/2 (first) failed: fail.py exited with code 3. Log: {log}"
    assert capsys.readouterr().out.startswith(f"$ {sys.executable} fail.py\n")  # relative to cwd
    assert "child output" in Path(log).read_text()
    assert runner.status.get("first")["status"] == "failed"
    assert runner.forced("second") is None  # a failed stage did not run

    runner.timed("first", lambda: None)
    assert runner.forced("second") == "first was run again"
    # the project's errors explain themselves; anything else is named by its type
    with pytest.raises(StageError, match=r"^stage 2/2 \(second\) failed: no key X\. Log: "):
        runner.in_process("second", lambda: (_ for _ in ()).throw(ConfigError("no key X.")))
    with pytest.raises(StageError, match=r"failed: ZeroDivisionError: division by zero\. Log: "):
        runner.in_process("second", lambda: 1 / 0)
    assert "Traceback" in Path(runner.log_path("second")).read_text()

    runner.status.update("second", settings={"opts": ["A", "1"]})
    runner.check_settings("second", {"opts": ["A", "1"]})
    with pytest.raises(SettingsChanged, match="--redo second") as changed:
        runner.check_settings("second", {"opts": ["A", "2"]})
    assert isinstance(changed.value, TKDError)
    with pytest.raises(RuntimeError, match="outside"):
        runner.remove(str(tmp_path / "fail.py"))


def test_a_changed_tiling_keeps_the_trained_model_and_a_changed_training_key_stops(tmp_path):
    """TEST.TILE.* only changes inference: a training recorded with other tiles is reused;
    any other changed override of a training still stops the run (precious)."""
    from tkd_d2.pipeline import SettingsChanged, Stage, StageRunner
    from tkd_d2.pipeline.training import train_job

    out = tmp_path / "out"
    runner = StageRunner(out, {"teacher": Stage(1, precious=True)}, cwd=tmp_path)
    folder = str(out / "teacher")

    def job(*opts):
        return train_job("teacher", "the teacher", [sys.executable, "-c", "raise SystemExit(5)"],
                         "config.yaml", ["SOLVER.MAX_ITER", "10", *opts], folder)

    first = job("TEST.TILE.SIZE", "320", "TEST.TILE.OVERLAP", "64")
    runner.status.update("teacher", status="done", settings=first.settings)
    os.makedirs(folder)
    Path(first.outputs[0]).write_bytes(b"weights")
    assert runner.execute(job("TEST.TILE.SIZE", "0", "TEST.TILE.OVERLAP", "64")) is False  # reused
    assert runner.execute(job()) is False
    assert Path(first.outputs[0]).read_bytes() == b"weights"
    changed = job("TEST.TILE.SIZE", "320", "TEST.TILE.OVERLAP", "64")
    changed.settings["opts"][1] = "20"  # SOLVER.MAX_ITER
    with pytest.raises(SettingsChanged, match=r"--redo teacher"):
        runner.execute(changed)
    assert Path(first.outputs[0]).read_bytes() == b"weights"


def test_speed_section_rows_and_note():
    from tkd_d2.pipeline.report import speed_section

    measured = {"params": 10, "images_per_second": 2.0, "ms_per_image": 500.0, "warmup": 1,
                "iters": 3, "threads": 2, "input_sizes": [[128, 128]]}
    section_ = speed_section({"teacher": dict(measured, params=20), "student": measured}, "T", "S")
    assert [(r.label, r.params) for r in section_.rows] == [("T", 20), ("S", 10)]
    assert "1 warm-up + 3" in section_.note and "128x128 px" in section_.note
    assert speed_section(None, "T", "S") is None

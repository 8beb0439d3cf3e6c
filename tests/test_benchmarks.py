"""Smoke tests of the benchmark scripts: each runs with --tiny in a subprocess, writes its JSON
to a temporary folder (never to benchmarks/results/), and records finite positive numbers
under the expected keys. No timing assertions."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import import_bench

pytestmark = pytest.mark.slow  # every test here runs train_net.py or a benchmark script

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
REAL_RESULTS = BENCH / "results"


def _results_snapshot():
    if not REAL_RESULTS.is_dir():
        return {}
    return {p.name: p.stat().st_mtime_ns for p in REAL_RESULTS.iterdir()}


def run_bench(script, args, results_dir, via_env=False, timeout=240):
    """Run ``benchmarks/<script> --tiny`` with results going to ``results_dir``."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.pop("TKD_BENCH_RESULTS_DIR", None)
    if via_env:
        env["TKD_BENCH_RESULTS_DIR"] = str(results_dir)
    else:
        args = [*args, "--results-dir", str(results_dir)]
    before = _results_snapshot()
    proc = subprocess.run([sys.executable, str(BENCH / script), "--tiny", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert _results_snapshot() == before, "a --tiny run touched benchmarks/results/"
    return proc


def load(results_dir, name):
    path = Path(results_dir) / f"{name}.json"
    assert path.is_file(), f"no {path}"
    result = json.loads(path.read_text())
    assert {"machine", "command", "setting"} <= set(result)
    assert "--tiny" in result["command"] and result["setting"]["tiny"] is True
    assert result["machine"]["cores"] >= 1
    return result


def positive(value, where):
    assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, f"{where} = {value!r}"


def all_positive(mapping, keys, where):
    assert set(keys) <= set(mapping), f"{where}: missing {set(keys) - set(mapping)}"
    for k in keys:
        positive(mapping[k], f"{where}.{k}")


def test_bench_cost_tiny(tmp_path):
    proc = run_bench("bench_cost.py", ["--no-memory", "--breakdown"], tmp_path)
    result = load(tmp_path, "cost_retinanet_tiny")
    variants = ["student", "teacher_fwd", "kd_off", "crd", "ded", "drd", "tkd"]
    all_positive(result["seconds_per_iter"], variants, "seconds_per_iter")
    all_positive(result, ["tkd_over_student_plus_teacher_fwd", "tkd_over_student",
                          "crd_over_student_plus_teacher_fwd"], "result")
    assert set(result["kd_share_of_tkd_step"]) == {"crd", "ded", "drd"}
    assert "| tkd |" in proc.stdout
    # the profile of the CRD step's extra time: every group, and the three steps it compares
    crd = result["crd_breakdown"]
    assert set(crd["extra_ms_per_step_by_group"]) == {"convolution", "normalisation", "other ops"}
    all_positive(crd["profiled_ms_per_step"], ["student", "teacher_fwd", "crd"], "profiled_ms_per_step")
    all_positive(crd["aten_ops_per_step"], ["student", "teacher_fwd", "crd"], "aten_ops_per_step")
    assert set(crd["page_faults_per_step"]) == {"student", "teacher_fwd", "crd"}
    assert "CRD step over student + teacher fwd" in proc.stdout


@pytest.mark.parametrize("flags", [["--no-parts"], ["--layouts", "nchw", "nhwc"]])
def test_bench_cost_breakdown_needs_the_crd_distiller_in_one_layout(flags, tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "bench_cost.py"), "--tiny", "--breakdown", *flags,
                           "--results-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--breakdown" in proc.stderr and "--no-parts" in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing measured


def test_bench_cost_memory_child(tmp_path):
    # the per-variant peak-memory run (a child process of the full benchmark), on its own
    proc = subprocess.run([sys.executable, str(BENCH / "bench_cost.py"), "--tiny", "--memory", "student",
                           "--teacher-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=240, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    memory = json.loads(proc.stdout.strip().splitlines()[-1])
    assert memory["variant"] == "student"
    all_positive(memory, ["peak_rss_mb", "rss_before_steps_mb"], "memory")
    assert memory["peak_rss_mb"] >= memory["rss_before_steps_mb"]


def test_bench_feature_kd_tiny(tmp_path):
    proc = run_bench("bench_feature_kd.py", ["--boxes", "3", "20"], tmp_path)
    result = load(tmp_path, "feature_kd_tiny")
    parts = ["total", "fg_bg", "ssim", "instance", "pixel"]
    assert set(result["results"]) == {"3", "20"}
    for boxes, r in result["results"].items():
        where = f"results[{boxes}]"
        all_positive(r["ms"]["ours"], parts, f"{where}.ms.ours")
        all_positive(r["ms"]["naive"], parts, f"{where}.ms.naive")
        all_positive(r["ms"]["ours_new_step"], ["total"], f"{where}.ms.ours_new_step")
        all_positive(r["speedup"], parts, f"{where}.speedup")
        all_positive(r["naive_share"], ["fg_bg", "ssim", "instance", "pixel"], f"{where}.naive_share")
        assert r["agreement"]["all_agree"] is True
        assert set(r["agreement"]["terms"]) == {"fg", "bg", "ssim", "instance", "pixel"}
        for term, t in r["agreement"]["terms"].items():
            assert t["rel_diff"] <= t["tolerance"], term
    assert "| 20 | pixel |" in proc.stdout


def test_bench_deploy_tiny(tmp_path):
    # results directory from $TKD_BENCH_RESULTS_DIR this time
    proc = run_bench("bench_deploy.py", ["--detector", "both"], tmp_path, via_env=True)
    result = load(tmp_path, "deploy_tiny")
    assert set(result["models"]) == {"retinanet", "fcos"}
    for det, models in result["models"].items():
        for role in ("student", "teacher"):
            all_positive(models[role], ["params", "params_backbone", "params_head", "flops", "flops_backbone",
                                        "flops_head"], f"models.{det}.{role}")
        assert models["teacher"]["params"] > models["student"]["params"]
        assert models["teacher"]["flops"] > models["student"]["flops"]
        for mode in ("config", "all"):
            for role in ("student", "teacher"):
                speed = result["speed"][det][mode][role]
                all_positive(speed, ["ms_per_image", "images_per_s", "timed_images"], f"speed.{det}.{mode}.{role}")
        all_positive(result["student_vs_teacher"][det], ["params_ratio", "flops_ratio", "speedup_config",
                                                         "speedup_all"], f"student_vs_teacher.{det}")
    assert "teacher / student" in proc.stdout


def test_bench_runtimes_tiny(tmp_path):
    proc = run_bench("bench_runtimes.py", ["--detector", "fcos", "--pairs", "lite",
                                           "--student-opts", "MODEL.FPN.OUT_CHANNELS", "64"],
                     tmp_path, timeout=600)
    result = load(tmp_path, "deploy_runtimes_tiny")
    run = result["runs"]["fcos/lite/64"]
    for variant in ("teacher eager", "student eager", "student onnxruntime t2", "student torchscript"):
        all_positive(run["speed"][variant], ["ms_per_image", "images_per_s", "timed_images"], variant)
    all_positive(run, ["ort_vs_student_eager", "ort_vs_teacher_eager"], "fcos/lite/64")
    assert run["models"]["student"]["onnxruntime_file_mb"] > 0
    assert run["models"]["student"]["eager_tiled"] is False and run["models"]["student"]["onnxruntime_tile_size"] == 0
    # --student-opts reach the student's config alone
    assert run["models"]["student"]["opts"][-2:] == ["MODEL.FPN.OUT_CHANNELS", "64"]
    assert "MODEL.FPN.OUT_CHANNELS" not in run["models"]["teacher"]["opts"]
    assert "load average" in result["uptime_before"] and "ORT / teacher eager" in proc.stdout


def test_bench_runtimes_tiled_tiny(tmp_path):
    """A large image at its native scale, tiled: every model (eager and exported) runs its tiles."""
    run_bench("bench_runtimes.py", ["--detector", "retinanet", "--pairs", "lite", "--no-torchscript",
                                    "--sizes", "96x160", "--tile", "64", "16", "--name", "tiled_tiny",
                                    "--student-opts", "MODEL.FPN.OUT_CHANNELS", "64"], tmp_path, timeout=600)
    result = load(tmp_path, "tiled_tiny")
    assert result["setting"]["tile"] == [64, 16]
    run = result["runs"]["retinanet/lite/96x160"]
    for role in ("teacher", "student"):
        opts = run["models"][role]["opts"]
        assert opts[opts.index("TEST.TILE.SIZE") + 1] == "64" and opts[opts.index("INPUT.MAX_SIZE_TEST") + 1] == "160"
        assert run["models"][role]["eager_tiled"] is True
    assert run["models"]["student"]["onnxruntime_tile_size"] == 64
    for variant in ("teacher eager", "student eager", "student onnxruntime t2"):
        all_positive(run["speed"][variant], ["ms_per_image", "images_per_s", "timed_images"], variant)


def test_bench_accuracy_tiny(tmp_path):
    out = tmp_path / "runs"
    run_bench("bench_accuracy.py", ["--variants", "baseline", "tkd", "--output-root", str(out)],
              tmp_path, timeout=900)
    result = json.loads((tmp_path / "accuracy_synthetic_retinanet_tiny.json").read_text())
    assert set(result["runs"]) == {"teacher", "baseline@1", "tkd@1"}
    for key, run in result["runs"].items():
        # the numbers are the evaluator's own, read back from its ap_results.json
        written = json.loads(next((Path(run["output"]) / "eval" / "inference").glob("*/ap_results.json")).read_text())
        assert run["bbox"] == written["bbox"], key
    assert set(result["summary"]) == {"teacher", "baseline", "tkd"}
    # a rerun finds every stage done, trains nothing and leaves the results file (its date, git
    # and command) as it was
    written_before = (tmp_path / "accuracy_synthetic_retinanet_tiny.json").stat().st_mtime_ns
    proc = run_bench("bench_accuracy.py", ["--variants", "baseline", "tkd", "--output-root", str(out)],
                     tmp_path, timeout=300)
    assert "train_net.py --config-file" not in proc.stdout
    assert proc.stdout.count("done already") == 3
    assert (tmp_path / "accuracy_synthetic_retinanet_tiny.json").stat().st_mtime_ns == written_before
    # the report: one summary row per model with its AP50 gain over the baseline
    tkd = result["summary"]["tkd"]["AP50"] - result["summary"]["baseline"]["AP50"]
    assert f"| tkd | 1 | " in proc.stdout and f"| {tkd:+.1f} |" in proc.stdout


def test_bench_accuracy_second_teacher_seed_is_its_own_run(tmp_path):
    # --teacher-seed N trains a teacher with SEED N beside the default one (key teacher@N, its
    # own folder), and the TKD students of that command distil from it
    out = tmp_path / "runs"
    run_bench("bench_accuracy.py", ["--variants", "tkd", "--teacher-seed", "3", "--output-root", str(out)],
              tmp_path, timeout=900)
    result = json.loads((tmp_path / "accuracy_synthetic_retinanet_tiny.json").read_text())
    assert set(result["runs"]) == {"teacher@3", "tkd@1"}
    teacher_dir = out / "teacher_seed3"
    assert "SEED: 3" in (teacher_dir / "config.yaml").read_text().splitlines()
    tkd_opts = result["runs"]["tkd@1"]["opts"]
    assert tkd_opts[tkd_opts.index("MODEL.TKD.TEACHER.WEIGHTS") + 1] == str(teacher_dir / "model_final.pth")
    assert result["summary"]["teacher"]["seeds"] == 1
    # its own folder: a TKD run distilled from the default teacher is not reused for it
    assert Path(result["runs"]["tkd@1"]["output"]).name == "tkd_seed1_teacher3"
    # --teacher DIR: students of another command distil from that trained teacher, none is trained
    other = tmp_path / "other"
    proc = run_bench("bench_accuracy.py", ["--stage", "students", "--variants", "tkd", "--teacher", str(teacher_dir),
                                           "--output-root", str(other), "--name", "from_dir"], tmp_path, timeout=600)
    assert not (other / "teacher_R_50").exists() and "retinanet_R_50_FPN.yaml" not in proc.stdout
    from_dir = json.loads((tmp_path / "from_dir.json").read_text())
    assert set(from_dir["runs"]) == {"tkd@1"}
    opts = from_dir["runs"]["tkd@1"]["opts"]
    assert opts[opts.index("MODEL.TKD.TEACHER.WEIGHTS") + 1] == str(teacher_dir / "model_final.pth")
    assert opts[opts.index("MODEL.TKD.TEACHER.CONFIG") + 1] == str(teacher_dir / "config.yaml")


def test_bench_accuracy_teacher_dir_without_weights_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "bench_accuracy.py"), "--tiny", "--stage", "students",
                           "--teacher", str(tmp_path), "--results-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert f"--teacher {tmp_path}: no config.yaml or model_final.pth in it" in proc.stderr.strip().splitlines()[-1]


def test_bench_accuracy_commands_side_by_side_share_one_results_file(tmp_path):
    # two commands (say baseline and tkd students) each hold their own runs in memory and
    # save after every run; neither may drop the other's
    bench_accuracy = import_bench("bench_accuracy")
    bbox = {"AP50": 40.0, "AP": 15.0, "AP75": 8.0}
    first, second = {"runs": {"teacher": {"bbox": bbox}}}, {"runs": {}}
    bench_accuracy.save("acc", first, tmp_path)
    second["runs"]["tkd@1"] = {"bbox": {**bbox, "AP50": 44.0}}
    bench_accuracy.save("acc", second, tmp_path)
    first["runs"]["baseline@1"] = {"bbox": {**bbox, "AP50": 41.0}}
    bench_accuracy.save("acc", first, tmp_path)
    on_disk = json.loads((tmp_path / "acc.json").read_text())
    assert set(on_disk["runs"]) == {"teacher", "tkd@1", "baseline@1"}
    assert on_disk["summary"]["tkd"]["AP50"] == 44.0
    assert "| tkd | 1 | 44.0 (44.0-44.0) | +3.0 |" in bench_accuracy.report(on_disk)


def test_bench_memory_tiny(tmp_path):
    run_bench("bench_memory.py", [], tmp_path)
    result = load(tmp_path, "memory_tiny")
    all_positive(result, ["rss_after_warmup_mb", "rss_end_mb", "rss_max_after_warmup_mb"], "memory")
    assert len(result["samples"]) >= 3
    assert math.isfinite(result["slope_mb_per_100_steps"])


def test_bench_backbones_tiny(tmp_path):
    proc = run_bench("bench_backbones.py", [], tmp_path)
    result = load(tmp_path, "backbones_retinanet_tiny")
    assert set(result["models"]) == {"R-18", "R-50", "Lite0", "Lite2"}
    for name, row in result["models"].items():
        all_positive(row, ["params_M", "backbone_params_M"], name)
        for size in ("own", "common"):
            all_positive(row[size], ["gflops_backbone_fpn", "gflops_head", "images_per_second"], f"{name}.{size}")
    # the lightweight student is the smallest detector
    assert min(result["models"], key=lambda n: result["models"][n]["params_M"]) == "Lite0"
    assert "| Lite0 |" in proc.stdout


def test_bench_cost_two_layouts_tiny(tmp_path):
    # the step-speed table: teacher, student and TKD step in both memory layouts, interleaved
    run_bench("bench_cost.py", ["--no-memory", "--backbones", "lite", "--layouts", "nchw", "nhwc",
                                "--no-parts", "--name", "cost_layouts_tiny"], tmp_path)
    result = load(tmp_path, "cost_layouts_tiny")
    models = ["teacher", "student", "teacher_fwd", "kd_off", "tkd"]
    all_positive(result["seconds_per_iter"], [f"{m}_{l}" for m in models for l in ("nchw", "nhwc")],
                 "seconds_per_iter")
    assert set(result["speedup_nhwc_over_nchw"]) == set(models)
    for layout in ("nchw", "nhwc"):
        all_positive(result["by_layout"][layout], ["tkd_over_student_plus_teacher_fwd"], layout)


def test_bench_large_images_tiny(tmp_path):
    # the crops route end to end: the main job (tools/tkd_pipeline.py --tiny) with defect crops
    # for training and tiled inference (eager, evaluation and export); every stage completes,
    # the trainings crop, the export records the tiles (test_pipeline.py's crops-and-tiles run)
    proc = run_bench("bench_large_images.py", ["--routes", "crops", "--output-root", str(tmp_path / "out")],
                     tmp_path, timeout=900)
    result = load(tmp_path, "large_images_synthetic_retinanet_tiny")
    route = result["routes"]["crops"]
    for model in ("teacher", "baseline", "tkd"):
        positive(route["models"][model]["train_seconds"], f"{model} train_seconds")
    import yaml

    out = tmp_path / "out" / "large_images_synthetic_retinanet_tiny" / "crops"
    config = yaml.safe_load((out / "tkd" / "config.yaml").read_text())
    assert config["INPUT"]["DEFECT_CROP"]["ENABLED"] is True and config["INPUT"]["DEFECT_CROP"]["SIZE"] == 128
    assert yaml.safe_load((out / "eval_tkd" / "config.yaml").read_text())["TEST"]["TILE"]["SIZE"] == 128
    assert set(route["planned"]) >= {"teacher", "eval_tkd"}
    # the pipeline's own output (streamed through the benchmark's): every stage, each model
    # trained on crops and evaluated, the export tiled as configured, the report
    for k in range(1, 7):
        assert f"[stage {k}/6]" in proc.stdout
    for model in ("teacher", "baseline", "tkd"):
        assert "DefectCrop(size=128" in (out / "logs" / f"{model}.log").read_text()
        assert len(list((out / f"eval_{model}" / "inference").glob("*/ap_results.json"))) == 1, model
    deploy = json.loads(next(out.glob("deploy/**/deploy.json")).read_text())
    assert deploy["tile"]["size"] == 128 and deploy["tile"]["overlap"] == 32
    assert (out / "report.md").is_file()

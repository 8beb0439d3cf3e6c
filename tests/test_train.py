"""Short real trainings on a tiny synthetic set, then --eval-only with the AP table.

The trainings the session shares (tests/tiny_runs.py) are read here, not run again: the R-18
RetinaNet student (``tiny_student``) and the tiny pipeline's Lite0 baseline and TKD student
(``tiny_pipeline``: train_net.py trains and evaluates them). The FCOS student trains here.
"""
import json
import math

import pytest

from helpers import TINY, run_train_net
from tiny_runs import STUDENT_CONFIG

from tkd_d2.config import DEFAULT_TKD_PARTS
from tkd_d2.modeling.kd_weights import KD_TERMS as TERM_TABLE

pytestmark = pytest.mark.slow  # every test here runs train_net.py or a benchmark script

CLASSES = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
KD_TERMS = ["loss_crd_cls", "loss_crd_box", "loss_ded_fg", "loss_ded_bg", "loss_ded_ssim",
            "loss_drd_instance", "loss_drd_pixel"]
TKD_LITE = "configs/Synthetic/tkd_retinanet_Lite2_to_Lite0.yaml"


def metrics_of(out):
    return [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]


def assert_trained(out):
    """A finished training in ``out``: the final checkpoint, finite logged losses."""
    assert (out / "model_final.pth").is_file()
    losses = [m["total_loss"] for m in metrics_of(out) if "total_loss" in m]
    assert losses and all(math.isfinite(v) for v in losses)


def assert_evaluated(results_file, log):
    """--eval-only's results: AP, AP50, AP75 and the per-class AP50 in the classes' order in
    ``results_file``, the per-class AP50 table printed in ``log``."""
    bbox = json.loads(results_file.read_text())["bbox"]
    for key in ("AP", "AP50", "AP75"):
        assert key in bbox
    assert [k for k in bbox if k.startswith("AP50-")] == [f"AP50-{c}" for c in CLASSES]
    # the per-class AP50 table is printed
    assert "| class" in log and "AP50" in log and "rolled-in_scale" in log


def eval_only(cfg, weights, out, data):
    proc = run_train_net(["--eval-only", "--config-file", cfg, *TINY, "OUTPUT_DIR", out,
                          "MODEL.WEIGHTS", weights], data)
    assert_evaluated(out / "inference/synthetic_defects_test/ap_results.json", proc.stdout + proc.stderr)


@pytest.mark.parametrize("config", ["fcos_R_18_FPN"])
def test_train_then_eval_only(tmp_path, config):
    out = tmp_path / "out"
    cfg = f"configs/Synthetic/{config}.yaml"
    run_train_net(["--config-file", cfg, *TINY, "SOLVER.MAX_ITER", "20", "OUTPUT_DIR", out,
                   "TEST.EVAL_PERIOD", "0"], tmp_path / "data")
    assert_trained(out)
    eval_only(cfg, out / "model_final.pth", tmp_path / "ev", tmp_path / "data")


def test_retinanet_r18_trains_then_eval_only(tiny_student, tmp_path):
    """The R-18 RetinaNet (the session's tiny student, trained by train_net.py)."""
    assert_trained(tiny_student["out"])
    eval_only(STUDENT_CONFIG, tiny_student["out"] / "model_final.pth", tmp_path / "ev", tiny_student["data"])


def test_retinanet_lite0_trains_then_eval_only(tiny_pipeline):
    """The Lite0 RetinaNet: the tiny pipeline's baseline, trained and then evaluated
    (--eval-only, the plain config) by train_net.py."""
    proc, out = tiny_pipeline["first"], tiny_pipeline["out"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    stages = json.loads((out / "stages.json").read_text())["stages"]
    assert "train_net.py --config-file" in stages["baseline"]["command"]
    assert "retinanet_Lite0_FPN.yaml" in stages["baseline"]["command"]
    assert "train_net.py --eval-only --config-file" in stages["eval_baseline"]["command"]
    assert "retinanet_Lite0_FPN.yaml" in stages["eval_baseline"]["command"]
    assert_trained(out / "baseline")
    assert_evaluated(out / "eval_baseline/inference/synthetic_defects_test/ap_results.json",
                     (out / "logs" / "eval_baseline.log").read_text())


def test_tkd_distillation_writes_a_plain_student_checkpoint(tiny_pipeline, tmp_path):
    """The tiny pipeline's TKD student (Lite2 teacher -> Lite0 student, trained by
    train_net.py with the TKD config): the default parts' KD terms logged and no other, a checkpoint of the student's
    own tensors that the plain config evaluates, and so does the TKD config without its
    teacher."""
    import torch

    assert tiny_pipeline["first"].returncode == 0, tiny_pipeline["first"].stderr[-3000:]
    out = tiny_pipeline["out"]
    tkd, teacher_out = out / "tkd", out / "teacher"
    metrics = metrics_of(tkd)
    log = (tkd / "log.txt").read_text()
    assert "TKD teacher:" in log and "tensors matched" in log
    default = [t for t in KD_TERMS if TERM_TABLE[t][2] in DEFAULT_TKD_PARTS]  # the part each term is of
    logged = [m for m in metrics if default[0] in m]
    assert logged
    for m in logged:
        for term in default:
            assert term in m and math.isfinite(m[term]), (term, m)
        assert not set(KD_TERMS) - set(default) & set(m), m  # a part left out is not computed
    for term in default:  # each trains: past the calibration window, above 0
        assert any(m[term] > 0 for m in logged), term

    state = torch.load(tkd / "model_final.pth", weights_only=True)["model"]
    teacher_state = torch.load(teacher_out / "model_final.pth", weights_only=True)["model"]
    baseline_state = torch.load(out / "baseline" / "model_final.pth", weights_only=True)["model"]
    assert not any(k.startswith(("teacher", "student.", "_teacher")) for k in state)
    # the plain student's tensors (the baseline's names and shapes), and the distiller's own
    # (align convs, balance scales) that a resumed run needs
    assert all(state[k].shape == v.shape for k, v in baseline_state.items())
    assert all(k.startswith("distill_") for k in set(state) - set(baseline_state)), set(state) - set(baseline_state)
    # the student's tensors moved away from the teacher's: they are the student's own
    assert not torch.equal(state["head.cls_score.weight"], teacher_state["head.cls_score.weight"])
    assert not any(torch.equal(v, teacher_state[k]) for k, v in state.items()
                   if k in teacher_state and v.shape == teacher_state[k].shape)

    # the plain student config evaluated the distilled checkpoint (stage eval_tkd)
    stages = json.loads((out / "stages.json").read_text())["stages"]
    assert "--eval-only" in stages["eval_tkd"]["command"] and "/tkd/model_final.pth" in stages["eval_tkd"]["command"]
    assert "retinanet_Lite0_FPN.yaml" in stages["eval_tkd"]["command"]
    assert (out / "eval_tkd/inference/synthetic_defects_test/ap_results.json").is_file()
    # the TKD config evaluates its student the same way, with no teacher to load
    run_train_net(["--eval-only", "--config-file", TKD_LITE, *TINY, "OUTPUT_DIR", tmp_path / "ev_tkd",
                   "MODEL.WEIGHTS", tkd / "model_final.pth", "MODEL.TKD.TEACHER.WEIGHTS", ""],
                  tiny_pipeline["tmp"] / "datasets")
    assert (tmp_path / "ev_tkd/inference/synthetic_defects_test/ap_results.json").is_file()


def test_tkd_teacher_is_evaluated_before_training(tiny_pipeline, tmp_path, monkeypatch):
    """MODEL.TKD.EVAL_TEACHER_FIRST: the TKD hook of the Trainer (what train_net.py trains
    with) evaluates the teacher (the tiny pipeline's trained Lite2) before the first step and
    logs its AP with the step's metrics."""
    from tkd_d2.config import load_config
    from tkd_d2.engine import Trainer

    teacher = tiny_pipeline["out"] / "teacher"
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tiny_pipeline["tmp"] / "datasets"))
    cfg = load_config(TKD_LITE, [*TINY, "SOLVER.MAX_ITER", "1", "MODEL.TKD.EVAL_TEACHER_FIRST", "True",
                                 "MODEL.TKD.TEACHER.CONFIG", str(teacher / "config.yaml"),
                                 "MODEL.TKD.TEACHER.WEIGHTS", str(teacher / "model_final.pth"),
                                 "OUTPUT_DIR", str(tmp_path / "tkd")], device="cpu")
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    # the teacher was reported and evaluated before training
    metrics = metrics_of(tmp_path / "tkd")
    assert any("teacher/AP50" in m for m in metrics), metrics
    assert any("loss_crd_cls" in m for m in metrics)

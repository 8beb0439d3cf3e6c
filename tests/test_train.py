"""Short real trainings on a tiny synthetic set, then --eval-only with the AP table."""
import json
import math

import pytest

from helpers import TINY, run_train_net

pytestmark = pytest.mark.slow  # every test here runs train_net.py or a benchmark script


@pytest.mark.parametrize("config", ["retinanet_R_18_FPN", "fcos_R_18_FPN", "retinanet_Lite0_FPN"])
def test_train_then_eval_only(tmp_path, config):
    out = tmp_path / "out"
    cfg = f"configs/Synthetic/{config}.yaml"
    run_train_net(["--config-file", cfg, *TINY, "SOLVER.MAX_ITER", "20", "OUTPUT_DIR", out,
                   "TEST.EVAL_PERIOD", "0"], tmp_path / "data")
    assert (out / "model_final.pth").is_file()
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    losses = [m["total_loss"] for m in metrics if "total_loss" in m]
    assert losses and all(math.isfinite(v) for v in losses)

    proc = run_train_net(["--eval-only", "--config-file", cfg, *TINY, "OUTPUT_DIR", tmp_path / "ev",
                          "MODEL.WEIGHTS", out / "model_final.pth"], tmp_path / "data")
    log = proc.stdout + proc.stderr
    results = json.loads((tmp_path / "ev/inference/synthetic_defects_test/ap_results.json").read_text())
    bbox = results["bbox"]
    for key in ("AP", "AP50", "AP75"):
        assert key in bbox
    classes = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
    assert [k for k in bbox if k.startswith("AP50-")] == [f"AP50-{c}" for c in classes]
    # the per-class AP50 table is printed
    assert "| class" in log and "AP50" in log and "rolled-in_scale" in log


def test_tkd_distillation_writes_a_plain_student_checkpoint(tmp_path):
    data = tmp_path / "data"
    teacher_yaml = "configs/Synthetic/retinanet_R_18_FPN.yaml"  # small teacher: a fast test
    teacher_out = tmp_path / "teacher"
    run_train_net(["--config-file", teacher_yaml, *TINY, "SOLVER.MAX_ITER", "4",
                   "OUTPUT_DIR", teacher_out], data)
    out = tmp_path / "tkd"
    run_train_net(["--config-file", "configs/Synthetic/tkd_retinanet_R_50_to_R_18.yaml", *TINY,
                   "SOLVER.MAX_ITER", "20", "MODEL.TKD.WARMUP_ITERS", "5", "OUTPUT_DIR", out,
                   "MODEL.TKD.EVAL_TEACHER_FIRST", "True",
                   "MODEL.TKD.TEACHER.CONFIG", teacher_yaml,
                   "MODEL.TKD.TEACHER.WEIGHTS", teacher_out / "model_final.pth"], data)
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    kd_terms = ["loss_crd_cls", "loss_crd_box", "loss_ded_fg", "loss_ded_bg", "loss_ded_ssim",
                "loss_drd_instance", "loss_drd_pixel"]
    # the teacher was reported and evaluated before training
    assert any("teacher/AP50" in m for m in metrics)
    log = (out / "log.txt").read_text()
    assert "TKD teacher:" in log and "tensors matched" in log
    logged = [m for m in metrics if "loss_crd_cls" in m]
    assert logged
    for m in logged:
        for term in kd_terms:
            assert term in m and math.isfinite(m[term]), (term, m)
    assert any(m["loss_ded_ssim"] > 0 for m in logged)

    import torch

    state = torch.load(out / "model_final.pth", weights_only=True)["model"]
    teacher_state = torch.load(teacher_out / "model_final.pth", weights_only=True)["model"]
    assert not any(k.startswith(("teacher", "student.", "_teacher")) for k in state)
    # the student's tensors moved away from the teacher's: they are the student's own
    assert not torch.equal(state["head.cls_score.weight"], teacher_state["head.cls_score.weight"])

    run_train_net(["--eval-only", "--config-file", "configs/Synthetic/retinanet_R_18_FPN.yaml", *TINY,
                   "OUTPUT_DIR", tmp_path / "ev", "MODEL.WEIGHTS", out / "model_final.pth"], data)
    assert (tmp_path / "ev/inference/synthetic_defects_test/ap_results.json").is_file()
    # the TKD config evaluates its student the same way, with no teacher to load
    run_train_net(["--eval-only", "--config-file", "configs/Synthetic/tkd_retinanet_R_50_to_R_18.yaml",
                   *TINY, "OUTPUT_DIR", tmp_path / "ev_tkd", "MODEL.WEIGHTS", out / "model_final.pth",
                   "MODEL.TKD.TEACHER.WEIGHTS", ""], data)
    assert (tmp_path / "ev_tkd/inference/synthetic_defects_test/ap_results.json").is_file()

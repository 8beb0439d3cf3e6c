"""Short real trainings on a tiny synthetic set, then --eval-only with the AP table."""
import json

import pytest

from helpers import TINY, run_train_net


@pytest.mark.parametrize("config", ["retinanet_R_18_FPN", "fcos_R_18_FPN"])
def test_train_then_eval_only(tmp_path, config):
    out = tmp_path / "out"
    cfg = f"configs/Synthetic/{config}.yaml"
    run_train_net(["--config-file", cfg, *TINY, "SOLVER.MAX_ITER", "20", "OUTPUT_DIR", out,
                   "TEST.EVAL_PERIOD", "0"], tmp_path / "data")
    assert (out / "model_final.pth").is_file()
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    losses = [m["total_loss"] for m in metrics if "total_loss" in m]
    assert losses and all(v == v for v in losses)  # finite, not NaN

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

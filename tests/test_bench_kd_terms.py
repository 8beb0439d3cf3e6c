"""Smoke test of benchmarks/bench_kd_terms.py: --tiny (a tiny synthetic set, a random teacher)
writes its JSON to a temporary folder with finite numbers for every KD term and FPN level."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ALL_PARTS

pytestmark = pytest.mark.slow  # runs a benchmark script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_kd_terms.py"
KD_TERMS = ["loss_crd_cls", "loss_crd_box", "loss_ded_fg", "loss_ded_bg", "loss_ded_ssim",
            "loss_drd_instance", "loss_drd_pixel"]
FEATURE_TERMS = [t for t in KD_TERMS if t.startswith(("loss_ded_", "loss_drd_"))]
SUMS = ["detection", "kd", "total"]


def finite(entry, where, low=-math.inf, high=math.inf):
    """A stats entry of the script ({mean, std, min, max, n}) with finite values in [low, high]."""
    assert isinstance(entry, dict) and entry["n"] >= 1, f"{where}: {entry!r}"
    for key in ("mean", "std", "min", "max"):
        value = entry[key]
        assert isinstance(value, (int, float)) and math.isfinite(value), f"{where}.{key} = {value!r}"
    assert low <= entry["min"] <= entry["mean"] <= entry["max"] <= high, f"{where}: {entry!r}"
    assert entry["std"] >= 0, where


def test_bench_kd_terms_tiny(tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.pop("TKD_BENCH_RESULTS_DIR", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--results-dir", str(tmp_path),
                           "--opts", "MODEL.TKD.PARTS", ALL_PARTS], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    path = tmp_path / "kd_terms_synthetic_defects_fcos_tiny.json"
    assert path.is_file(), sorted(p.name for p in tmp_path.iterdir())
    result = json.loads(path.read_text())
    assert {"machine", "command", "setting", "terms", "results", "masks"} <= set(result)
    setting = result["setting"]
    assert setting["tiny"] is True and "--tiny" in result["command"]
    # measured past the KD warm-up (full weights), through the 1x1 align conv (64 -> 128 wide)
    assert setting["iter"] >= setting["warmup_iters"] and setting["align_conv"] is True
    # the balance (on by default) calibrated first: its window's KD terms count 0
    assert setting["balance"] is True and setting["calibration_batches"] >= 1
    levels = setting["in_features"]
    assert levels == ["p3", "p4", "p5", "p6", "p7"] and len(setting["strides"]) == len(levels)

    assert set(result["terms"]["kd"]) == set(KD_TERMS)
    assert result["terms"]["detection"] == ["loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"]
    r = result["results"]
    for term in result["terms"]["detection"] + KD_TERMS + SUMS:
        finite(r["losses"][term], f"losses.{term}")
        finite(r["loss_ratio_to_detection"][term], f"loss_ratio_to_detection.{term}")
        finite(r["param_grad_norm"][term], f"param_grad_norm.{term}", low=0)
        finite(r["param_grad_max_tensor_norm"][term], f"param_grad_max_tensor_norm.{term}", low=0)
        for level in ["all"] + levels:
            finite(r["fpn_grad_norm"][term][level], f"fpn_grad_norm.{term}.{level}", low=0)
        if term == "detection":
            continue
        finite(r["param_grad_cosine_with_detection"][term], f"param_grad_cosine.{term}", -1, 1)
        finite(r["fpn_grad_cosine_with_detection"][term]["all"], f"fpn_grad_cosine.{term}.all", -1, 1)
        for level in levels:  # None (no stats) where the detection loss leaves a level without gradient
            entry = r["fpn_grad_cosine_with_detection"][term].get(level)
            if entry is not None:
                finite(entry, f"fpn_grad_cosine.{term}.{level}", -1, 1)
    assert r["losses"]["detection"]["mean"] > 0
    assert r["loss_ratio_to_detection"]["detection"]["mean"] == pytest.approx(1.0)
    # every KD term drives the student's parameters (through its FPN or, for CRD, its head)
    for term in KD_TERMS:
        assert r["param_grad_norm"][term]["mean"] > 0, term
    # the feature terms reach the align conv; the detection loss never does
    for term in FEATURE_TERMS:
        finite(r["align"]["weight_grad_norm"][term], f"align.weight_grad_norm.{term}", low=0)
        assert r["align"]["weight_grad_norm"][term]["mean"] > 0, term
        finite(r["align"]["weight_over_fpn_grad"][term], f"align.weight_over_fpn_grad.{term}", low=0)
        finite(r["align"]["weight_over_param_grad"][term], f"align.weight_over_param_grad.{term}", low=0)
    assert r["align"]["weight_grad_norm"]["detection"]["max"] == 0

    for level in levels:
        finite(r["relative_error"][level], f"relative_error.{level}", low=0)
        for side in ("student", "student_aligned", "teacher"):
            for key in ("mean_abs", "std"):
                finite(r["feature_scale"][level][side][key], f"feature_scale.{level}.{side}.{key}", low=0)
        m = result["masks"][level]
        assert 0 < m["fg_cell_share"] <= 1 and m["boxes"] > 0 and m["cells_per_box_mean"] >= 1, (level, m)
        assert 0 <= m["boxes_zero_cells"] + m["boxes_one_cell"] <= m["boxes"], (level, m)
        assert 0 <= m["images_without_background_share"] <= 1, (level, m)
    assert "| loss_ded_fg |" in proc.stdout and "| p7 |" in proc.stdout

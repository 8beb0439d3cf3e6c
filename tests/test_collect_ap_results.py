"""benchmarks/collect_ap_results.py: evaluations made outside bench_accuracy land in one
results file of its form; a folder without its ap_results.json is refused."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "collect_ap_results.py"


def _eval_dir(root, ap50):
    folder = root / "inference" / "some_test"
    folder.mkdir(parents=True)
    (folder / "ap_results.json").write_text(json.dumps({"bbox": {"AP": ap50 / 2, "AP50": ap50, "AP75": 1.0}}))
    return root


def _run(tmp_path, *args):
    return subprocess.run([sys.executable, str(SCRIPT), "--name", "collected", "--results-dir", str(tmp_path / "results"),
                           "--command", "by hand", *args], capture_output=True, text=True, cwd=ROOT)


def test_collects_runs_and_replaces_a_key(tmp_path):
    teacher, tkd = _eval_dir(tmp_path / "t", 50.0), _eval_dir(tmp_path / "s", 40.0)
    assert _run(tmp_path, f"teacher={teacher}", f"tkd@1={tkd}").returncode == 0
    assert _run(tmp_path, f"tkd@1={teacher}").returncode == 0  # the same key again: replaced
    runs = json.loads((tmp_path / "results" / "collected.json").read_text())["runs"]
    assert {k: r["bbox"]["AP50"] for k, r in runs.items()} == {"teacher": 50.0, "tkd@1": 50.0}
    assert runs["teacher"]["command"] == "by hand"


def test_a_folder_without_results_is_refused(tmp_path):
    proc = _run(tmp_path, f"tkd@1={tmp_path}")
    assert proc.returncode != 0 and "expected KEY=DIR" in proc.stderr

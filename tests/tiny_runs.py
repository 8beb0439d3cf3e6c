"""The tiny trainings the tests share. Each fixture here trains once per test session, when
a test first asks for it; the tests that only need trained weights, or the files of a
finished run, read them instead of training their own. conftest.py makes them available to
every test module.

``tiny_pipeline``: ``tools/tkd_pipeline.py --tiny`` end to end (16 train / 8 test synthetic
    images of 128 px, 2 iterations per training, batch 2): the EfficientNet-Lite2 teacher,
    the Lite0 baseline student and the TKD student, trained and evaluated by train_net.py,
    then pictures, speed and the ONNX export. test_pipeline.py checks the run itself;
    test_train.py checks its trainings and evaluations as train_net.py's.
``tiny_student``: an R-18 RetinaNet trained by train_net.py for 8 iterations, checkpoints
    every 4, under PYTORCH_JIT=0. test_reliability.py holds a killed and resumed run equal
    to it; test_train.py evaluates it.

The tests read these runs' files and write their own elsewhere; only test_pipeline.py's
rerun tests run the pipeline again in its output folder (a rerun reuses every stage, and
``--redo eval_tkd`` evaluates the same weights again).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

# (no tkd_d2 import here: conftest.py imports this module for every test file)
ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "tools" / "tkd_pipeline.py"
# Tiny scale; a score threshold of 0 gives the barely trained models boxes, hence AP
# numbers that are not NaN; few candidates keep inference fast.
PIPELINE_ARGS = ["--tiny", "--max-iter", "2", "--num-images", "2", "--speed-iters", "1", "2"]
PIPELINE_OPTS = [
    "--opts",
    "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0",
    "MODEL.RETINANET.TOPK_CANDIDATES_TEST", "50",
    "TEST.DETECTIONS_PER_IMAGE", "20",
]

STUDENT_CONFIG = "configs/Synthetic/retinanet_R_18_FPN.yaml"


def student_args():
    """train_net.py arguments of ``tiny_student`` (OUTPUT_DIR aside): 8 iterations,
    checkpoints after iterations 3 and 7, no evaluation after training."""
    from helpers import TINY

    return ["--config-file", STUDENT_CONFIG, *TINY, "SOLVER.MAX_ITER", 8, "SOLVER.CHECKPOINT_PERIOD", 4,
            "SEED", 3, "DATASETS.TEST", "()"]


def run_pipeline(out, env, *args, cwd=None):
    """``tools/tkd_pipeline.py --output out *args`` in a subprocess."""
    cmd = [sys.executable, str(PIPELINE), "--output", str(out), *args]
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """{"tmp", "out", "env", "first"}: the folder holding the run (its datasets/ too), the
    pipeline's output folder, the environment it ran with, and its CompletedProcess."""
    tmp = tmp_path_factory.mktemp("pipeline")
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp / "datasets"))
    out = tmp / "out"
    proc = run_pipeline(out, env, *PIPELINE_ARGS, *PIPELINE_OPTS, cwd=str(tmp))
    return {"tmp": tmp, "out": out, "env": env, "first": proc}


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory):
    """{"args", "out", "data"}: the train_net.py arguments (OUTPUT_DIR aside), the output
    folder and the datasets root of the R-18 RetinaNet student's run."""
    from helpers import run_train_net

    tmp = tmp_path_factory.mktemp("tiny_student")
    out, data = tmp / "out", tmp / "data"
    args = student_args()
    # PYTORCH_JIT=0 as test_reliability.py's resumed runs need (see there)
    run_train_net([*args, "OUTPUT_DIR", out], data, env={"PYTORCH_JIT": "0"})
    return {"args": args, "out": out, "data": data}

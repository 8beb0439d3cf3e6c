"""Shared helpers for tests that run train_net.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

from tkd_d2.config import TKD_PARTS
from tkd_d2.pipeline import TINY_OPTS

ROOT = Path(__file__).resolve().parents[1]

# The pipeline's --tiny scale (seconds per training on 2 CPU cores), a short schedule.
TINY = TINY_OPTS + ["SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", "1000"]
# MODEL.TKD.PARTS for tests that hold every part, whatever the default runs
ALL_PARTS = json.dumps(list(TKD_PARTS))


def _import_script(folder, name):
    """The module of the command-line script ``<folder>/<name>.py`` (for its constants and functions)."""
    import importlib

    where = str(ROOT / folder)
    sys.path.insert(0, where)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(where)


def import_bench(name):
    """The module of ``benchmarks/<name>.py``."""
    return _import_script("benchmarks", name)


def import_tool(name):
    """The module of ``tools/<name>.py``."""
    return _import_script("tools", name)


def run_train_net(args, data_root, check=True, timeout=900, env=None):
    """Run train_net.py with ``args`` on the datasets under ``data_root``; ``env``: more
    environment variables."""
    env = dict(os.environ, DETECTRON2_DATASETS=str(data_root), PYTHONWARNINGS="ignore", **(env or {}))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train_net.py"), *map(str, args)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"train_net.py {args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc

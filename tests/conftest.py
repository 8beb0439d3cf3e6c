"""Shared test setup: point $DETECTRON2_DATASETS at ../shared/datasets when it exists."""
import os
import pathlib

import pytest

_SHARED_DATASETS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "datasets"
if _SHARED_DATASETS.is_dir():
    # Before tkd_d2 is imported: the builtin datasets are registered under this root.
    os.environ.setdefault("DETECTRON2_DATASETS", str(_SHARED_DATASETS))


@pytest.fixture
def neu_det_root():
    """The folder holding NEU-DET/ (the real data), or skip the test."""
    root = os.environ.get("DETECTRON2_DATASETS", "datasets")
    if not os.path.isdir(os.path.join(root, "NEU-DET")):
        pytest.skip(
            f"real NEU-DET not found under $DETECTRON2_DATASETS ({os.path.abspath(root)}); "
            "set DETECTRON2_DATASETS to the folder holding NEU-DET/ to run this test"
        )
    return root


# The trainings the tests share, once per session (tests/tiny_runs.py).
from tiny_runs import tiny_pipeline, tiny_student  # noqa: E402,F401


# Under pytest-xdist (`-n 2`): one torch thread per worker process, and its subprocesses too
# (two workers on two cores, not four threads fighting for them); the tests that read the
# shared trainings run in one worker, so each is trained once.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

SHARED_TRAININGS = {"tiny_pipeline", "tiny_student"}


def pytest_collection_modifyitems(config, items):
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        # a test that asks for one at run time (request.getfixturevalue) is marked shared_trainings
        if SHARED_TRAININGS & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("shared_trainings"):
            item.add_marker(pytest.mark.xdist_group("shared_trainings"))

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

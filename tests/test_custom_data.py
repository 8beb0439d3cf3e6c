"""A user's own COCO / VOC data: the pipeline's --dataset custom, the one-line errors for bad
input (boxes outside the image, unreadable images, unknown categories), the dataset
inspection and the settings it derives, and the epoch schedule.

The data are the synthetic generator's images written out as a user's COCO json.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tkd_d2.data import SYNTHETIC_CLASSES, generate_synthetic_defects

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "tools" / "tkd_pipeline.py"


def write_coco(path, dicts, classes=SYNTHETIC_CLASSES, category_ids=None):
    """Write dataset dicts (XYXY_ABS boxes) as a COCO json; category ids start at 1 unless
    ``category_ids`` gives them. Returns the json dict."""
    ids = list(category_ids) if category_ids else list(range(1, len(classes) + 1))
    images, annotations = [], []
    for image_id, d in enumerate(dicts, start=1):
        images.append({"id": image_id, "file_name": os.path.basename(d["file_name"]),
                       "width": d["width"], "height": d["height"]})
        for a in d["annotations"]:
            x0, y0, x1, y1 = (float(v) for v in a["bbox"])
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": ids[a["category_id"]], "iscrowd": 0,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)})
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": i, "name": n} for i, n in zip(ids, classes)]}
    Path(path).write_text(json.dumps(data))
    return data


@pytest.fixture(scope="module")
def coco_set(tmp_path_factory):
    """16 train / 8 test synthetic 128 px images as a user's COCO set (category ids 10, 20, ...
    to show that the ids need not be 1..N)."""
    tmp = tmp_path_factory.mktemp("coco_set")
    ids = [10 * (i + 1) for i in range(len(SYNTHETIC_CLASSES))]
    out = {"root": tmp}
    for split, n in (("train", 16), ("test", 8)):
        dicts = generate_synthetic_defects(str(tmp / split), n, image_size=128, seed=3, split=split)
        write_coco(tmp / f"{split}.json", dicts, category_ids=ids)
        out[split] = f"my_{split}:coco:{tmp / split / 'IMAGES'}:{tmp / f'{split}.json'}"
    return out


def run_tool(tool, args, env=None, cwd=None, timeout=900):
    cmd = [sys.executable, str(REPO / "tools" / tool), *args]
    return subprocess.run(cmd, env=env or dict(os.environ), cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def explain(proc):
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-4000:]}"


# ------------------------------------------------------------------------------ pipeline
@pytest.mark.slow
def test_pipeline_runs_on_a_users_coco_set(coco_set, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"))
    proc = run_tool("tkd_pipeline.py", [
        "--dataset", "custom", "--train", coco_set["train"], "--test", coco_set["test"],
        "--tiny", "--max-iter", "1", "--num-images", "1", "--speed-iters", "0", "1",
        "--output", str(out), "--opts", "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0",
        "MODEL.RETINANET.TOPK_CANDIDATES_TEST", "20", "TEST.DETECTIONS_PER_IMAGE", "10",
    ], env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, explain(proc)
    assert "[stage 1/6] preparing the my_train (test: my_test) dataset" in proc.stdout
    assert "synthetic" not in proc.stdout.split("[stage 2/6]")[0].lower()
    commands = [l for l in proc.stdout.splitlines() if l.startswith("$ ")]
    train_tkd = next(c for c in commands if "tkd_retinanet" in c)
    # the teacher is built from the config dumped beside its weights (the data overrides included)
    assert f"MODEL.TKD.TEACHER.CONFIG {out / 'teacher' / 'config.yaml'}" in train_tkd
    teacher_cfg = (out / "teacher" / "config.yaml").read_text()
    assert "my_train" in teacher_cfg
    report = (out / "report.md").read_text()
    assert report.splitlines()[0].endswith("on my_train (test: my_test)")
    # the user's class names, in the per-class table and the evaluation
    ap, = (out / "eval_tkd" / "inference" / "my_test").glob("ap_results.json")
    bbox = json.loads(ap.read_text())["bbox"]
    assert {k[len("AP50-"):] for k in bbox if k.startswith("AP50-")} <= set(SYNTHETIC_CLASSES)
    assert "| crazing |" in report or "| scratches |" in report
    assert list((out / "pictures").glob("*.png"))


def test_custom_dataset_needs_train_and_test_entries(tmp_path):
    from tkd_d2.errors import ConfigError
    from tkd_d2.pipeline import PipelineOptions

    with pytest.raises(ConfigError, match="--train and --test"):
        PipelineOptions(dataset="custom", train=["a:coco:/x:/y.json"]).resolved()
    with pytest.raises(ConfigError, match="for --dataset custom"):
        PipelineOptions(dataset="synthetic", train=["a:coco:/x:/y.json"]).resolved()
    with pytest.raises(Exception, match="'name:coco:images_dir:annotations.json'"):
        PipelineOptions(dataset="custom", train=["a:coco:/x"], test=["b:coco:/x:/y"]).resolved()


def test_custom_options_become_dataset_overrides(coco_set, tmp_path):
    from tkd_d2.pipeline import Pipeline

    pipeline = Pipeline({"dataset": "custom", "train": [coco_set["train"]], "test": [coco_set["test"]],
                         "output": str(tmp_path / "out")}, project_root=str(REPO))
    opts = pipeline.eval_opts
    pairs = dict(zip(opts[::2], opts[1::2]))
    assert pairs["DATASETS.TRAIN"] == "('my_train',)" and pairs["DATASETS.TEST"] == "('my_test',)"
    assert pipeline.trained_configs()["teacher"].DATASETS.TRAIN == ("my_train",)
    assert pairs["MODEL.RETINANET.NUM_CLASSES"] == str(len(SYNTHETIC_CLASSES))
    assert pipeline.classes == list(SYNTHETIC_CLASSES)
    assert pipeline.options.dataset_label() == "my_train (test: my_test)"


# ------------------------------------------------------------------------------ bad input
def _broken_copy(coco_set, tmp_path, how):
    """A copy of the COCO train set with one user mistake: ``truncated`` (an image cut in
    half), ``outside`` (a box reaching past the image), ``category`` (an unknown category id).
    Returns (entry, what the error must name)."""
    import shutil

    images = tmp_path / "images"
    shutil.copytree(coco_set["root"] / "train" / "IMAGES", images)
    data = json.loads((coco_set["root"] / "train.json").read_text())
    image = data["images"][2]
    ann = next(a for a in data["annotations"] if a["image_id"] == image["id"])
    if how == "truncated":
        path = images / image["file_name"]
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
        names = [image["file_name"], "cannot be read"]
    elif how == "outside":
        ann["bbox"][0] = image["width"] - ann["bbox"][2] / 2  # half the box past the right edge
        names = ["train.json", f"annotation {ann['id']} of image", image["file_name"], "outside"]
    else:
        ann["category_id"] = 999
        names = ["train.json", f"annotation {ann['id']} of image {image['file_name']}", "999"]
    (tmp_path / "train.json").write_text(json.dumps(data))
    return f"bad_train:coco:{images}:{tmp_path / 'train.json'}", names


@pytest.mark.parametrize("how", ["truncated", "outside", "category"])
def test_bad_input_stops_train_net_with_one_line_before_training(coco_set, tmp_path, how):
    entry, names = _broken_copy(coco_set, tmp_path, how)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "train_net.py"), "--config-file",
         str(REPO / "configs" / "Synthetic" / "retinanet_R_18_FPN.yaml"),
         "DATASETS.CUSTOM.ENTRIES", repr([entry]), "DATASETS.TRAIN", "('bad_train',)",
         "DATASETS.TEST", "()", "DATASETS.BAD_BOX_POLICY", "error", "SOLVER.MAX_ITER", "1",
         "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(out)],
        capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert proc.returncode == 1, explain(proc)
    # (torch may warn on stderr about CUDA; the error is the one line naming the problem)
    errors = [l for l in proc.stderr.splitlines() if "error" in l.lower()]
    assert len(errors) == 1 and errors[0].startswith("train_net.py: error: "), explain(proc)
    assert proc.stderr.rstrip().endswith(errors[0])
    for name in names:
        assert name in errors[0], (name, errors[0])
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "Starting training" not in proc.stdout  # found before training
    assert "Traceback" in (out / "log.txt").read_text()  # ... and the details are in the log

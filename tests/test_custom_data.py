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
def test_pipeline_runs_on_a_users_coco_set(coco_set, tmp_path, monkeypatch, capsys):
    """The main job on a user's COCO set, as tools/tkd_pipeline.py runs it (the library's
    Pipeline with the repository's train_net.py), its stages one by one: only what the data
    change. The data stage (the user's images checked, the settings derived from them), the
    teacher and the TKD student trained on them with those settings (the student's teacher
    built from the config dumped beside the teacher's weights), the student evaluated on the
    user's test set with the user's classes, pictures of it and the report. The rest of the
    job (the plan, the baseline's training, the other evaluations, speed, the export, reruns)
    is the same code on whatever data and runs end to end in test_pipeline.py (the session's
    tiny_pipeline)."""
    import shutil

    import yaml

    from tkd_d2.pipeline import Pipeline, PipelineOptions

    out = tmp_path / "out"
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    options = PipelineOptions(
        dataset="custom", train=[coco_set["train"]], test=[coco_set["test"]], tiny=True, max_iter=1,
        num_images=1, speed_iters=[0, 1], output=str(out),
        opts=["MODEL.RETINANET.SCORE_THRESH_TEST", "0.0", "MODEL.RETINANET.TOPK_CANDIDATES_TEST", "20",
              "TEST.DETECTIONS_PER_IMAGE", "10"])
    pipe = Pipeline(options, project_root=str(REPO), written_by="tools/tkd_pipeline.py",
                    entry=[sys.executable, str(REPO / "train_net.py")])
    pipe.stage_data()
    pipe.stage_train("teacher")
    pipe.stage_train("tkd")
    pipe.stage_eval("tkd")
    # the pictures' baseline panel: the TKD student's weights (the same network) stand in
    # for a baseline training on these data, which would be the teacher's code path again
    (out / "baseline").mkdir()
    shutil.copy(out / "tkd" / "model_final.pth", out / "baseline" / "model_final.pth")
    pipe.stage_pictures()
    pipe.stage_report()
    stdout = capsys.readouterr().out
    assert "[stage 1/6] preparing the my_train (test: my_test) dataset" in stdout
    assert "synthetic" not in stdout.split("[stage 2/6]")[0].lower()
    commands = [l for l in stdout.splitlines() if l.startswith("$ ")]
    assert sum("train_net.py --config-file" in c for c in commands) == 2, commands
    train_tkd = next(c for c in commands if "tkd_retinanet" in c)
    # the teacher is built from the config dumped beside its weights (the data overrides included)
    assert f"MODEL.TKD.TEACHER.CONFIG {out / 'teacher' / 'config.yaml'}" in train_tkd
    teacher_cfg = (out / "teacher" / "config.yaml").read_text()
    assert "my_train" in teacher_cfg
    assert "TKD teacher:" in (out / "tkd" / "log.txt").read_text()
    report = (out / "report.md").read_text()
    assert report.splitlines()[0].endswith("on my_train (test: my_test)")
    # the user's class names, in the per-class table and the evaluation
    ap, = (out / "eval_tkd" / "inference" / "my_test").glob("ap_results.json")
    bbox = json.loads(ap.read_text())["bbox"]
    assert {k[len("AP50-"):] for k in bbox if k.startswith("AP50-")} <= set(SYNTHETIC_CLASSES)
    assert "| crazing |" in report or "| scratches |" in report
    assert list((out / "pictures").glob("*.png"))
    # settings derived from the data: checked images, reported, used by every training
    assert "my_train: 16 images (read, every image decodes" in stdout
    assert "Derived settings:" in report and "not used: --max-iter 1" in report
    teacher = yaml.safe_load(teacher_cfg)
    # 128 px images whose smallest boxes (15 px) are enlarged to about 20 px: 192 px, not
    # --tiny's 128
    size = teacher["INPUT"]["MIN_SIZE_TEST"]
    assert size == 192 and teacher["INPUT"]["MIN_SIZE_TRAIN"] == [size]
    assert f"input size: short side {size} px" in report
    sizes = teacher["MODEL"]["ANCHOR_GENERATOR"]["SIZES"]
    assert f"anchors: base {sizes[0][0]:g} px" in report
    student = yaml.safe_load((out / "tkd" / "config.yaml").read_text())
    assert student["INPUT"]["MIN_SIZE_TEST"] == size and student["MODEL"]["ANCHOR_GENERATOR"]["SIZES"] == sizes
    # and the baseline would train with the same data overrides as the teacher and the student
    pairs = {m: dict(zip(opts[::2], opts[1::2])) for m, opts in pipe.plan.train_opts.items()}
    for key in ("DATASETS.TRAIN", "DATASETS.CUSTOM.ENTRIES", "INPUT.MIN_SIZE_TRAIN", "MODEL.ANCHOR_GENERATOR.SIZES"):
        assert pairs["baseline"][key] == pairs["teacher"][key] == pairs["tkd"][key], key


def test_pipeline_stops_at_the_data_stage_on_an_unreadable_image(coco_set, tmp_path):
    entry, names = _broken_copy(coco_set, tmp_path, "truncated")
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"))
    proc = run_tool("tkd_pipeline.py", ["--dataset", "custom", "--train", entry, "--test", coco_set["test"],
                                        "--tiny", "--output", str(tmp_path / "out")], env=env, cwd=str(tmp_path))
    assert proc.returncode == 1, explain(proc)
    errors = [l for l in proc.stderr.splitlines() if "error" in l.lower()]
    assert len(errors) == 1 and "stage 1/6 (data) failed" in errors[0] and names[0] in errors[0], explain(proc)
    assert "Traceback" not in proc.stderr and not (tmp_path / "out" / "teacher").exists()


def test_custom_dataset_needs_train_and_test_entries(tmp_path):
    from tkd_d2.errors import ConfigError
    from tkd_d2.pipeline import PipelineOptions

    with pytest.raises(ConfigError, match="--train and --test"):
        PipelineOptions(dataset="custom", train=["a:coco:/x:/y.json"]).resolved()
    with pytest.raises(ConfigError, match="for --dataset custom"):
        PipelineOptions(dataset="synthetic", train=["a:coco:/x:/y.json"]).resolved()
    with pytest.raises(Exception, match="'name:coco:images_dir:annotations.json'"):
        PipelineOptions(dataset="custom", train=["a:coco:/x"], test=["b:coco:/x:/y"]).resolved()


def test_relative_entry_paths_are_made_absolute_where_the_user_stands(tmp_path, monkeypatch):
    # the trainings run from the project root, not from where the user typed the command
    from tkd_d2.pipeline import PipelineOptions

    monkeypatch.chdir(tmp_path)
    options = PipelineOptions(dataset="custom", train=["a:coco:data/images:data/train.json"],
                              test=["b:voc:imgs:~/xml:splits/test.txt", "c:coco:/abs/img:/abs/c.json"]).resolved()
    assert list(options.train) == [f"a:coco:{tmp_path}/data/images:{tmp_path}/data/train.json"]
    assert list(options.test) == [f"b:voc:{tmp_path}/imgs:{os.path.expanduser('~/xml')}:{tmp_path}/splits/test.txt",
                                  "c:coco:/abs/img:/abs/c.json"]


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
    # stage 1 decodes the user's images once; the runs it starts do not decode them again
    assert all(cfg.DATASETS.CHECK_IMAGES is False for cfg in pipeline.trained_configs().values())


def test_voc_entries_take_their_classes_from_the_command_line(tmp_path):
    from tkd_d2.errors import ConfigError
    from tkd_d2.pipeline import Pipeline

    fields = {"dataset": "custom", "detector": "fcos", "output": str(tmp_path / "out"),
              "train": ["v_train:voc:/data/img:/data/xml:/data/train.txt"],
              "test": ["v_test:voc:/data/img:/data/xml:/data/test.txt"]}
    with pytest.raises(ConfigError, match="VOC entries need --classes"):
        Pipeline(fields, project_root=str(REPO))
    pipeline = Pipeline(dict(fields, classes=["dent", "rust"]), project_root=str(REPO))
    pairs = dict(zip(pipeline.eval_opts[::2], pipeline.eval_opts[1::2]))
    assert pairs["DATASETS.CUSTOM.CLASSES"] == "['dent', 'rust']"
    assert pairs["MODEL.FCOS.NUM_CLASSES"] == "2"


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


def _train_net_on(entry, out, *flags):
    return subprocess.run(
        [sys.executable, str(REPO / "train_net.py"), *flags, "--config-file",
         str(REPO / "configs" / "Synthetic" / "retinanet_R_18_FPN.yaml"),
         "DATASETS.CUSTOM.ENTRIES", repr([entry]), "DATASETS.TRAIN", "('bad_train',)",
         "DATASETS.TEST", "()", "DATASETS.BAD_BOX_POLICY", "error", "SOLVER.MAX_ITER", "1",
         "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(out)],
        capture_output=True, text=True, timeout=600, cwd=str(out.parent))


def test_debug_shows_the_traceback_of_an_input_error(coco_set, tmp_path):
    entry, names = _broken_copy(coco_set, tmp_path, "category")
    proc = _train_net_on(entry, tmp_path / "out", "--debug")
    assert proc.returncode == 1, explain(proc)
    assert "Traceback" in proc.stderr and "DatasetFormatError" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("train_net.py: error: ")


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


# ------------------------------------------------------------------------------ inspection
def _dicts(boxes_per_image, size=(640, 640), classes=None):
    """Dataset dicts of ``size`` images holding the given XYXY boxes."""
    from detectron2.structures import BoxMode

    return [{"file_name": f"im{i}.jpg", "width": size[0], "height": size[1], "image_id": i,
             "annotations": [{"bbox": list(b), "bbox_mode": BoxMode.XYXY_ABS,
                              "category_id": (classes[i][k] if classes else 0)}
                             for k, b in enumerate(boxes)]}
            for i, boxes in enumerate(boxes_per_image)]


def test_inspection_counts_boxes_and_flags_the_odd_ones():
    from tkd_d2.data import inspect_dataset

    dicts = _dicts([[(0, 0, 40, 40), (10, 10, 15, 60)], [(0, 0, 600, 620), (5, 5, 6, 30)], []],
                   classes=[[0, 1], [1, 1], []])
    stats, (boxes, sizes, classes) = inspect_dataset(dicts, ["dent", "scratch"], "x", check_images=False)
    assert stats["images"] == 3 and stats["images_without_boxes"] == 1 and stats["boxes"] == 4
    assert stats["boxes_per_class"] == {"dent": 1, "scratch": 3}
    assert stats["image_sizes"] == [{"width": 640, "height": 640, "images": 3}]
    assert stats["tiny_boxes"] == 2  # 5 px and 1 px wide
    assert stats["degenerate_boxes"] == 1  # 1 px wide
    assert stats["huge_boxes"] == 1  # 600x620 of 640x640
    assert stats["box_width_px"]["q00"] == 1 and stats["box_width_px"]["q100"] == 600
    assert boxes.shape == (4, 4) and sizes.shape == (4, 2) and classes.tolist() == [0, 1, 1, 1]


def test_derived_input_size_keeps_the_smallest_boxes_at_about_20_pixels():
    from tkd_d2.data import derive_settings, inspect_dataset

    # boxes of 40-200 px in 640 px images: halving the input keeps the smallest at 20 px
    dicts = _dicts([[(0, 0, 40, 40), (100, 100, 300, 300)]] * 10)
    stats, arrays = inspect_dataset(dicts, ["dent"], check_images=False)
    settings = derive_settings(stats, arrays, epochs=12, ims_per_batch=4)
    assert settings["input"]["min_size"] == 320 and settings["input"]["max_size"] == 320
    # 12 epochs of 10 images, 4 per batch
    assert settings["schedule"] == {"epochs": 12, "images": 10, "ims_per_batch": 4, "iterations": 30}
    # the anchors reach every box (20 and 100 px at 320) at IoU >= 0.5
    assert settings["anchors"]["recall"] == 1.0
    # tiny boxes are enlarged, at most 2x
    stats, arrays = inspect_dataset(_dicts([[(0, 0, 5, 5)]], size=(200, 200)), check_images=False)
    assert derive_settings(stats, arrays)["input"]["min_size"] == 416  # 200 x 2, to a multiple of 32


def test_anchor_search_covers_boxes_the_default_anchors_miss():
    from tkd_d2.data import derive_settings, inspect_dataset
    from tkd_d2.data.inspection import anchor_recall, anchor_sizes

    # square boxes between two default anchor scales: 16-px base reaches IoU ~0.44 only
    wh = [(11.0, 11.0)] * 20
    assert anchor_recall(wh, anchor_sizes(16))[0] == 0.0
    assert anchor_recall(wh, anchor_sizes(11))[0] == 1.0
    dicts = _dicts([[(0, 0, 11, 11)]] * 20, size=(128, 128))
    stats, arrays = inspect_dataset(dicts, check_images=False)
    anchors = derive_settings(stats, arrays, min_box_px=11)["anchors"]  # input size kept at 128
    assert anchors["current_recall"] == 0.0 and anchors["recall"] == 1.0, anchors
    assert anchors["sizes"][0][0] != 16


def test_anchor_search_widens_the_ratios_for_a_class_of_long_thin_boxes():
    from tkd_d2.data import derive_settings, inspect_dataset, settings_overrides
    from tkd_d2.data.inspection import ANCHOR_RATIOS

    # squares (class 0) are covered by the default ratios; 1:12 scratches (class 1) are not,
    # nor by ratios up to 1:4, though the overall recall (8 of 10 boxes) looks fine
    boxes = [[(0, 0, 40, 40)] * 4 + [(0, 0, 12, 144)]] * 2
    dicts = _dicts(boxes, size=(256, 256), classes=[[0, 0, 0, 0, 1]] * 2)
    stats, arrays = inspect_dataset(dicts, ["dent", "scratch"], check_images=False)
    anchors = derive_settings(stats, arrays, min_box_px=40)["anchors"]
    assert anchors["current_recall"] == 0.8
    assert anchors["default_ratios_worst_class"] == "scratch" and anchors["default_ratios_worst_class_recall"] == 0.0
    assert 8.0 in anchors["aspect_ratios"] and anchors["worst_class_recall"] == 1.0 and anchors["recall"] == 1.0
    opts = settings_overrides({"anchors": anchors})
    assert opts[opts.index("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS") + 1] == repr([anchors["aspect_ratios"]])
    # squares only: detectron2's three ratios stay
    stats, arrays = inspect_dataset(_dicts([[(0, 0, 40, 40)]] * 4, size=(128, 128)), check_images=False)
    assert tuple(derive_settings(stats, arrays, min_box_px=40)["anchors"]["aspect_ratios"]) == ANCHOR_RATIOS


def test_inspect_dataset_tool_reports_and_names_an_unreadable_image(coco_set, tmp_path):
    entry, names = _broken_copy(coco_set, tmp_path, "truncated")
    proc = run_tool("inspect_dataset.py", ["--entry", entry, "--json", str(tmp_path / "i.json"),
                                           "--workers", "2"], cwd=str(tmp_path), timeout=600)
    assert proc.returncode == 1, explain(proc)
    assert "unreadable images: 1" in proc.stdout and names[0] in proc.stdout
    assert "Derived settings:" in proc.stdout and "MODEL.ANCHOR_GENERATOR.SIZES" in proc.stdout
    result = json.loads((tmp_path / "i.json").read_text())
    assert result["statistics"]["images"] == 16
    assert sum(result["statistics"]["boxes_per_class"].values()) == result["statistics"]["boxes"]
    assert set(result["statistics"]["boxes_per_class"]) == set(SYNTHETIC_CLASSES)
    assert "SOLVER.EPOCHS" in result["overrides"]


# ------------------------------------------------------------------------------ schedule
def test_epochs_set_max_iter_and_scale_steps_and_warmup():
    from tkd_d2.config import apply_epoch_schedule, load_config

    yaml = REPO / "configs" / "Synthetic" / "retinanet_R_18_FPN.yaml"  # 500 iterations, steps 400, 470
    cfg = load_config(yaml, ["SOLVER.EPOCHS", "10", "SOLVER.IMS_PER_BATCH", "4"], register_datasets=False)
    cfg = apply_epoch_schedule(cfg, num_images=1000)
    assert cfg.SOLVER.MAX_ITER == 2500 and tuple(cfg.SOLVER.STEPS) == (2000, 2350)
    assert cfg.SOLVER.WARMUP_ITERS == 250 and cfg.is_frozen()
    # no epochs: as configured
    plain = load_config(yaml, register_datasets=False)
    assert apply_epoch_schedule(plain, 1000) is plain


@pytest.mark.parametrize("opts, steps, warmup", [
    (["SOLVER.MAX_ITER", "50"], (40, 47), 5),  # MAX_ITER alone: steps and warm-up scaled
    (["SOLVER.MAX_ITER", "50", "SOLVER.STEPS", "(10, 60)"], (10,), 5),  # given steps kept if they fit
    (["SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1, 2, 3)"], (1,), 0),
])
def test_max_iter_and_steps_never_reach_detectron2_unfit(opts, steps, warmup):
    import torch
    from detectron2.solver import build_lr_scheduler

    from tkd_d2.config import load_config

    cfg = load_config(REPO / "configs" / "Synthetic" / "retinanet_R_18_FPN.yaml", opts, register_datasets=False)
    assert tuple(cfg.SOLVER.STEPS) == steps and cfg.SOLVER.WARMUP_ITERS == warmup
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    build_lr_scheduler(cfg, optimizer)  # "Total num_updates must be greater ..." before


def test_large_images_with_small_defects_get_crops_and_tiles_not_a_smaller_input():
    from tkd_d2.data import derive_settings, inspect_dataset, settings_overrides
    from tkd_d2.data.inspection import CROP_PX, MAX_CPU_INPUT_PX, format_inspection

    # line-scan strips: 2048 x 1000 px with 20-60 px defects (GC10-DET-like)
    dicts = _dicts([[(100, 100, 120, 120), (900, 400, 960, 460)]] * 10, size=(2048, 1000))
    stats, arrays = inspect_dataset(dicts, ["spot"], check_images=False)
    settings = derive_settings(stats, arrays)
    assert settings["input"]["min_size"] > MAX_CPU_INPUT_PX  # the smallest boxes keep ~20 px
    crops = settings["crops"]
    assert crops["size"] == crops["tile"] == CROP_PX and 32 <= crops["overlap"] <= CROP_PX // 2
    opts = settings_overrides(settings)
    for key in ("INPUT.DEFECT_CROP.ENABLED", "INPUT.DEFECT_CROP.SIZE", "TEST.TILE.SIZE", "TEST.TILE.OVERLAP"):
        assert key in opts
    assert any("crops and tiles" in line for line in format_inspection(stats, settings))
    # a CPU-sized input needs none; nor when asked not to
    small = inspect_dataset(_dicts([[(0, 0, 40, 40)]] * 4), check_images=False)
    assert "crops" not in derive_settings(*small)
    assert "crops" not in derive_settings(stats, arrays, crops=False)

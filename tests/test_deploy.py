"""tkd_d2.deploy: the exported graph (ONNX Runtime, TorchScript) gives the eager detector's
detections and AP; bad inputs are clear errors."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tkd_d2  # noqa: F401  (detectron2 compatibility, before detectron2 is imported)
from tkd_d2.config import load_config, student_cfg
from tkd_d2.deploy import (DeployError, ExportedModelAdapter, OnnxPredictor,
                           TorchScriptPredictor, export_model, read_deploy_info)
from tkd_d2.engine import Predictor, resize_for_inference
from tkd_d2.errors import CheckpointError, ConfigError
from tkd_d2.pipeline import TINY_OPTS

REPO = Path(__file__).resolve().parents[1]
# the pipeline's --tiny scale, random (untrained) backbones and no teacher weights
TINY = TINY_OPTS + ["MODEL.EFFICIENTNET.PRETRAINED", "False", "MODEL.TKD.TEACHER.WEIGHTS", ""]
# one student of each family and backbone; the FCOS one through its TKD config
CASES = {
    "retinanet_R_18": "configs/Synthetic/retinanet_R_18_FPN.yaml",
    "tkd_fcos_Lite0": "configs/Synthetic/tkd_fcos_Lite2_to_Lite0.yaml",
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A private synthetic set (8 test images of 128 px)."""
    root = tmp_path_factory.mktemp("datasets")
    old = os.environ.get("DETECTRON2_DATASETS")
    os.environ["DETECTRON2_DATASETS"] = str(root)
    yield root
    if old is None:
        del os.environ["DETECTRON2_DATASETS"]
    else:
        os.environ["DETECTRON2_DATASETS"] = old


def spread_head(model):
    """Random weights with scores spread over (0, 1): the prior bias of a fresh head puts
    every score below the test threshold, which would leave nothing to compare."""
    gen = torch.Generator().manual_seed(0)
    head = model.head
    with torch.no_grad():
        for conv in (head.cls_score, head.bbox_pred):
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.02)
        head.cls_score.bias.fill_(-1.5)


@pytest.fixture(scope="module", params=list(CASES))
def exported(request, data_root, tmp_path_factory):
    """(cfg, checkpoint, ONNX folder) of a randomly initialised student."""
    from detectron2.modeling import build_model

    cfg = load_config(REPO / CASES[request.param], TINY, device="cpu")
    torch.manual_seed(0)
    model = build_model(student_cfg(cfg)).eval()
    spread_head(model)
    out = tmp_path_factory.mktemp(request.param)
    weights = out / "model_final.pth"
    torch.save({"model": model.state_dict()}, weights)
    export_model(cfg, str(out / "onnx"), weights=str(weights))
    return cfg, str(weights), str(out / "onnx")


def test_images(cfg):
    import cv2
    from detectron2.data import DatasetCatalog

    files = [d["file_name"] for d in DatasetCatalog.get(cfg.DATASETS.TEST[0])][:3]
    images = [cv2.imread(f, cv2.IMREAD_COLOR) for f in files]
    # another size than the trace's, not a multiple of the size divisibility (no resize:
    # short edge 128, long edge within the max size)
    images.append(np.ascontiguousarray(np.concatenate([images[0], images[1][:, :52]], axis=1)))
    return images


def assert_same_detections(got, expected, image_size, max_dets, score_tol=1e-4):
    """The same detections, paired one to one: same class, box within 1e-3 of the image
    size, score within score_tol. The pairing ignores order, since two runtimes may rank
    scores that differ by float rounding (1e-7) either way; only where the list is cut at
    ``max_dets`` (the detections-per-image limit) may a detection tied with the lowest score
    be swapped for another such one."""
    from scipy.optimize import linear_sum_assignment

    assert len(got) == len(expected)
    g_cls, e_cls = np.asarray(got.pred_classes), expected.pred_classes.numpy()
    g_box, e_box = np.asarray(got.pred_boxes.tensor), expected.pred_boxes.tensor.numpy()
    g_sc, e_sc = np.asarray(got.scores), expected.scores.numpy()
    same = ((g_cls[:, None] == e_cls[None])
            & (np.abs(g_box[:, None] - e_box[None]).max(axis=2) <= 1e-3 * max(image_size))
            & (np.abs(g_sc[:, None] - e_sc[None]) <= score_tol))
    rows, cols = linear_sum_assignment(~same)
    paired = same[rows, cols]
    cut = min(g_sc.min(initial=1.0), e_sc.min(initial=1.0)) + score_tol
    unpaired = np.concatenate([g_sc[rows[~paired]], e_sc[cols[~paired]]])
    assert len(unpaired) == 0 or (len(got) == max_dets and (unpaired <= cut).all()), (
        f"{int((~paired).sum())} of {len(got)} detections have no twin; unpaired scores "
        f"{unpaired.tolist()}")
    assert np.abs(np.sort(g_sc) - np.sort(e_sc)).max(initial=0) <= score_tol


test_images.__test__ = False  # a helper, not a test


@pytest.mark.slow  # exports a detector (seconds to tens of seconds on 2 cores)
def test_onnx_predictor_gives_the_eager_predictors_detections(exported):
    cfg, weights, onnx_dir = exported
    eager, onnx = Predictor(cfg, weights), OnnxPredictor(onnx_dir)
    for image in test_images(cfg):
        expected = eager(image)["instances"]
        got = onnx(image)["instances"]
        assert len(expected) >= 5  # real detections are compared
        assert got.image_size == image.shape[:2]
        assert_same_detections(got, expected, image.shape[:2], cfg.TEST.DETECTIONS_PER_IMAGE)


@pytest.mark.slow  # exports a detector (seconds to tens of seconds on 2 cores)
def test_a_batch_through_the_graph_gives_each_images_own_detections(exported):
    """The graph's batch axis (the predictor batches a large image's tiles): each image's
    detections, picked by image_index, are that image's alone, cap per image included."""
    cfg, _, onnx_dir = exported
    onnx = OnnxPredictor(onnx_dir)
    images = np.stack([im for im in test_images(cfg) if im.shape[:2] == (128, 128)][:3])
    assert len(images) == 3
    boxes, scores, classes, index = onnx.run_batch(images)
    assert sorted(set(index.tolist())) == [0, 1, 2]
    for i, image in enumerate(images):
        one_boxes, one_scores, one_classes = onnx.run_resized(image)
        mine = index == i
        assert len(one_scores) >= 5 and mine.sum() == len(one_scores) <= cfg.TEST.DETECTIONS_PER_IMAGE
        np.testing.assert_allclose(scores[mine], one_scores, atol=1e-5)
        np.testing.assert_allclose(boxes[mine], one_boxes, atol=1e-3)
        assert np.array_equal(classes[mine], one_classes)


@pytest.mark.slow  # exports a detector (seconds to tens of seconds on 2 cores)
def test_resize_for_inference_gives_the_eager_predictors_pixels(exported):
    """What the pipeline times the export on (resize_for_inference, no model built) is exactly the
    eager predictor's input, as the export's BGR uint8."""
    from tkd_d2.deploy.evaluation import loader_image

    cfg, weights, _ = exported
    eager = Predictor(cfg, weights)
    for image in test_images(cfg):
        resized = resize_for_inference(cfg).get_transform(image).apply_image(image)
        expected, size = loader_image(eager.preprocess(image), cfg.INPUT.FORMAT)
        assert size == image.shape[:2]
        assert resized.dtype == np.uint8 and np.array_equal(resized, expected)


@pytest.mark.slow  # exports a detector (seconds to tens of seconds on 2 cores)
def test_torchscript_export_gives_the_same_detections(exported, tmp_path):
    cfg, weights, _ = exported
    export_model(cfg, str(tmp_path / "ts"), fmt="torchscript", weights=weights)
    eager, scripted = Predictor(cfg, weights), TorchScriptPredictor(str(tmp_path / "ts"))
    for image in test_images(cfg)[-2:]:
        assert_same_detections(scripted(image)["instances"], eager(image)["instances"],
                               image.shape[:2], cfg.TEST.DETECTIONS_PER_IMAGE)


@pytest.mark.slow  # exports a detector (seconds to tens of seconds on 2 cores)
def test_resized_image_boxes_come_back_in_input_pixels(exported):
    """An image larger than the test size: resized inside the predictor, boxes scaled back."""
    import cv2
    from detectron2.modeling import build_model

    from tkd_d2.checkpoint import load_weights

    cfg, weights, onnx_dir = exported
    image = test_images(cfg)[0]
    big = cv2.resize(image, (256, 256), interpolation=cv2.INTER_LINEAR)
    got = OnnxPredictor(onnx_dir)(big)["instances"]
    # the eager model on the same resized pixels, asked for the 256 px output size
    model = build_model(student_cfg(cfg)).eval()
    load_weights(model, weights)
    small = cv2.resize(big, (128, 128), interpolation=cv2.INTER_LINEAR)
    if cfg.INPUT.FORMAT == "RGB":
        small = small[:, :, ::-1]
    tensor = torch.as_tensor(small.astype("float32").transpose(2, 0, 1))
    with torch.no_grad():
        expected = model([{"image": tensor, "height": 256, "width": 256}])[0]["instances"]
    assert got.image_size == (256, 256) and len(expected) >= 5
    assert_same_detections(got, expected, (256, 256), cfg.TEST.DETECTIONS_PER_IMAGE)


# RetinaNet only: the random FCOS-Lite0 student finds no defect (AP 0 vs 0 holds for any
# export); its exported detections are held equal to the eager ones in
# test_onnx_predictor_gives_the_eager_predictors_detections
@pytest.mark.slow  # exports a detector (seconds to tens of seconds on 2 cores)
@pytest.mark.parametrize("exported", ["retinanet_R_18"], indirect=True)
def test_exported_ap_equals_eager_ap(exported, tmp_path):
    """The same loader and COCO evaluator on the eager model and on the ONNX export."""
    from detectron2.modeling import build_model

    from tkd_d2.checkpoint import load_weights
    from tkd_d2.engine import Trainer

    cfg, weights, onnx_dir = exported
    cfg = cfg.clone()
    cfg.defrost()
    cfg.OUTPUT_DIR = str(tmp_path)
    model = build_model(student_cfg(cfg)).eval()
    load_weights(model, weights)
    eager = Trainer.test(cfg, model)["bbox"]
    onnx = Trainer.test(cfg, ExportedModelAdapter.from_config(onnx_dir, cfg))["bbox"]
    assert set(onnx) == set(eager)
    assert eager["AP50"] > 0  # not a comparison of two empty results
    for key, value in eager.items():
        if value != value:  # NaN: a class without ground truth, in both or in neither
            assert onnx[key] != onnx[key], (key, onnx[key])
        else:
            assert abs(onnx[key] - value) <= 0.1, (key, value, onnx[key])


@pytest.mark.slow  # exports a detector (seconds to tens of seconds on 2 cores)
def test_deploy_json_describes_the_model(exported):
    cfg, _, onnx_dir = exported
    info = read_deploy_info(onnx_dir)
    assert info["format"] == "onnx" and info["format_version"] == 2
    assert info["meta_architecture"] == student_cfg(cfg).MODEL.META_ARCHITECTURE
    assert info["classes"] == ["crazing", "inclusion", "patches", "pitted_surface",
                               "rolled-in_scale", "scratches"]
    assert info["input"]["resize"] == {"rule": "ResizeShortestEdge", "min_size": 128,
                                       "max_size": 213}
    assert info["input"]["channels"] == "BGR" and info["input"]["dtype"] == "uint8"
    model = OnnxPredictor(onnx_dir).session
    assert [i.name for i in model.get_inputs()] == ["images"]
    assert [o.name for o in model.get_outputs()] == ["boxes", "scores", "classes", "image_index"]
    assert {"NonMaxSuppression", "TopK"} <= onnx_ops(info["model_path"])


def onnx_ops(path):
    """Every op type of an ONNX file, subgraphs (If branches) included."""
    import onnx

    ops, graphs = set(), [onnx.load(path).graph]
    while graphs:
        for node in graphs.pop().node:
            ops.add(node.op_type)
            graphs += [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
    return ops


@pytest.mark.slow  # exports a detector (seconds to tens of seconds on 2 cores)
def test_copied_predictor_runs_without_detectron2(exported):
    """predictor.py in the export folder, with detectron2 and tkd_d2 made unimportable."""
    import cv2

    cfg, _, onnx_dir = exported
    image_path = Path(onnx_dir) / "probe.png"
    cv2.imwrite(str(image_path), test_images(cfg)[0])
    code = (
        "import sys; sys.modules['detectron2'] = None; sys.modules['tkd_d2'] = None\n"
        f"sys.path.insert(0, {onnx_dir!r})\n"
        "import cv2, predictor\n"
        f"out = predictor.OnnxPredictor({onnx_dir!r})(cv2.imread({str(image_path)!r}))['instances']\n"
        "assert type(out).__name__ == 'Detections', type(out)\n"
        "print(len(out), out.pred_boxes.shape, out.pred_classes.dtype)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=onnx_dir, timeout=120)
    assert proc.returncode == 0, proc.stderr
    count, *_ = proc.stdout.split()
    expected = OnnxPredictor(onnx_dir)(test_images(cfg)[0])["instances"]
    assert int(count) == len(expected) >= 5


# ------------------------------------------------------------------------------ errors
def test_checkpoint_that_does_not_fit_is_an_error(data_root, tmp_path):
    from detectron2.modeling import build_model

    cfg = load_config(REPO / CASES["retinanet_R_18"], TINY, device="cpu")
    weights = tmp_path / "model_final.pth"
    torch.save({"model": build_model(cfg).state_dict()}, weights)  # 6 classes
    wrong = load_config(REPO / CASES["retinanet_R_18"], TINY + ["MODEL.RETINANET.NUM_CLASSES", "3"],
                        device="cpu")
    with pytest.raises(CheckpointError, match="model_final.pth.*head.cls_score"):
        export_model(wrong, str(tmp_path / "x"), weights=str(weights))
    assert not (tmp_path / "x" / "model.onnx").exists()


def test_unsupported_meta_architecture_is_an_error(data_root, tmp_path):
    cfg = load_config(REPO / CASES["retinanet_R_18"],
                      TINY + ["MODEL.META_ARCHITECTURE", "GeneralizedRCNN"], device="cpu")
    with pytest.raises(ConfigError, match="cannot export.*GeneralizedRCNN"):
        export_model(cfg, str(tmp_path / "x"), weights="unused.pth")


def fake_export(folder):
    """An export folder whose deploy.json is valid (the model file is not read here)."""
    import json

    folder.mkdir(exist_ok=True)
    (folder / "model.onnx").write_bytes(b"")
    (folder / "deploy.json").write_text(json.dumps({
        "format_version": 2, "format": "onnx", "model_file": "model.onnx", "classes": ["a"],
        "input": {"resize": {"min_size": 128, "max_size": 213}}}))
    return folder


def test_missing_onnxruntime_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime → ImportError
    with pytest.raises(DeployError, match="pip install onnxruntime"):
        OnnxPredictor(str(fake_export(tmp_path / "export")))


def test_tiles_per_batch_below_one_is_an_error(tmp_path):
    with pytest.raises(DeployError, match="tiles_per_batch 0"):
        OnnxPredictor(str(fake_export(tmp_path / "export")), tiles_per_batch=0)


def test_export_of_another_format_version_is_an_error(tmp_path):
    import json

    folder = fake_export(tmp_path / "export")
    info = json.loads((folder / "deploy.json").read_text())
    (folder / "deploy.json").write_text(json.dumps(dict(info, format_version=99)))
    with pytest.raises(DeployError, match="format_version 99"):
        OnnxPredictor(str(folder))


@pytest.mark.slow  # exports a detector (seconds to tens of seconds on 2 cores)
def test_evaluating_an_export_at_another_test_size_is_an_error(exported):
    cfg, _, onnx_dir = exported
    cfg = cfg.clone()
    cfg.defrost()
    cfg.INPUT.MIN_SIZE_TEST = 160
    with pytest.raises(DeployError, match="INPUT.MIN_SIZE_TEST 160"):
        ExportedModelAdapter.from_config(onnx_dir, cfg)


def test_folder_without_an_export_is_an_error(tmp_path):
    with pytest.raises(DeployError, match="deploy.json not found"):
        OnnxPredictor(str(tmp_path))


@pytest.mark.slow  # exports a detector (seconds to tens of seconds on 2 cores)
@pytest.mark.parametrize("exported", ["retinanet_R_18"], indirect=True)
def test_tiled_export_gives_the_eager_tiled_detections(exported, tmp_path, monkeypatch):
    """TEST.TILE in the export: the predictor cuts the eager model's tiles, finds each tile's
    detections and hands them to the one merge (tkd_d2/tiling.py) with the eager settings; what
    it returns is that merge's output. The tiles' detections are compared, not the merged
    lists: the merge is greedy, and on a random model's hundreds of overlapping boxes a 1e-7
    difference in the order of two tiles' views of one box changes which box is kept."""
    from detectron2.structures import Boxes, Instances

    import tkd_d2.tiling as tiling
    from tkd_d2.modeling.tiled import TiledDetector

    cfg, weights, _ = exported
    cfg = cfg.clone()
    cfg.defrost()
    cfg.TEST.TILE.SIZE, cfg.TEST.TILE.OVERLAP = 64, 16
    export_model(cfg, str(tmp_path / "onnx"), weights=weights)
    assert read_deploy_info(str(tmp_path / "onnx"))["tile"] == {
        "size": 64, "overlap": 16, "iou_thresh": 0.5, "containment_thresh": 0.7}
    eager, onnx = Predictor(cfg, weights), OnnxPredictor(str(tmp_path / "onnx"))
    assert isinstance(eager.model, TiledDetector)

    calls, merge = [], tiling.merge_tiled

    def spy(boxes, scores, classes, tiles, *args, **kwargs):
        merged = merge(boxes, scores, classes, tiles, *args, **kwargs)
        calls.append(((boxes, scores, classes, tiles), args, kwargs, merged))
        return merged

    monkeypatch.setattr(tiling, "merge_tiled", spy)

    def detections(boxes, scores, classes):
        return Instances((64, 64), pred_boxes=Boxes(torch.as_tensor(boxes)), scores=torch.as_tensor(scores),
                         pred_classes=torch.as_tensor(classes))

    max_dets = cfg.TEST.DETECTIONS_PER_IMAGE
    for image in test_images(cfg):  # 128 px at the test scale: 9 or more tiles each
        calls.clear()
        outputs = [eager(image)["instances"], onnx(image)["instances"]]
        assert len(calls) == 2, "each predictor merges its tiles once"
        (e_in, e_args, e_kw, _), (g_in, g_args, g_kw, _) = calls
        e_windows, g_windows = e_kw.pop("windows", e_args[3:4]), g_kw.pop("windows", g_args[3:4])
        np.testing.assert_array_equal(g_windows, e_windows)  # the same tiles
        assert (g_args[:2], {k: v for k, v in g_kw.items() if k != "cut"}) == (
            e_args[:2], {k: v for k, v in e_kw.items() if k != "cut"})  # thresholds
        tiles = np.asarray(e_in[3])
        assert len(np.unique(tiles)) >= 5
        for t in np.unique(np.concatenate([e_in[3], g_in[3]])):  # each tile's detections
            e, g = (np.asarray(e_in[3]) == t), (np.asarray(g_in[3]) == t)
            assert_same_detections(detections(*(np.asarray(x)[g] for x in g_in[:3])),
                                   detections(*(np.asarray(x)[e] for x in e_in[:3])),
                                   (64, 64), max_dets)
        for (_, _, _, merged), out in zip(calls, outputs):  # and the predictors return the merge
            assert len(out) == min(max_dets, len(merged[0])) >= 5
            np.testing.assert_allclose(np.asarray(out.pred_boxes.tensor), merged[0][:max_dets], atol=1e-4)
            np.testing.assert_allclose(np.asarray(out.scores), merged[1][:max_dets], atol=1e-6)
            np.testing.assert_array_equal(np.asarray(out.pred_classes), merged[2][:max_dets])
    # and the evaluation of this export asks for the same tiles
    cfg.TEST.TILE.SIZE = 0
    with pytest.raises(DeployError, match="TEST.TILE"):
        ExportedModelAdapter.from_config(str(tmp_path / "onnx"), cfg)


# ------------------------------------------------------------------------------ fast tier
# A 64 px test size: the export and both runtimes take about a second, so `-m "not slow"`
# still holds the exported graph (decoding, NMS, class ids) to the eager detector.
SMALL = TINY + ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "107"]


def small_images():
    """A square 64 px image and a 64x90 one (not a multiple of the size divisibility), noise
    with a few bright rectangles: no dataset needed."""
    rng = np.random.default_rng(0)
    images = []
    for width in (64, 90):
        image = rng.integers(60, 120, size=(64, width, 3), dtype=np.uint8)
        for _ in range(3):
            x, y = rng.integers(0, width - 16), rng.integers(0, 48)
            image[y:y + 16, x:x + 16] = rng.integers(180, 255, size=3, dtype=np.uint8)
        images.append(image)
    return images


@pytest.fixture
def small_student(data_root, tmp_path):
    """(cfg, checkpoint) of a randomly initialised R-18 RetinaNet at the 64 px test size."""
    from detectron2.modeling import build_model

    cfg = load_config(REPO / CASES["retinanet_R_18"], SMALL, device="cpu")
    torch.manual_seed(0)
    model = build_model(student_cfg(cfg)).eval()
    spread_head(model)
    weights = tmp_path / "model_final.pth"
    torch.save({"model": model.state_dict()}, weights)
    return cfg, str(weights)


def test_small_onnx_export_gives_the_eager_detections(small_student, tmp_path):
    cfg, weights = small_student
    export_model(cfg, str(tmp_path / "onnx"), weights=weights)
    eager, onnx = Predictor(cfg, weights), OnnxPredictor(str(tmp_path / "onnx"))
    for image in small_images():
        expected = eager(image)["instances"]
        got = onnx(image)["instances"]
        # real detections, fewer than the cap: the comparison sees what NMS kept
        assert 5 <= len(expected) < cfg.TEST.DETECTIONS_PER_IMAGE
        assert got.image_size == image.shape[:2]
        assert_same_detections(got, expected, image.shape[:2], cfg.TEST.DETECTIONS_PER_IMAGE)


def test_export_tool_as_a_user_runs_it(small_student, tmp_path):
    """tools/export.py with its documented command line writes a folder whose own
    predictor.py (detectron2 and tkd_d2 unimportable) gives the eager detections."""
    import cv2

    from tkd_d2.deploy.runtime import to_instances

    cfg, weights = small_student
    out = tmp_path / "deploy"
    cmd = [sys.executable, str(REPO / "tools" / "export.py"),
           "--config-file", str(REPO / CASES["retinanet_R_18"]), "--format", "onnx",
           "--output", str(out), *SMALL, "MODEL.WEIGHTS", weights]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"to {out / 'model.onnx'}" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "deploy.json", "model.onnx", "predictor.py", "tiling.py"]
    info = read_deploy_info(str(out))
    assert info["source"]["weights"] == weights
    assert info["input"]["resize"]["min_size"] == 64 and len(info["classes"]) == 6

    image = small_images()[1]
    cv2.imwrite(str(tmp_path / "probe.png"), image)  # lossless: both sides see these pixels
    code = (
        "import sys; sys.modules['detectron2'] = None; sys.modules['tkd_d2'] = None\n"
        f"sys.path.insert(0, {str(out)!r})\n"
        "import cv2, numpy as np, predictor\n"
        f"d = predictor.OnnxPredictor({str(out)!r})(cv2.imread('probe.png'))['instances']\n"
        "assert type(d).__name__ == 'Detections', type(d)\n"
        "np.savez('dets.npz', boxes=d.pred_boxes, scores=d.scores, classes=d.pred_classes)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(tmp_path / "dets.npz") as d:
        got = to_instances(image.shape[:2], d["boxes"], d["scores"], d["classes"])
    expected = Predictor(cfg, weights)(image)["instances"]
    assert len(expected) >= 5
    assert_same_detections(got, expected, image.shape[:2], cfg.TEST.DETECTIONS_PER_IMAGE)


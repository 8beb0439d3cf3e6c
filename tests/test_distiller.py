"""TKDDistiller: built from configs, the teacher frozen and hidden, KD terms that vanish when
the student is the teacher, weight-0 terms skipped, clear errors for a bad teacher."""
import copy
import os

import pytest
import torch

import tkd_d2  # noqa: F401
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from helpers import ALL_PARTS

from tkd_d2.checkpoint import SafeCheckpointer
from tkd_d2.config import load_config
from tkd_d2.errors import ConfigError, KDLossError, TeacherLoadError
from tkd_d2.modeling import TKDDistiller

KD_TERMS = {
    "loss_crd_cls", "loss_crd_box", "loss_ded_fg", "loss_ded_bg", "loss_ded_ssim",
    "loss_drd_instance", "loss_drd_pixel",
}
SMALL = ["MODEL.FPN.OUT_CHANNELS", 64, "DATASETS.TRAIN", ("synthetic_defects_train",)]


def _cfg(path, opts=()):
    return load_config(path, opts, device="cpu", register_datasets=False, freeze=False)


def _teacher_file(tmp_path, teacher_yaml, opts=(), thing_classes=None):
    """Weights of a (random) teacher built from ``teacher_yaml`` + ``opts``, and that config
    written as a yaml: ``(weights_path, teacher_yaml_path)``."""
    cfg = _cfg(teacher_yaml, opts)
    teacher = build_model(cfg)
    SafeCheckpointer(teacher, str(tmp_path), thing_classes=thing_classes).save("teacher")
    yaml_path = tmp_path / "teacher.yaml"
    yaml_path.write_text(cfg.dump())
    return str(tmp_path / "teacher.pth"), str(yaml_path)


def _distiller_cfg(student_yaml, teacher_yaml, weights, opts=(), extra=()):
    cfg = _cfg(student_yaml, opts)
    cfg.merge_from_list([
        "MODEL.META_ARCHITECTURE", "TKDDistiller",
        "MODEL.TKD.STUDENT_META_ARCHITECTURE", cfg.MODEL.META_ARCHITECTURE,
        "MODEL.TKD.TEACHER.CONFIG", teacher_yaml, "MODEL.TKD.TEACHER.WEIGHTS", weights,
        "MODEL.TKD.WARMUP_ITERS", "0", "MODEL.TKD.PARTS", ALL_PARTS, *map(str, extra),
    ])
    return cfg


def _batch(n=2, size=128):
    g = torch.Generator().manual_seed(0)
    boxes = [torch.tensor([[10.0, 12.0, 60.0, 70.0], [70.0, 20.0, 120.0, 50.0]]),
             torch.zeros((0, 4))]
    out = []
    for i in range(n):
        b = boxes[i % 2]
        inst = Instances((size, size), gt_boxes=Boxes(b), gt_classes=torch.zeros(len(b), dtype=torch.long))
        out.append({"image": torch.rand(3, size, size, generator=g) * 255, "instances": inst})
    return out


def _freeze_bn(model):
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


@pytest.fixture(params=["retinanet", "fcos"])
def family(request):
    return request.param


def _yaml(family):
    return f"configs/Synthetic/{family}_R_18_FPN.yaml"


def test_kd_terms_vanish_when_student_is_teacher(tmp_path, family):
    yaml = _yaml(family)
    weights, teacher_yaml = _teacher_file(tmp_path, yaml, SMALL)
    model = build_model(_distiller_cfg(yaml, teacher_yaml, weights, SMALL))
    assert isinstance(model, TKDDistiller)
    model.student.load_state_dict(model.teacher.state_dict())
    model.train()
    _freeze_bn(model.student)  # same normalisation as the (eval-mode) teacher
    with EventStorage():
        losses = model(_batch())
    assert KD_TERMS <= set(losses)
    for name in KD_TERMS:
        assert abs(float(losses[name])) < 1e-4, (name, float(losses[name]))


def test_gradients_reach_student_not_teacher(tmp_path, family):
    yaml = _yaml(family)
    weights, teacher_yaml = _teacher_file(tmp_path, yaml, SMALL)
    # the default balance, its window one step long
    model = build_model(_distiller_cfg(yaml, teacher_yaml, weights, SMALL, ["MODEL.TKD.CALIBRATE_ITERS", 1]))
    model.train()
    assert not model.teacher.training
    assert all(not m.training for m in model.teacher.modules())
    with EventStorage():
        observed = model(_batch())
    # the calibration step only observes the KD terms: they count 0 and send no gradient
    assert model.distill_balance.calibrated
    assert all(float(observed[k]) == 0.0 for k in KD_TERMS)
    sum(v for k, v in observed.items() if k in KD_TERMS).backward()
    assert all(p.grad is None or not p.grad.any() for p in model.student.parameters())
    model.zero_grad(set_to_none=True)
    with EventStorage(start_iter=1):
        losses = model(_batch())
    kd = sum(v for k, v in losses.items() if k in KD_TERMS)
    kd.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    # every KD part sends gradient into the student (backbone and head)
    assert model.student.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0
    assert model.student.head.cls_subnet[0].weight.grad.abs().sum() > 0
    # the teacher is hidden from parameters / state_dict / optimizer
    teacher_ids = {id(p) for p in model.teacher.parameters()}
    assert not teacher_ids & {id(p) for p in model.parameters()}
    student_keys = set(model.student.state_dict())
    assert set(model.state_dict()) <= student_keys | {k for k in model.state_dict() if k.startswith("distill_")}


OFF_BUT_CRD_CLS = {
    # weights (balance off): every term but loss_crd_cls at weight 0
    "weights": ["MODEL.TKD.BALANCE.ENABLED", False, "MODEL.TKD.DED.FG_WEIGHT", 0.0,
                "MODEL.TKD.DED.BG_WEIGHT", 0.0, "MODEL.TKD.DED.SSIM_WEIGHT", 0.0,
                "MODEL.TKD.DRD.INSTANCE_WEIGHT", 0.0, "MODEL.TKD.DRD.PIXEL_WEIGHT", 0.0,
                "MODEL.TKD.CRD.BOX_WEIGHT", 0.0],
    # per-term balance: every share but CRD_CLS at 0
    "shares": ["MODEL.TKD.BALANCE.ENABLED", True, "MODEL.TKD.BALANCE.DED_FG", 0.0, "MODEL.TKD.BALANCE.DED_BG", 0.0,
               "MODEL.TKD.BALANCE.DED_SSIM", 0.0, "MODEL.TKD.BALANCE.DRD_INSTANCE", 0.0,
               "MODEL.TKD.BALANCE.DRD_PIXEL", 0.0, "MODEL.TKD.BALANCE.CRD_BOX", 0.0],
}


@pytest.mark.parametrize("mode", sorted(OFF_BUT_CRD_CLS))
def test_weight_zero_skips_the_computation(tmp_path, monkeypatch, mode):
    yaml = _yaml("retinanet")
    weights, teacher_yaml = _teacher_file(tmp_path, yaml, SMALL)
    model = build_model(_distiller_cfg(yaml, teacher_yaml, weights, SMALL, OFF_BUT_CRD_CLS[mode]))
    assert model.distill_ded is None and model.distill_drd is None

    import tkd_d2.modeling.distiller as distiller_module

    def boom(*a, **k):
        raise AssertionError("a weight-0 term was computed")

    monkeypatch.setattr(distiller_module, "crd_box_loss", boom)
    model.train()
    with EventStorage():
        losses = model(_batch())
    assert set(losses) & KD_TERMS == {"loss_crd_cls"}


def test_parts_left_out_are_not_computed(tmp_path):
    yaml = _yaml("retinanet")
    weights, teacher_yaml = _teacher_file(tmp_path, yaml, SMALL)
    model = build_model(_distiller_cfg(yaml, teacher_yaml, weights, SMALL, ["MODEL.TKD.PARTS", '["crd"]']))
    assert model.distill_ded is None and model.distill_drd is None
    model.train()
    with EventStorage():
        losses = model(_batch())
    assert set(losses) & KD_TERMS == {"loss_crd_cls", "loss_crd_box"}


def test_warmup_ramps_kd_weights(tmp_path):
    yaml = _yaml("retinanet")
    weights, teacher_yaml = _teacher_file(tmp_path, yaml, SMALL)
    cfg = _distiller_cfg(yaml, teacher_yaml, weights, SMALL)
    cfg.MODEL.TKD.WARMUP_ITERS = 10
    model = build_model(cfg)
    model.train()
    values = {}
    for it in (0, 5, 10):
        torch.manual_seed(0)
        with EventStorage(start_iter=it):
            values[it] = float(model(_batch())["loss_ded_ssim"])
    assert values[0] == 0.0
    assert values[5] == pytest.approx(values[10] * 0.5, rel=1e-3)


def test_kd_terms_train_in_detectron2s_plain_simple_trainer(tmp_path):
    # no project hook or trainer: the KD warm-up follows detectron2's own iteration counter
    from detectron2.engine import SimpleTrainer

    yaml = _yaml("retinanet")
    weights, teacher_yaml = _teacher_file(tmp_path, yaml, SMALL)
    cfg = _distiller_cfg(yaml, teacher_yaml, weights, SMALL, extra=["MODEL.TKD.WARMUP_ITERS", 2])
    model = build_model(cfg)
    model.train()
    batch = _batch()
    trainer = SimpleTrainer(model, iter(lambda: batch, None), torch.optim.SGD(model.parameters(), lr=0.0))
    trainer.train(0, 4)
    history = trainer.storage.histories()
    for name in KD_TERMS:
        values = [v for v, it in history[name].values()]
        assert values[0] == 0.0, name  # iteration 0: warm-up factor 0
        assert values[-1] > 0.0, name  # iteration 3: past the 2-iteration warm-up


def test_state_dict_is_the_plain_students(tmp_path):
    yaml = _yaml("retinanet")
    weights, teacher_yaml = _teacher_file(tmp_path, yaml, SMALL)
    model = build_model(_distiller_cfg(yaml, teacher_yaml, weights, SMALL))
    plain = build_model(_cfg(yaml, SMALL))
    incompatible = plain.load_state_dict(model.state_dict(), strict=False)
    assert not incompatible.missing_keys
    assert all(k.startswith("distill_") for k in incompatible.unexpected_keys)
    for k, v in plain.state_dict().items():
        assert torch.equal(v, model.student.state_dict()[k])
    # and loading back (resume) restores the student
    clone = build_model(_distiller_cfg(yaml, teacher_yaml, weights, SMALL))
    clone.load_state_dict(model.state_dict())
    for k, v in model.student.state_dict().items():
        assert torch.equal(v, clone.student.state_dict()[k])


def test_teacher_follows_device_and_dtype_moves(tmp_path):
    yaml = _yaml("retinanet")
    weights, teacher_yaml = _teacher_file(tmp_path, yaml, SMALL)
    model = build_model(_distiller_cfg(yaml, teacher_yaml, weights, SMALL))
    model.double()
    assert next(model.teacher.parameters()).dtype == torch.float64
    model.float()
    assert next(model.teacher.parameters()).dtype == torch.float32


def test_missing_teacher_weights_is_a_clear_error(tmp_path):
    yaml = _yaml("retinanet")
    with pytest.raises(TeacherLoadError, match="file not found: .*nope.pth"):
        build_model(_distiller_cfg(yaml, yaml, str(tmp_path / "nope.pth")))
    with pytest.raises(TeacherLoadError, match="WEIGHTS is empty"):
        build_model(_distiller_cfg(yaml, yaml, ""))


def test_teacher_weights_for_another_architecture(tmp_path):
    weights, teacher_yaml = _teacher_file(tmp_path, _yaml("retinanet"), SMALL)
    r50 = "configs/Synthetic/retinanet_R_50_FPN.yaml"
    with pytest.raises(TeacherLoadError, match="do not match the teacher config"):
        build_model(_distiller_cfg(_yaml("retinanet"), r50, weights, SMALL))


def test_teacher_mismatch_points_at_the_config_it_was_trained_with(tmp_path):
    # trained with command-line options the teacher yaml lacks: the error names the
    # config.yaml that train_net.py dumped next to the weights
    weights, teacher_yaml = _teacher_file(tmp_path, _yaml("retinanet"), SMALL)
    (tmp_path / "config.yaml").write_text(open(teacher_yaml).read())
    with pytest.raises(TeacherLoadError, match=f"pass MODEL.TKD.TEACHER.CONFIG {tmp_path / 'config.yaml'}"):
        build_model(_distiller_cfg(_yaml("retinanet"), _yaml("retinanet"), weights, SMALL))
    model = build_model(_distiller_cfg(_yaml("retinanet"), str(tmp_path / "config.yaml"), weights, SMALL))
    assert model.teacher is not None


def test_teacher_mismatch_with_the_dumped_config_itself_gives_no_circular_hint(tmp_path):
    weights, _ = _teacher_file(tmp_path, _yaml("retinanet"), SMALL)
    dumped = tmp_path / "config.yaml"  # beside the weights, but not what they were trained with
    dumped.write_text(f'_BASE_: "{os.path.abspath("configs/Synthetic/retinanet_R_50_FPN.yaml")}"\n')
    with pytest.raises(TeacherLoadError, match="do not match the teacher config") as error:
        build_model(_distiller_cfg(_yaml("retinanet"), str(dumped), weights, SMALL))
    assert "pass MODEL.TKD.TEACHER.CONFIG" not in str(error.value)


def test_teacher_with_other_classes(tmp_path):
    yaml = _yaml("retinanet")
    weights, teacher_yaml = _teacher_file(tmp_path, yaml, SMALL, thing_classes=["dent", "scratch", "a", "b", "c", "d"])
    with pytest.raises(TeacherLoadError, match="trained for classes .*dent"):
        build_model(_distiller_cfg(yaml, teacher_yaml, weights, SMALL))
    # a different number of classes in the teacher config
    with pytest.raises(TeacherLoadError, match="predicts 6 classes, the student 3"):
        build_model(_distiller_cfg(yaml, teacher_yaml, weights, SMALL + ["MODEL.RETINANET.NUM_CLASSES", 3]))


def test_teacher_of_another_family(tmp_path):
    weights, teacher_yaml = _teacher_file(tmp_path, _yaml("fcos"), SMALL)
    with pytest.raises(TeacherLoadError, match="same detector family"):
        build_model(_distiller_cfg(_yaml("retinanet"), teacher_yaml, weights, SMALL))


def test_nan_loss_names_the_term_and_iteration(tmp_path, monkeypatch):
    yaml = _yaml("retinanet")
    weights, teacher_yaml = _teacher_file(tmp_path, yaml, SMALL)
    model = build_model(_distiller_cfg(yaml, teacher_yaml, weights, SMALL))
    model.train()
    real = model.distill_ded.forward

    def nan_ssim(*args, **kwargs):
        out = real(*args, **kwargs)
        out["ssim"] = out["ssim"] * float("nan")
        return out

    monkeypatch.setattr(model.distill_ded, "forward", nan_ssim)
    with EventStorage(start_iter=7), pytest.raises(KDLossError, match=r"loss_ded_ssim.*iteration 7"):
        model(_batch())


def test_inference_is_the_students(tmp_path):
    yaml = _yaml("retinanet")
    weights, teacher_yaml = _teacher_file(tmp_path, yaml, SMALL)
    model = build_model(_distiller_cfg(yaml, teacher_yaml, weights, SMALL)).eval()
    batch = [{k: v for k, v in d.items() if k != "instances"} for d in _batch()]
    with torch.no_grad():
        a = model(copy.deepcopy(batch))
        b = model.student(copy.deepcopy(batch))
    assert torch.equal(a[0]["instances"].scores, b[0]["instances"].scores)


def test_student_narrower_than_teacher_gets_align_convs(tmp_path):
    yaml = _yaml("retinanet")
    weights, teacher_yaml = _teacher_file(tmp_path, yaml, ["MODEL.FPN.OUT_CHANNELS", 64])
    # fixed weights: the KD terms train from the first step (a balance would observe it)
    model = build_model(_distiller_cfg(yaml, teacher_yaml, weights, ["MODEL.FPN.OUT_CHANNELS", 32],
                                       ["MODEL.TKD.BALANCE.ENABLED", False]))
    assert model.distill_feature_align.in_channels == 32 and model.distill_feature_align.out_channels == 64
    assert model.distill_cls_align is not None
    model.train()
    with EventStorage():
        losses = model(_batch())
    sum(v for k, v in losses.items() if k in KD_TERMS).backward()
    assert model.distill_feature_align.weight.grad.abs().sum() > 0
    assert model.distill_cls_align.weight.grad.abs().sum() > 0
    # saved with the student side of the checkpoint; the plain student ignores them
    assert any(k.startswith("distill_feature_align") for k in model.state_dict())
    plain = build_model(_cfg(yaml, ["MODEL.FPN.OUT_CHANNELS", 32]))
    incompatible = plain.load_state_dict(model.state_dict(), strict=False)
    assert not incompatible.missing_keys
    assert incompatible.unexpected_keys and all(k.startswith("distill_") for k in incompatible.unexpected_keys)


def test_teacher_side_projection_sends_the_whole_feature_signal_to_the_student(tmp_path):
    from tkd_d2.modeling.distiller import teacher_projection

    yaml = _yaml("retinanet")
    weights, teacher_yaml = _teacher_file(tmp_path, yaml, ["MODEL.FPN.OUT_CHANNELS", 64])
    model = build_model(_distiller_cfg(yaml, teacher_yaml, weights, ["MODEL.FPN.OUT_CHANNELS", 32],
                                       ["MODEL.TKD.BALANCE.ENABLED", False, "MODEL.TKD.FEATURE_ALIGN", "teacher"]))
    # nothing trainable between the feature terms and the student's FPN; a fixed, seeded map
    assert model.distill_feature_align is None
    p = model.distill_teacher_projection
    assert p.shape == (32, 64, 1, 1) and not p.requires_grad
    assert torch.equal(p, teacher_projection(64, 32))
    rows = p.reshape(32, 64)
    assert torch.allclose(rows @ rows.t(), torch.eye(32) * 2.0, atol=1e-5)  # orthogonal rows, norm sqrt(64/32)
    assert model.distill_drd.pixel_units.in_channels == 32  # DRD's graph runs at the width the terms meet
    model.train()
    with EventStorage():
        losses = model(_batch())
    feature = sum(v for k, v in losses.items() if k in FEATURE_TERMS)
    assert feature > 0
    feature.backward()
    fpn = [q for n, q in model.student.backbone.named_parameters() if "fpn" in n and q.grad is not None]
    assert fpn and sum(float(q.grad.abs().sum()) for q in fpn) > 0
    # the checkpoint stays the plain student's (the projection is redrawn, not stored)
    assert not any("teacher_projection" in k for k in model.state_dict())
    with pytest.raises(ConfigError, match="FEATURE_ALIGN"):
        build_model(_distiller_cfg(yaml, teacher_yaml, weights, ["MODEL.FPN.OUT_CHANNELS", 32],
                                   ["MODEL.TKD.FEATURE_ALIGN", "both"]))


DETECTION = ("loss_cls", "loss_box_reg")
FEATURE_TERMS = sorted(k for k in KD_TERMS if k.startswith(("loss_ded", "loss_drd")))


def _steps(model, iterations):
    """The losses of one seeded step at each iteration."""
    out = []
    for it in iterations:
        torch.manual_seed(0)
        with EventStorage(start_iter=it):
            out.append({k: float(v) for k, v in model(_batch()).items()})
    return out


def _balanced_model(tmp_path, extra):
    """A RetinaNet distiller with ``extra`` keys; every call in a test gets the same teacher."""
    yaml = _yaml("retinanet")
    if not (tmp_path / "teacher.pth").is_file():
        _teacher_file(tmp_path, yaml, SMALL)
    weights, teacher_yaml = str(tmp_path / "teacher.pth"), str(tmp_path / "teacher.yaml")
    model = build_model(_distiller_cfg(yaml, teacher_yaml, weights, SMALL, extra=extra))
    return model.train()


def test_per_term_balance_gives_each_term_its_share_then_keeps_its_scales(tmp_path, caplog):
    import logging

    shares = {"loss_crd_cls": 0.3, "loss_crd_box": 0.6, "loss_ded_fg": 0.05, "loss_ded_bg": 0.02,
              "loss_ded_ssim": 0.01, "loss_drd_instance": 0.04, "loss_drd_pixel": 0.03}
    keys = [f"MODEL.TKD.BALANCE.{k[5:].upper()}" for k in shares]
    extra = ["MODEL.TKD.BALANCE.ENABLED", True, "MODEL.TKD.CALIBRATE_ITERS", 1,
             # the same batch gives the same terms: the batch's CRD divisor, the same GloRe units
             "MODEL.TKD.CRD.NORMALIZER", "reference", "MODEL.TKD.DRD.GRAPH_MODE", "fixed",
             *sum(zip(keys, shares.values()), ())]
    model = _balanced_model(tmp_path, extra)
    with caplog.at_level(logging.INFO, logger="tkd_d2.modeling.distiller"):
        first, = _steps(model, (0,))
        second, = _steps(copy.deepcopy(model), (1,))
    detection = sum(first[k] for k in DETECTION)
    for name, share in shares.items():
        # calibrated on the first step, where the terms are only observed (unscaled, one can be
        # 1e5 x the detection loss); from the next step each makes its share (the same batch)
        assert first[name] == 0.0, name
        assert second[name] == pytest.approx(share * detection, rel=1e-4), name
    scales = model.distill_balance.scales.clone()
    assert len(set(scales.tolist())) == len(shares)  # one scale per term
    # fixed after the window: another step (other losses) does not move them; logged once
    _steps(model, (2,))
    assert torch.equal(model.distill_balance.scales, scales)
    assert len([r for r in caplog.records if "KD balance" in r.getMessage()]) == 1
    # kept in the checkpoint and restored, not recomputed, by a fresh model
    state = model.state_dict()
    assert {"distill_balance.scales", "distill_balance.sums"} <= set(state)
    fresh = _balanced_model(tmp_path, extra)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.distill_balance.scales, scales)
    again, = _steps(fresh, (1,))
    assert torch.equal(fresh.distill_balance.scales, scales)
    for name in FEATURE_TERMS:  # (CRD's running normaliser is no checkpoint state)
        assert again[name] == pytest.approx(second[name], rel=1e-5), name


def _fpn_gradient_norms(model, iteration):
    """One seeded step's detection loss and KD terms → their gradient norms on the student's FPN."""
    from tkd_d2.distill.balance import gradient_norms

    maps = {}
    handle = model.student.backbone.register_forward_hook(lambda m, i, out: maps.update(out))
    torch.manual_seed(0)
    with EventStorage(start_iter=iteration):
        losses = model(_batch())
    handle.remove()
    terms = {k: v for k, v in losses.items() if k in KD_TERMS}
    detection = sum(v for k, v in losses.items() if k not in KD_TERMS)
    return {k: float(v) for k, v in gradient_norms({"detection": detection, **terms}, maps.values()).items()}


def test_gradient_balance_gives_each_term_its_share_of_the_detection_gradient_on_the_fpn(tmp_path):
    shares = {"loss_crd_cls": 0.3, "loss_crd_box": 0.6, "loss_ded_fg": 0.05, "loss_ded_bg": 0.02,
              "loss_ded_ssim": 0.01, "loss_drd_instance": 0.04, "loss_drd_pixel": 0.03}
    keys = [f"MODEL.TKD.BALANCE.{k[5:].upper()}" for k in shares]
    extra = ["MODEL.TKD.BALANCE.ENABLED", True, "MODEL.TKD.BALANCE.MEASURE", "fpn_gradient",
             "MODEL.TKD.CALIBRATE_ITERS", 1, "MODEL.TKD.CRD.NORMALIZER", "reference",
             "MODEL.TKD.DRD.GRAPH_MODE", "fixed", *sum(zip(keys, shares.values()), ())]
    model = _balanced_model(tmp_path, extra)
    # the window's step, seen from a copy: the detection loss's pull on the FPN it calibrates on
    detection = _fpn_gradient_norms(copy.deepcopy(model), 0)["detection"]
    assert detection > 0
    _steps(model, (0,))  # the window: the terms observed (their gradient norms), not trained on
    assert model.distill_balance.calibrated
    after = _fpn_gradient_norms(model, 1)  # the same batch and student: each term pulls its share
    for name, share in shares.items():
        assert after[name] == pytest.approx(share * detection, rel=1e-4), name
    # the scales differ from the loss-value balance's on the same step
    by_value = _balanced_model(tmp_path, [x for x in extra if x not in ("MODEL.TKD.BALANCE.MEASURE", "fpn_gradient")])
    by_value.load_state_dict(model.state_dict(), strict=False)
    by_value.distill_balance.sums.zero_()
    _steps(by_value, (0,))
    assert not torch.allclose(by_value.distill_balance.scales, model.distill_balance.scales, rtol=1e-2)


def test_an_unknown_balance_measure_is_an_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="MODEL.TKD.BALANCE.MEASURE='grad'"):
        _balanced_model(tmp_path, ["MODEL.TKD.BALANCE.MEASURE", "grad"])


def test_joint_balance_sets_the_feature_terms_to_a_fraction_of_the_detection_loss(tmp_path):
    # the same batch gives the same terms: the same GloRe units, the batch's CRD divisor
    fixed_units = ["MODEL.TKD.DRD.GRAPH_MODE", "fixed", "MODEL.TKD.CRD.NORMALIZER", "reference"]
    model = _balanced_model(tmp_path, ["MODEL.TKD.BALANCE.ENABLED", False, "MODEL.TKD.CALIBRATE_FRACTION", 0.1,
                                       "MODEL.TKD.CALIBRATE_ITERS", 1, *fixed_units])
    unscaled = _balanced_model(tmp_path, ["MODEL.TKD.BALANCE.ENABLED", False, *fixed_units])
    unscaled.load_state_dict(model.state_dict(), strict=False)  # the same student
    observed, first = _steps(model, (0, 1))  # calibrated on step 0, where the terms count 0
    plain, = _steps(unscaled, (1,))
    assert all(observed[k] == 0.0 for k in FEATURE_TERMS)
    detection = sum(observed[k] for k in DETECTION)  # the calibration step's (the same batch)
    assert sum(first[k] for k in FEATURE_TERMS) == pytest.approx(0.1 * detection, rel=1e-4)
    # one scale for the group: the terms keep their proportions; CRD is not scaled
    scale = first["loss_ded_fg"] / plain["loss_ded_fg"]
    assert scale != pytest.approx(1.0)
    for k in FEATURE_TERMS:
        assert first[k] == pytest.approx(scale * plain[k], rel=1e-4)
    assert first["loss_crd_cls"] == pytest.approx(plain["loss_crd_cls"], rel=1e-5)


def test_balance_off_leaves_the_weights_and_checkpoint_alone(tmp_path):
    model = _balanced_model(tmp_path, ["MODEL.TKD.BALANCE.ENABLED", False])
    assert model.distill_balance is None
    _steps(model, (0,))
    assert not any("balance" in k for k in model.state_dict())


def test_joint_and_per_term_balance_exclude_each_other(tmp_path):
    yaml = _yaml("retinanet")
    weights, teacher_yaml = _teacher_file(tmp_path, yaml, SMALL)
    cfg = _distiller_cfg(yaml, teacher_yaml, weights, SMALL, extra=["MODEL.TKD.BALANCE.ENABLED", True,
                                                                    "MODEL.TKD.CALIBRATE_FRACTION", 0.1])
    with pytest.raises(ConfigError, match="CALIBRATE_FRACTION.*BALANCE.ENABLED"):
        build_model(cfg)


WEIGHT_KEYS = {"loss_crd_cls": "CRD.CLS_WEIGHT", "loss_crd_box": "CRD.BOX_WEIGHT",
               "loss_crd_ctr": "CRD.CENTERNESS_WEIGHT", "loss_ded_fg": "DED.FG_WEIGHT",
               "loss_ded_bg": "DED.BG_WEIGHT", "loss_ded_ssim": "DED.SSIM_WEIGHT",
               "loss_drd_instance": "DRD.INSTANCE_WEIGHT", "loss_drd_pixel": "DRD.PIXEL_WEIGHT"}


@pytest.mark.parametrize("balance", [False, True], ids=["weights", "shares"])
def test_each_key_scales_its_own_term_and_nothing_else(family, balance):
    """Doubling a term's weight (or, balanced, its share) doubles that term's weight (or
    target) alone; FEATURE_WEIGHT doubles every DED and DRD weight and nothing else."""
    from tkd_d2.modeling.kd_weights import kd_weights

    yaml = f"configs/Synthetic/tkd_{family}_Lite2_to_Lite0.yaml"
    base = _cfg(yaml, ["MODEL.TKD.PARTS", ALL_PARTS, "MODEL.TKD.BALANCE.ENABLED", balance,
                       "MODEL.TKD.CRD.CENTERNESS_WEIGHT", 0.5,
                       "MODEL.TKD.BALANCE.CRD_CTR", 0.5])
    has_ctr = family == "fcos"

    def effective(cfg):
        weights, balancer = kd_weights(cfg.MODEL.TKD, has_ctr)
        if balancer is None:
            return weights
        return {k: weights[k] * (balancer.targets[k] if k in balancer.targets else 0) for k in weights}

    before = effective(base)
    assert all(before.values()) == has_ctr and sum(v == 0 for v in before.values()) == (0 if has_ctr else 1)
    keys = {k: (f"BALANCE.{k[5:].upper()}" if balance else WEIGHT_KEYS[k]) for k in before}
    if not balance:
        keys["FEATURE_WEIGHT"] = "FEATURE_WEIGHT"
    for term, key in keys.items():
        cfg = base.clone()
        node = cfg.MODEL.TKD
        *path, leaf = key.split(".")
        for p in path:
            node = node[p]
        node[leaf] = node[leaf] * 2
        after = effective(cfg)
        doubled = set(FEATURE_TERMS) if term == "FEATURE_WEIGHT" else {term}
        for k in before:
            assert after[k] == pytest.approx(before[k] * (2 if k in doubled else 1)), (key, k)


def test_a_weight_multiplies_its_term_in_the_forward_pass(tmp_path, family):
    """The distiller applies model.weights to each term (warm-up and balance aside)."""
    yaml = _yaml(family)
    weights, teacher_yaml = _teacher_file(tmp_path, yaml, SMALL)
    model = build_model(_distiller_cfg(yaml, teacher_yaml, weights, SMALL, ["MODEL.TKD.BALANCE.ENABLED", False]))
    model.train()
    base, = _steps(copy.deepcopy(model), (0,))  # a copy a step: the detectors keep running state
    kd = sorted(k for k in base if k in KD_TERMS)
    for term in kd:
        twice = copy.deepcopy(model)
        twice.weights[term] *= 2
        doubled, = _steps(twice, (0,))
        for k in kd + list(DETECTION if family == "retinanet" else ()):
            assert doubled[k] == pytest.approx(base[k] * (2 if k == term else 1), rel=1e-5), (term, k)


def test_crd_trust_where_better_weights_crd_by_where_the_teacher_is_nearer_the_truth(tmp_path, family):
    yaml = _yaml(family)
    weights, teacher_yaml = _teacher_file(tmp_path, yaml, SMALL)
    extra = ["MODEL.TKD.BALANCE.ENABLED", False, "MODEL.TKD.PARTS", '["crd"]']
    losses, trusted = {}, {}
    for trust in ("always", "where_better"):
        torch.manual_seed(0)  # the same student both times
        model = build_model(_distiller_cfg(yaml, teacher_yaml, weights, SMALL,
                                           extra + ["MODEL.TKD.CRD.TRUST", trust]))
        model.train()
        with EventStorage() as storage:
            losses[trust] = model(_batch())
            trusted[trust] = {k: v.latest() for k, v in storage.histories().items() if k.startswith("crd_trusted")}
    assert trusted["always"] == {}
    # a random teacher is nearer the truth at some logits and boxes, not at all
    assert set(trusted["where_better"]) == {"crd_trusted_cls", "crd_trusted_box"}
    assert all(0 < v < 1 for v in trusted["where_better"].values()), trusted
    for term in ("loss_crd_cls", "loss_crd_box"):
        assert 0 < float(losses["where_better"][term]) < float(losses["always"][term]), term
    for term in DETECTION if family == "retinanet" else ():
        assert float(losses["where_better"][term]) == pytest.approx(float(losses["always"][term]))
    with pytest.raises(ConfigError, match="MODEL.TKD.CRD.TRUST='sometimes'"):
        build_model(_distiller_cfg(yaml, teacher_yaml, weights, SMALL, extra + ["MODEL.TKD.CRD.TRUST", "sometimes"]))


def test_parts_do_not_change_the_student_or_the_random_state_of_a_seed(tmp_path):
    """The parts table pairs students by seed (tools/results_table.py): students of one seed
    must start from the same weights and leave the same random state to the sampler and the
    data-loader workers, whatever MODEL.TKD.PARTS builds (align convs, graph units)."""
    import random

    import numpy as np
    from detectron2.utils.env import seed_all_rng

    yaml = _yaml("retinanet")
    wide = ["MODEL.FPN.OUT_CHANNELS", 128, "DATASETS.TRAIN", ("synthetic_defects_train",)]
    weights, teacher_yaml = _teacher_file(tmp_path, yaml, wide)  # a wider teacher: DED/DRD need the align conv
    built = {}
    for parts in ('["crd"]', '["crd", "ded"]', ALL_PARTS):
        seed_all_rng(1)
        model = build_model(_distiller_cfg(yaml, teacher_yaml, weights, SMALL, ["MODEL.TKD.PARTS", parts]))
        built[parts] = (model.student.state_dict(), torch.rand(4), np.random.randint(2 ** 31, size=4), random.random())
    assert model.distill_feature_align is not None and model.distill_drd is not None  # all three parts built
    reference_weights, reference_torch, reference_numpy, reference_python = built['["crd"]']
    for parts, (student_weights, torch_draw, numpy_draw, python_draw) in built.items():
        assert student_weights.keys() == reference_weights.keys(), parts
        assert all(torch.equal(student_weights[k], reference_weights[k]) for k in reference_weights), parts
        assert torch.equal(torch_draw, reference_torch), parts
        assert (numpy_draw == reference_numpy).all() and python_draw == reference_python, parts

"""The official TKD code's choices and the traps around them: RetinaNet CRD can leave the
anchors its assigner ignores out (the reference; the default keeps them), the reference CRD normalisers, a teacher with other anchors is a
build-time error, and MODEL.TKD.PRESET "reference" sets the reference's values (user keys win)."""
import contextlib
import os

import pytest
import torch

import tkd_d2  # noqa: F401
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

import tkd_d2.modeling.distiller as distiller_module
from tkd_d2.config import TKD_PRESETS, load_config
from tkd_d2.errors import ConfigError
from tkd_d2.modeling import TKDDistiller
from test_distiller import KD_TERMS, SMALL, _batch, _cfg, _distiller_cfg, _freeze_bn, _teacher_file, _yaml

# fixed weights: every call is a trained step (a balance would only observe its first ones); CRD
# distilled everywhere, as the reference does, so that each choice below is seen on its own
CRD_ONLY = ["MODEL.TKD.PARTS", '["crd"]', "MODEL.TKD.BALANCE.ENABLED", False, "MODEL.TKD.CRD.TRUST", "always"]


def _assignment(model, batch):
    """The student's anchors and the assigner's labels / matched boxes for ``batch``."""
    student = model.student
    with torch.no_grad():
        images = student.preprocess_image(batch)
        features = student.backbone(images.tensor)
        anchors = student.anchor_generator([features[f] for f in student.head_in_features])
        labels, matched = student.label_anchors(anchors, [x["instances"] for x in batch])
    return anchors, torch.stack(labels), matched


def _spy(monkeypatch, name):
    """Record the calls of distiller_module.<name> (then call the real function)."""
    calls, real = [], getattr(distiller_module, name)

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(distiller_module, name, spy)
    return calls


def _crd_model(tmp_path, family, opts=()):
    yaml = _yaml(family)
    weights, teacher_yaml = _teacher_file(tmp_path, yaml, SMALL)
    model = build_model(_distiller_cfg(yaml, teacher_yaml, weights, SMALL, [*CRD_ONLY, *opts]))
    model.train()
    _freeze_bn(model.student)
    return model


# ------------------------------------------------------------------ ignored anchors
def test_crd_leaves_out_the_anchors_the_assigner_ignores(tmp_path, monkeypatch):
    model = _crd_model(tmp_path, "retinanet", ["MODEL.TKD.CRD.IGNORED_ANCHORS", "exclude"])
    batch = _batch()
    _, labels, _ = _assignment(model, batch)
    ignored = (labels == -1).nonzero()
    background = (labels == model.student.num_classes).nonzero()
    assert len(ignored) and len(background), "the batch must have ignored and background anchors"
    real = distiller_module.crd_cls_loss

    def loss_crd_cls(perturbed=None):
        def perturbing(student_logits, *args, **kwargs):
            if perturbed is not None:
                student_logits = student_logits.clone()
                student_logits[perturbed[0], perturbed[1]] += 4.0
            return real(student_logits, *args, **kwargs)

        monkeypatch.setattr(distiller_module, "crd_cls_loss", perturbing)
        if hasattr(model.student, "loss_normalizer"):
            del model.student.loss_normalizer  # the same running normaliser every call
        with EventStorage():
            return float(model(batch)["loss_crd_cls"])

    clean = loss_crd_cls()
    assert loss_crd_cls(ignored[0].tolist()) == pytest.approx(clean, rel=1e-6, abs=0)
    assert loss_crd_cls(ignored[-1].tolist()) == pytest.approx(clean, rel=1e-6, abs=0)
    assert abs(loss_crd_cls(background[0].tolist()) - clean) > 1e-4 * clean

    # the box term's weight is 0 there too
    box_calls = _spy(monkeypatch, "crd_box_loss")
    with EventStorage():
        model(batch)
    (args, kwargs), = box_calls
    weight, valid = args[2], kwargs["valid_mask"]
    assert not valid[labels == -1].any() and (weight[labels == -1] == 0).all()
    assert valid[labels >= 0].all()


def _step_with_ignored_anchors(tmp_path, monkeypatch, opts=()):
    """One CRD step of a RetinaNet distiller on a batch with ignored anchors: the assigner's
    labels and the calls of crd_cls_loss, crd_box_loss and the student's label_anchors."""
    model = _crd_model(tmp_path, "retinanet", opts)
    batch = _batch()
    _, labels, _ = _assignment(model, batch)
    assert (labels == -1).any(), "the batch must have ignored anchors"
    cls_calls, box_calls = _spy(monkeypatch, "crd_cls_loss"), _spy(monkeypatch, "crd_box_loss")
    label_calls = _spy_method(monkeypatch, model.student, "label_anchors")
    with EventStorage():
        model(batch)
    return labels, cls_calls, box_calls, label_calls


def test_crd_includes_the_ignored_anchors_by_default(tmp_path, monkeypatch):
    _, cls_calls, box_calls, label_calls = _step_with_ignored_anchors(tmp_path, monkeypatch)
    # no label weight: every anchor, ignored ones included, is distilled
    assert cls_calls[0][1]["weight"] is None and box_calls[0][1]["valid_mask"] is None
    # the student's own loss assigns once; CRD with the running normaliser needs no second one
    assert len(label_calls) == 1


def test_crd_trusted_where_better_still_includes_the_ignored_anchors(tmp_path, monkeypatch):
    labels, cls_calls, box_calls, label_calls = _step_with_ignored_anchors(
        tmp_path, monkeypatch, ["MODEL.TKD.CRD.TRUST", "where_better"])  # the default
    weight = cls_calls[0][1]["weight"]  # (N, R, K): which logits the teacher is trusted at
    assert (weight[labels == -1] == 1).all()  # an ignored anchor has no label to be nearer to
    assert ((weight[labels >= 0] == 0).any())  # elsewhere the gate acts
    assert box_calls[0][1]["valid_mask"] is None
    # the gate reads the labels the student's own loss assigned: one assignment per step
    assert len(label_calls) == 1


@pytest.mark.parametrize("family,opts", [
    ("retinanet", ["MODEL.TKD.CRD.TRUST", "where_better"]),
    ("retinanet", ["MODEL.TKD.CRD.IGNORED_ANCHORS", "exclude", "MODEL.TKD.CRD.NORMALIZER", "reference"]),
    ("fcos", ["MODEL.TKD.CRD.TRUST", "where_better", "MODEL.TKD.CRD.NORMALIZER", "reference"]),
])
def test_crd_on_the_kept_assignment_equals_crd_on_a_second_one(tmp_path, monkeypatch, family, opts):
    model = _crd_model(tmp_path, family, opts)
    batch = _batch()

    def losses():
        if hasattr(model.student, "loss_normalizer"):
            del model.student.loss_normalizer  # the same running normaliser every call
        torch.manual_seed(0)
        with EventStorage():
            return {k: float(v) for k, v in model(batch).items()}

    kept = losses()
    # without the kept assignment, CRD assigns the anchors again itself
    monkeypatch.setattr(distiller_module, "keep_assignment", lambda student: contextlib.nullcontext({}))
    label_calls = _spy_method(monkeypatch, model.student, "label_anchors")
    again = losses()
    assert len(label_calls) == 2
    assert kept.keys() == again.keys() and {k for k in kept if k.startswith("loss_crd")}
    for k in kept:
        assert kept[k] == pytest.approx(again[k], rel=1e-6, abs=1e-9), k


def _spy_method(monkeypatch, obj, name):
    calls, real = [], getattr(obj, name)

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, name, spy)
    return calls


def test_unknown_ignored_anchors_choice_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="MODEL.TKD.CRD.IGNORED_ANCHORS='drop'"):
        _crd_model(tmp_path, "retinanet", ["MODEL.TKD.CRD.IGNORED_ANCHORS", "drop"])


# ------------------------------------------------------------------ normalisers
def test_running_normaliser_is_the_students_own(tmp_path, monkeypatch):
    model = _crd_model(tmp_path, "retinanet")
    calls = _spy(monkeypatch, "crd_cls_loss")
    with EventStorage():
        model(_batch())
    assert calls[0][1]["normalizer"] == pytest.approx(model.student.loss_normalizer)


def test_reference_normaliser_of_retinanet_is_the_batch_positive_count(tmp_path, monkeypatch):
    model = _crd_model(tmp_path, "retinanet", ["MODEL.TKD.CRD.NORMALIZER", "reference"])
    batch = _batch()
    _, labels, _ = _assignment(model, batch)
    positives = int(((labels >= 0) & (labels < model.student.num_classes)).sum())
    assert positives > 0
    calls = _spy(monkeypatch, "crd_cls_loss")
    with EventStorage():
        model(batch)
    assert float(calls[0][1]["normalizer"]) == positives
    # a batch without boxes: at least 1
    empty = [_batch()[1], _batch()[1]]
    calls.clear()
    with EventStorage():
        model(empty)
    assert float(calls[0][1]["normalizer"]) == 1.0


def test_reference_normaliser_of_fcos_is_the_positives_centerness_sum(tmp_path, monkeypatch):
    model = _crd_model(tmp_path, "fcos", ["MODEL.TKD.CRD.NORMALIZER", "reference"])
    batch = _batch()
    anchors, labels, matched = _assignment(model, batch)
    points = torch.cat([a.tensor for a in anchors])
    centers = (points[:, :2] + points[:, 2:]) / 2
    expected = 0.0
    for image, boxes in enumerate(matched):
        positive = (labels[image] >= 0) & (labels[image] < model.student.num_classes)
        c, b = centers[positive], boxes[positive]
        left, top = c[:, 0] - b[:, 0], c[:, 1] - b[:, 1]
        right, bottom = b[:, 2] - c[:, 0], b[:, 3] - c[:, 1]
        lr = torch.minimum(left, right) / torch.maximum(left, right)
        tb = torch.minimum(top, bottom) / torch.maximum(top, bottom)
        expected += float(torch.sqrt(lr * tb).sum())
    assert expected > 0
    calls = _spy(monkeypatch, "crd_cls_loss")
    with EventStorage():
        model(batch)
    assert float(calls[0][1]["normalizer"]) == pytest.approx(expected, rel=1e-5)


def test_unknown_normaliser_or_box_loss_is_a_config_error(tmp_path):
    yaml = _yaml("retinanet")
    weights, teacher_yaml = _teacher_file(tmp_path, yaml, SMALL)
    with pytest.raises(ConfigError, match="MODEL.TKD.CRD.NORMALIZER='batch'.*running"):
        build_model(_distiller_cfg(yaml, teacher_yaml, weights, SMALL, ["MODEL.TKD.CRD.NORMALIZER", "batch"]))
    with pytest.raises(ConfigError, match="MODEL.TKD.CRD.BOX_LOSS='diou'.*ciou"):
        build_model(_distiller_cfg(yaml, teacher_yaml, weights, SMALL, ["MODEL.TKD.CRD.BOX_LOSS", "diou"]))


# ------------------------------------------------------------------ teacher anchors
OTHER_SIZES = "[[20, 25, 30], [40, 50, 60], [80, 100, 120], [160, 200, 240], [320, 400, 480]]"


def test_teacher_with_other_anchor_sizes_is_a_build_error(tmp_path):
    yaml = _yaml("retinanet")
    weights, teacher_yaml = _teacher_file(tmp_path, yaml, SMALL + ["MODEL.ANCHOR_GENERATOR.SIZES", OTHER_SIZES])
    with pytest.raises(ConfigError) as error:
        build_model(_distiller_cfg(yaml, teacher_yaml, weights, SMALL))
    message = str(error.value)
    assert "MODEL.ANCHOR_GENERATOR.SIZES" in message and teacher_yaml in message
    assert "[20, 25, 30]" in message and "[16, 20.16, 25.4]" in message  # teacher's, student's
    assert "ASPECT_RATIOS" not in message  # only the key that differs


def test_teacher_with_other_anchor_offset_is_a_build_error(tmp_path):
    yaml = _yaml("retinanet")
    weights, teacher_yaml = _teacher_file(tmp_path, yaml, SMALL + ["MODEL.ANCHOR_GENERATOR.OFFSET", 0.5])
    with pytest.raises(ConfigError, match=r"MODEL.ANCHOR_GENERATOR.OFFSET is 0.0 for the student but 0.5"):
        build_model(_distiller_cfg(yaml, teacher_yaml, weights, SMALL))


def test_distiller_built_without_a_config_checks_anchors_too():
    student = build_model(_cfg(_yaml("retinanet"), SMALL))
    teacher = build_model(_cfg(_yaml("retinanet"), SMALL + ["MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[0.25, 1.0, 4.0]]"]))
    with pytest.raises(ConfigError, match="ASPECT_RATIOS.*student .*teacher"):
        TKDDistiller(student=student, teacher=teacher, in_features=["p3", "p4", "p5", "p6", "p7"],
                     reused_head_index=3, weights={})


# ------------------------------------------------------------------ the reference preset
@pytest.mark.parametrize("family", ["retinanet", "fcos"])
def test_reference_preset_trains_and_vanishes_when_student_is_teacher(tmp_path, family):
    yaml = _yaml(family)
    weights, teacher_yaml = _teacher_file(tmp_path, yaml, SMALL)
    cfg = _distiller_cfg(yaml, teacher_yaml, weights, SMALL + ["MODEL.TKD.PRESET", "reference"])
    assert cfg.MODEL.TKD.CRD.NORMALIZER == "reference" and cfg.MODEL.TKD.DRD.INSTANCE_FORM == "reference"
    model = build_model(cfg)
    model.student.load_state_dict(model.teacher.state_dict())
    model.train()
    _freeze_bn(model.student)
    with EventStorage():
        losses = model(_batch())
    for name in KD_TERMS:
        assert abs(float(losses[name])) < 1e-4, (name, float(losses[name]))


def _tkd(name):
    return f"configs/NEU-DET/{name}.yaml"


def _load(path, opts=()):
    return load_config(path, opts, register_datasets=False)


# the reference's R-101 -> R-50: the R-50 -> R-18 config with a ResNet-50 student
R50_STUDENT = ["MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.RES2_OUT_CHANNELS", "256"]


@pytest.mark.parametrize("name, opts, box_loss, cls_weight, box_weight", [
    ("tkd_retinanet_R_50_to_R_18", R50_STUDENT, "ciou", 1.0, 1.0),
    ("tkd_retinanet_R_50_to_R_18", [], "giou", 1.0, 1.0),
    ("tkd_fcos_R_50_to_R_18", [], "log_iou", 0.4, 0.75),
    ("tkd_retinanet_Lite2_to_Lite0", [], "giou", 1.0, 1.0),
])
def test_reference_preset_sets_the_reference_values(name, opts, box_loss, cls_weight, box_weight):
    tuned = _load(_tkd(name), opts)
    assert tuned.MODEL.TKD.FEATURE_WEIGHT < 1.0 and tuned.MODEL.TKD.WARMUP_ITERS > 0  # the yamls' tuned values
    tkd = _load(_tkd(name), opts + ["MODEL.TKD.PRESET", "reference"]).MODEL.TKD
    assert tkd.FEATURE_WEIGHT == 1.0 and tkd.WARMUP_ITERS == 0
    assert [tkd.DED.FG_WEIGHT, tkd.DED.BG_WEIGHT, tkd.DED.SSIM_WEIGHT, tkd.DRD.INSTANCE_WEIGHT,
            tkd.DRD.PIXEL_WEIGHT] == [5e-4] * 5
    assert (tkd.CRD.BOX_LOSS, tkd.CRD.CLS_WEIGHT, tkd.CRD.BOX_WEIGHT) == (box_loss, cls_weight, box_weight)
    assert tkd.CRD.NORMALIZER == "reference" and tkd.DRD.INSTANCE_FORM == "reference"
    assert tuned.MODEL.TKD.CRD.IGNORED_ANCHORS == "include" and tkd.CRD.IGNORED_ANCHORS == "exclude"
    assert tkd.CRD.TRUST == "always"  # CrossKD distils everywhere, whatever the default


def test_tuned_preset_is_todays_config():
    path = _tkd("tkd_retinanet_R_50_to_R_18")
    assert _load(path, ["MODEL.TKD.PRESET", "tuned"]).dump() == _load(path).dump()
    assert _load(path).MODEL.TKD.PRESET == "tuned"


def test_command_line_keys_win_over_the_preset_in_any_order():
    path = _tkd("tkd_retinanet_R_50_to_R_18")
    for opts in (["MODEL.TKD.PRESET", "reference", "MODEL.TKD.WARMUP_ITERS", "30"],
                 ["MODEL.TKD.WARMUP_ITERS", "30", "MODEL.TKD.PRESET", "reference"]):
        tkd = _load(path, opts).MODEL.TKD
        assert tkd.WARMUP_ITERS == 30 and tkd.FEATURE_WEIGHT == 1.0


def test_preset_named_in_a_yaml_overrides_its_bases_not_itself(tmp_path):
    from pathlib import Path

    base = Path(_tkd("tkd_retinanet_R_50_to_R_18")).resolve()
    child = tmp_path / "mine.yaml"
    child.write_text(f'_BASE_: "{base}"\nMODEL:\n  TKD:\n    PRESET: "reference"\n    CRD:\n      NORMALIZER: "running"\n')
    tkd = _load(child).MODEL.TKD
    assert tkd.FEATURE_WEIGHT == 1.0  # the base chain's 0.01 gives way to the preset
    assert tkd.CRD.NORMALIZER == "running"  # the file naming the preset wins
    grandchild = tmp_path / "theirs.yaml"
    grandchild.write_text(f'_BASE_: "{child}"\nMODEL:\n  TKD:\n    WARMUP_ITERS: 12\n')
    assert _load(grandchild).MODEL.TKD.WARMUP_ITERS == 12
    # a dumped config (every key, preset named) reloads to itself
    dumped = tmp_path / "config.yaml"
    dumped.write_text(_load(grandchild).dump())
    assert _load(dumped).MODEL.TKD == _load(grandchild).MODEL.TKD


def test_preset_in_a_list_base_overrides_the_earlier_bases_not_the_later(tmp_path):
    base = os.path.abspath(_tkd("tkd_retinanet_R_50_to_R_18"))
    (tmp_path / "preset.yaml").write_text('MODEL:\n  TKD:\n    PRESET: "reference"\n')
    (tmp_path / "later.yaml").write_text("MODEL:\n  TKD:\n    FEATURE_WEIGHT: 0.5\n")
    mine = tmp_path / "mine.yaml"
    mine.write_text(f'_BASE_: ["{base}", "preset.yaml", "later.yaml"]\n')
    tkd = _load(mine).MODEL.TKD
    assert tkd.WARMUP_ITERS == 0 and tkd.CRD.NORMALIZER == "reference"  # over the first base
    assert tkd.FEATURE_WEIGHT == 0.5  # a base merged after the one naming the preset wins
    assert os.path.dirname(tkd.TEACHER.CONFIG) == os.path.dirname(base)  # next to the yaml naming it


def test_unknown_preset_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError, match=r"MODEL.TKD.PRESET='paper'.*\['tuned', 'reference'\]"):
        _load(_tkd("tkd_fcos_R_50_to_R_18"), ["MODEL.TKD.PRESET", "paper"])
    assert TKD_PRESETS == ("tuned", "reference")

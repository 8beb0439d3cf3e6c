"""MODEL.WEIGHTS takes a torchvision ResNet ``.pth`` directly: converted to detectron2's names
on load, the backbone then computes what torchvision's ResNet computes."""
import pytest
import torch
import torchvision

from helpers import ROOT

import tkd_d2  # noqa: F401
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model, build_resnet_backbone

from tkd_d2.checkpoint import SafeCheckpointer, load_weights
from tkd_d2.config import load_config
from tkd_d2.errors import CheckpointError

CONFIGS = {18: "configs/NEU-DET/retinanet_R_18_FPN.yaml", 50: "configs/NEU-DET/retinanet_R_50_FPN.yaml"}


def _cfg(depth, norm="FrozenBN", stride_in_1x1=False):
    return load_config(ROOT / CONFIGS[depth], [
        "MODEL.WEIGHTS", "", "MODEL.RESNETS.NORM", norm,
        "MODEL.RESNETS.STRIDE_IN_1X1", str(stride_in_1x1),
        "MODEL.RESNETS.OUT_FEATURES", '["res2", "res3", "res4", "res5"]',
    ], device="cpu", register_datasets=False)


def _torchvision_file(depth, path, wrapped=False):
    """A random torchvision ResNet (every BN randomised, so BN renaming errors show) saved
    as its state_dict (``wrapped``: under ``"model"``); returns the ResNet in eval mode."""
    torch.manual_seed(depth)
    net = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    sd = net.state_dict()
    torch.save({"model": sd} if wrapped else sd, path)
    return net


def _assert_same_features(bottom_up, net):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = bottom_up(x)
        y = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        for i in range(1, 5):
            y = getattr(net, f"layer{i}")(y)
            scale = y.abs().max().item()
            torch.testing.assert_close(ours[f"res{i + 1}"], y, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("depth,norm,wrapped", [
    (18, "FrozenBN", False), (50, "FrozenBN", True), (18, "BN", False),
])
def test_torchvision_resnet_loads_into_detector(tmp_path, depth, norm, wrapped):
    path = str(tmp_path / f"resnet{depth}.pth")
    net = _torchvision_file(depth, path, wrapped)
    model = build_model(_cfg(depth, norm)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # As DefaultTrainer.resume_or_load loads MODEL.WEIGHTS (pretrained: the backbone only).
    SafeCheckpointer(model).resume_or_load(path, resume=False)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    bottom_up = {k for k in before if k.startswith("backbone.bottom_up.")
                 and not k.endswith("num_batches_tracked")}
    assert bottom_up <= changed  # every backbone tensor came from the file
    _assert_same_features(model.backbone.bottom_up, net)


def test_torchvision_resnet_loads_into_bare_backbone(tmp_path):
    path = str(tmp_path / "resnet50.pth")
    net = _torchvision_file(50, path)
    backbone = build_resnet_backbone(_cfg(50), ShapeSpec(channels=3)).eval()
    checkpoint = load_weights(backbone, path)
    assert checkpoint["num_matched"] == len(backbone.state_dict())
    _assert_same_features(backbone, net)


def test_torchvision_bottleneck_needs_stride_in_3x3(tmp_path):
    path = str(tmp_path / "resnet50.pth")
    _torchvision_file(50, path)
    model = build_model(_cfg(50, stride_in_1x1=True))
    with pytest.raises(CheckpointError, match="STRIDE_IN_1X1 False") as e:
        load_weights(model, path)
    assert path in str(e.value)
    with pytest.raises(CheckpointError, match="STRIDE_IN_1X1"):  # the trainer's route too
        SafeCheckpointer(model).resume_or_load(path, resume=False)


def test_detectron2_layout_is_not_converted(tmp_path):
    backbone = build_resnet_backbone(_cfg(18), ShapeSpec(channels=3))
    sd = backbone.state_dict()
    assert "stem.conv1.weight" in sd
    path = str(tmp_path / "d2_resnet18.pth")
    torch.save(sd, path)
    loaded = SafeCheckpointer(backbone)._load_file(path)
    assert "matching_heuristics" not in loaded and "__author__" not in loaded
    assert list(loaded["model"]) == list(sd)
    assert load_weights(backbone, path)["num_matched"] == len(sd)

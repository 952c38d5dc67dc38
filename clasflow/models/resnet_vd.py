"""ResNet-vd (PaddleClas 2.x "legendary" layout, so official `.pdparams` load by key).

Layout: ``stem.0..2`` (3x3 convs 3->32->32->64), max-pool, ``blocks.N`` (``conv0``,
``conv1``[, ``conv2``], optional ``short``), global average pool, ``fc``. The vd shortcut
of a down-sampling block average-pools (2x2, ceil mode) before its 1x1 conv; the very
first block keeps a plain 1x1 conv because its stride is 1.
"""

from __future__ import annotations

import math
from typing import Sequence

import paddle
import paddle.nn as nn
from paddle import ParamAttr
from paddle.nn.initializer import Uniform

from clasflow.errors import ClasflowError

# depth -> (block kind, blocks per stage)
DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 12, 48, 3)),
}
STAGE_WIDTHS = (64, 128, 256, 512)
DEFAULT_LR_MULT = (1.0, 1.0, 1.0, 1.0, 1.0)


class ConvBN(nn.Layer):
    """Conv (no bias) + BN [+ ReLU]; ``avg_down`` adds the vd 2x2 average pool in front."""

    def __init__(self, in_c, out_c, kernel, stride=1, relu=True, avg_down=False,
                 lr_mult=1.0, data_format="NCHW"):
        super().__init__()
        self.avg_down = avg_down
        if avg_down:
            self.pool = nn.AvgPool2D(2, stride, padding="SAME", ceil_mode=True,
                                     data_format=data_format)
        self.conv = nn.Conv2D(in_c, out_c, kernel, stride=1 if avg_down else stride,
                              padding=(kernel - 1) // 2, data_format=data_format,
                              weight_attr=ParamAttr(learning_rate=lr_mult), bias_attr=False)
        self.bn = nn.BatchNorm2D(out_c, data_format=data_format,
                                 weight_attr=ParamAttr(learning_rate=lr_mult),
                                 bias_attr=ParamAttr(learning_rate=lr_mult))
        self.act = nn.ReLU() if relu else None

    def forward(self, x):
        if self.avg_down:
            x = self.pool(x)
        x = self.bn(self.conv(x))
        return self.act(x) if self.act is not None else x


class BasicBlock(nn.Layer):
    expansion = 1

    def __init__(self, in_c, width, stride, projection, first, lr_mult, data_format):
        super().__init__()
        kw = dict(lr_mult=lr_mult, data_format=data_format)
        self.conv0 = ConvBN(in_c, width, 3, stride, **kw)
        self.conv1 = ConvBN(width, width, 3, 1, relu=False, **kw)
        if projection:
            self.short = ConvBN(in_c, width, 1, stride, relu=False, avg_down=not first, **kw)
        self.projection = projection
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.conv1(self.conv0(x))
        return self.relu(y + (self.short(x) if self.projection else x))


class BottleneckBlock(nn.Layer):
    expansion = 4

    def __init__(self, in_c, width, stride, projection, first, lr_mult, data_format):
        super().__init__()
        kw = dict(lr_mult=lr_mult, data_format=data_format)
        self.conv0 = ConvBN(in_c, width, 1, 1, **kw)
        self.conv1 = ConvBN(width, width, 3, stride, **kw)
        self.conv2 = ConvBN(width, width * 4, 1, 1, relu=False, **kw)
        if projection:
            self.short = ConvBN(in_c, width * 4, 1, stride, relu=False, avg_down=not first, **kw)
        self.projection = projection
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.conv2(self.conv1(self.conv0(x)))
        return self.relu(y + (self.short(x) if self.projection else x))


class ResNetVd(nn.Layer):
    """ResNet-vd classifier.

    ``lr_mult_list`` (5 numbers) scales the learning rate of conv weights and BN
    scale/offset: entry 0 for the stem, entries 1..4 for stages 1..4; ``fc`` stays 1.0.
    """

    def __init__(self, depth=50, class_num=1000, lr_mult_list: Sequence[float] = DEFAULT_LR_MULT,
                 data_format="NCHW"):
        super().__init__()
        if depth not in DEPTHS:
            raise ClasflowError(f"ResNet_vd depth must be one of {sorted(DEPTHS)}, got {depth}")
        lr_mult_list = _check_lr_mult(lr_mult_list)
        kind, per_stage = DEPTHS[depth]
        block_cls = BasicBlock if kind == "basic" else BottleneckBlock
        self.depth, self.block_depth, self.class_num = depth, tuple(per_stage), class_num
        self.lr_mult_list, self.data_format = lr_mult_list, data_format

        stem_kw = dict(lr_mult=lr_mult_list[0], data_format=data_format)
        self.stem = nn.Sequential(ConvBN(3, 32, 3, 2, **stem_kw), ConvBN(32, 32, 3, 1, **stem_kw),
                                  ConvBN(32, 64, 3, 1, **stem_kw))
        self.max_pool = nn.MaxPool2D(3, 2, padding=1, data_format=data_format)

        blocks, in_c = [], 64
        for s, (n, width) in enumerate(zip(per_stage, STAGE_WIDTHS)):
            for i in range(n):
                blocks.append(block_cls(in_c, width, stride=2 if (i == 0 and s > 0) else 1,
                                        projection=i == 0, first=(s == 0 and i == 0),
                                        lr_mult=lr_mult_list[s + 1], data_format=data_format))
                in_c = width * block_cls.expansion
        self.blocks = nn.Sequential(*blocks)

        self.avg_pool = nn.AdaptiveAvgPool2D(1, data_format=data_format)
        self.flatten = nn.Flatten()
        bound = 1.0 / math.sqrt(in_c)
        self.fc = nn.Linear(in_c, class_num, weight_attr=ParamAttr(initializer=Uniform(-bound, bound)))

    def forward(self, x):
        if self.data_format == "NHWC":
            x = paddle.transpose(x, [0, 2, 3, 1])
        x = self.max_pool(self.stem(x))
        x = self.blocks(x)
        return self.fc(self.flatten(self.avg_pool(x)))


def _check_lr_mult(values) -> tuple[float, ...]:
    if not isinstance(values, (list, tuple)) or len(values) != 5:
        raise ClasflowError(f"lr_mult_list must be a list of 5 numbers (stem, stage1..stage4), got {values!r}")
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ClasflowError(f"lr_mult_list must hold numbers, got {values!r}") from None
    if any(v < 0 or not math.isfinite(v) for v in out):
        raise ClasflowError(f"lr_mult_list entries must be finite and >= 0, got {values!r}")
    return out


def _factory(depth):
    def build(class_num=1000, lr_mult_list=DEFAULT_LR_MULT, data_format="NCHW"):
        return ResNetVd(depth, class_num=class_num, lr_mult_list=lr_mult_list, data_format=data_format)

    build.__name__ = f"ResNet{depth}_vd"
    build.__doc__ = f"ResNet{depth}_vd (PaddleClas 2.x key layout)."
    return build


MODELS = {f"ResNet{d}_vd": _factory(d) for d in DEPTHS}

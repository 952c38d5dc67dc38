"""Teacher/student pair for the quick start's knowledge distillation.

The teacher (ResNet50_vd) is frozen: its parameters never get gradients and it always runs
in eval mode (BN uses running statistics, no batch-stat updates), even after ``.train()``
on the wrapper or on a parent layer. ``forward`` returns ``(teacher_logits, student_logits)``
with the teacher output detached (``stop_gradient``).
"""

from __future__ import annotations

import paddle
import paddle.nn as nn

from .mobilenet_v3 import MobileNetV3
from .resnet_vd import ResNetVd

NAME = "ResNet50_vd_distill_MobileNetV3_large_x1_0"


class DistillModel(nn.Layer):
    """Frozen ``teacher`` + trainable ``student``; forward gives ``(teacher, student)`` logits."""

    def __init__(self, teacher: nn.Layer, student: nn.Layer):
        super().__init__()
        self.teacher = teacher
        self.student = student
        for p in self.teacher.parameters():
            p.trainable = False  # also sets stop_gradient
        self._teacher_to_eval()

    def _teacher_to_eval(self):
        self.teacher.training = False
        for layer in self.teacher.sublayers():
            layer.training = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._teacher_to_eval()
        return self

    def forward(self, x):
        # A parent's .train() flips every sublayer's flag directly, so re-check here.
        if self.teacher.training or any(layer.training for layer in self.teacher.sublayers()):
            self._teacher_to_eval()
        with paddle.no_grad():
            t = self.teacher(x)
        t.stop_gradient = True
        return t, self.student(x)

    def trainable_parameters(self):
        """The student's parameters (what an optimizer should update)."""
        return [p for p in self.parameters() if not p.stop_gradient]


def build(class_num=1000, dropout_prob=0.2):
    """ResNet50_vd teacher and MobileNetV3_large_x1_0 student, both with ``class_num`` outputs."""
    return DistillModel(ResNetVd(50, class_num=class_num),
                        MobileNetV3("large", 1.0, class_num=class_num, dropout_prob=dropout_prob))


MODELS = {NAME: build}

"""Losses and metrics of the quick start: (label-smoothed) cross entropy, mixup, JSDiv, top-k."""

from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F


def cross_entropy(logits: paddle.Tensor, labels: paddle.Tensor, class_num: int, epsilon: float = 0.0) -> paddle.Tensor:
    """Mean cross entropy; with `epsilon` > 0, against labels smoothed as PaddleClas does
    (one-hot * (1 - eps) + eps / class_num)."""
    labels = labels.reshape([-1])
    if epsilon <= 0:
        return F.cross_entropy(logits, labels.unsqueeze(-1)).mean()
    soft = F.one_hot(labels, class_num) * (1.0 - epsilon) + epsilon / class_num
    return (-soft * F.log_softmax(logits, axis=-1)).sum(axis=-1).mean()


def mixup(images: paddle.Tensor, labels: paddle.Tensor, alpha: float, rng: np.random.Generator):
    """Mix a batch with a shuffled copy of itself: returns (images, labels_a, labels_b, lam)."""
    lam = float(rng.beta(alpha, alpha))
    perm = paddle.to_tensor(rng.permutation(images.shape[0]))
    mixed = images * lam + paddle.gather(images, perm) * (1.0 - lam)
    return mixed, labels, paddle.gather(labels, perm), lam


def mixup_loss(logits, labels_a, labels_b, lam: float, class_num: int, epsilon: float = 0.0) -> paddle.Tensor:
    return lam * cross_entropy(logits, labels_a, class_num, epsilon) + (1 - lam) * cross_entropy(logits, labels_b, class_num, epsilon)


def jsdiv(student_logits: paddle.Tensor, teacher_logits: paddle.Tensor) -> paddle.Tensor:
    """PaddleClas's JSDivLoss: both softmaxed; mean over batch x classes of
    (KL(s||t) + KL(t||s)) / 2 with each term p * log((p + 1e-10) / (q + 1e-10)) * class_dim."""
    class_dim = student_logits.shape[-1]
    s = F.softmax(student_logits, axis=-1)
    t = F.softmax(teacher_logits.detach(), axis=-1)

    def kl(p, q):
        return p * paddle.log((p + 1e-10) / (q + 1e-10)) * class_dim

    return ((kl(s, t) + kl(t, s)) / 2.0).mean()


def topk_hits(logits: paddle.Tensor, labels: paddle.Tensor, k: int) -> paddle.Tensor:
    """How many samples have their label among the top-k logits, as a float32 tensor on the
    logits' device (reading it is what waits for the device)."""
    k = min(k, logits.shape[-1])
    top = paddle.topk(logits, k, axis=-1)[1]
    return (top == labels.reshape([-1, 1])).any(axis=-1).astype("float32").sum()


def topk_correct(logits: paddle.Tensor, labels: paddle.Tensor, k: int) -> int:
    """`topk_hits` read on the host."""
    return int(topk_hits(logits, labels, k))

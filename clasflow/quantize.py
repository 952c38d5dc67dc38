"""Int8 post-training quantization, calibrated on real images, for Paddle's TensorRT.

Paddle 3.x's TensorRT route (``paddle.tensorrt.convert``, the ``paddle-trt`` benchmark backend)
has no calibrator: with ``PrecisionMode.INT8`` it reads each tensor's range from the
``quantize_linear``/``dequantize_linear`` pairs of a quantized program. This module writes that
program from the dygraph model:

1. ``paddle.quantization.PTQ`` inserts abs-max observers (8 bit, per tensor) on the activations
   and weights of every convolution and linear layer;
2. the calibration images run through the observed model (eval mode, batches of
   ``CALIB_BATCH``);
3. ``PTQ.convert`` turns the observers into quantize/dequantize ops holding the ranges, and
   ``paddle.jit.save`` writes ``inference.pdmodel`` + ``inference.pdiparams``.

The quantized program is saved in the pre-PIR format (``.pdmodel``): Paddle 3.3's PIR export of
a quantize op fixes the batch size (it fails on ``[None, 3, H, W]``), the pre-PIR one keeps the
batch dynamic, and ``paddle.tensorrt.convert`` reads both formats.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

MODEL_FILE = "inference.pdmodel"
PARAMS_FILE = "inference.pdiparams"
PREFIX = "inference"
CALIB_BATCH = 8
OBSERVER = "paddle.quantization.PTQ, AbsmaxObserver(quant_bits=8) on activations and weights (per tensor)"


def images_sha256(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images, dtype=np.float32).tobytes()).hexdigest()


def calibrate(net, images: np.ndarray, batch_size: int = CALIB_BATCH):
    """A quantized copy of ``net`` (eval mode) whose ranges come from ``images`` (N, 3, H, W)."""
    import paddle
    from paddle.quantization import PTQ, QuantConfig
    from paddle.quantization.observers import AbsmaxObserver

    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"calibration needs a non-empty (N, 3, H, W) batch, got shape {list(images.shape)}")
    ptq = PTQ(QuantConfig(activation=AbsmaxObserver(quant_bits=8), weight=AbsmaxObserver(quant_bits=8)))
    observed = ptq.quantize(net)  # a copy; ``net`` stays as it is
    observed.eval()
    with paddle.no_grad():
        for start in range(0, len(images), batch_size):
            observed(paddle.to_tensor(np.ascontiguousarray(images[start:start + batch_size], dtype=np.float32)))
    quantized = ptq.convert(observed, inplace=True)
    quantized.eval()
    return quantized


def save_quantized(quantized, folder: Path, input_name: str, h: int, w: int) -> None:
    """``folder/inference.pdmodel`` + ``.pdiparams`` with input ``[None, 3, h, w]`` (pre-PIR format)."""
    import paddle

    spec = [paddle.static.InputSpec(shape=[None, 3, h, w], dtype="float32", name=input_name)]
    with paddle.pir_utils.OldIrGuard():
        paddle.jit.save(quantized, str(folder / PREFIX), input_spec=spec)
    for leftover in folder.glob(f"{PREFIX}.pdiparams.info"):
        leftover.unlink()
    missing = [f for f in (MODEL_FILE, PARAMS_FILE) if not (folder / f).is_file()]
    if missing:
        raise RuntimeError(f"paddle.jit.save of the quantized model did not write {missing} in {folder}")


def program_ops(model_file: Path) -> list[dict[str, Any]]:
    """The ops of a saved pre-PIR program (``.pdmodel``), as plain data: type, inputs, outputs."""
    from paddle.base import core

    desc = core.ProgramDesc(Path(model_file).read_bytes())  # kept alive while its ops are read
    ops = []
    for b in range(desc.num_blocks()):
        block = desc.block(b)
        for i in range(block.op_size()):
            op = block.op(i)
            ops.append({"type": op.type(), "inputs": {k: list(op.input(k)) for k in op.input_names()},
                        "outputs": {k: list(op.output(k)) for k in op.output_names()}})
    return ops


def quantized_op_counts(model_file: Path) -> dict[str, int]:
    """How many quantize_linear / dequantize_linear ops a saved ``.pdmodel`` holds."""
    kinds = [op["type"] for op in program_ops(model_file)]
    return {k: kinds.count(k) for k in ("quantize_linear", "dequantize_linear")}


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.asarray(a).argmax(axis=1) == np.asarray(b).argmax(axis=1)).mean())


def describe(images: np.ndarray, source: str, files_sha256: list[str] | None = None) -> dict[str, Any]:
    """The calibration set as inference.yml records it; ``files_sha256`` (each image file's hash)
    lets the benchmark keep these images out of its held-out agreement set."""
    out = {"source": source, "images": int(len(images)), "sha256": images_sha256(images), "observer": OBSERVER,
           "batch_size": CALIB_BATCH}
    if files_sha256 is not None:
        out["files_sha256"] = list(files_sha256)
    return out

"""What every backend shares: the settings, the per-run context handed to a backend, the
runner interface (a batch in, logits out), the skip signal and the engine-cache key."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from clasflow.predict import model_file

BACKENDS = ("paddle", "paddle-trt", "onnxruntime", "onnxruntime-trt", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
DEVICES = ("cpu", "gpu")
MAX_IMAGES = 256  # real images kept for inputs and the top-1 agreement
CALIB_IMAGES = 32  # images fed to TensorRT's int8 calibration
WORKSPACE = 1 << 30


class Skip(Exception):
    """This backend/device/precision cannot run here; the message says why."""


class Runner(Protocol):
    """What a backend hands back: ``run`` takes a float32 NCHW batch (preprocessed as
    inference.yml says) and returns the logits as a host array, (N, classes)."""

    build_s: float  # predictor creation / engine build or load, seconds

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


@dataclass
class BenchSettings:
    model_dir: str
    backends: list[str] = field(default_factory=lambda: ["paddle"])
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    threads: int | None = None
    warmup: int = 10
    repeats: int = 100
    image_list: str | None = None
    data_dir: str | None = None
    engine_cache: str | None = None
    gpu_id: int = 0
    seed: int = 0


@dataclass
class Context:
    """One model as a backend sees it: its folder and inference.yml, the input size, the batch
    profile (min, opt, max), CPU threads, the engine cache folder and the int8 calibration images."""

    model_dir: Path
    meta: dict[str, Any]
    hw: tuple[int, int]
    profile: tuple[int, int, int]
    threads: int
    cache_dir: Path
    calib: np.ndarray | None = None
    gpu_id: int = 0
    _hash: str | None = None

    def model_hash(self) -> str:
        if self._hash is None:
            self._hash = file_sha256(model_file(self.model_dir, self.meta, "model"),
                                     model_file(self.model_dir, self.meta, "params"))
        return self._hash

    def onnx_file(self) -> Path:
        """model.onnx of the export, or Skip when it was exported without --onnx."""
        name = (self.meta.get("files") or {}).get("onnx")
        if not name or not (self.model_dir / name).is_file():
            raise Skip(f"{self.model_dir} has no model.onnx (export with --onnx)")
        return self.model_dir / name


def default_engine_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clasflow" / "engines"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "unknown"


def file_sha256(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def engine_key(model_hash: str, precision: str, profile: tuple[int, int, int], hw: tuple[int, int],
               trt_version: str, gpu: str | None) -> str:
    mn, opt, mx = profile
    return (f"{model_hash[:16]}_{precision}_bs{mn}-{opt}-{mx}_{hw[0]}x{hw[1]}_trt{slug(trt_version)}"
            f"_{slug(gpu or 'gpu')}")


def need_gpu(device: str) -> None:
    if device != "gpu":
        raise Skip("TensorRT runs on the GPU: use --device gpu")

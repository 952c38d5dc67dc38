"""What a benchmark was measured on: library versions, CPU, GPU and driver."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from clasflow.benchmark.cuda import CudaRuntime
from clasflow.predict import default_threads


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def nvidia_smi() -> dict[str, str]:
    """The first GPU's name and the driver version from nvidia-smi; {} without it."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return {}
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=15, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    first = out.strip().splitlines()[0] if out.strip() else ""
    parts = [p.strip() for p in first.split(",")]
    return {"gpu": parts[0], "driver": parts[1]} if len(parts) >= 2 else {}


def tensorrt_version() -> str | None:
    try:
        import tensorrt as trt
    except Exception:  # ImportError, or a broken install that fails to load its libraries
        return None
    return str(trt.__version__)


def environment(threads: int | None = None) -> dict[str, Any]:
    """Versions (paddle, onnxruntime, TensorRT, CUDA, driver where available) and the device."""
    from clasflow.export import versions

    import paddle
    import paddle.inference as pi

    threads = int(threads or default_threads())
    v: dict[str, Any] = versions()
    v["paddle_cuda"] = str(paddle.version.cuda())
    v["paddle_cudnn"] = str(paddle.version.cudnn())
    trt_compile = ".".join(map(str, pi.get_trt_compile_version()))
    v["paddle_tensorrt_compiled"] = trt_compile if trt_compile != "0.0.0" else None
    v["tensorrt"] = tensorrt_version()
    smi = nvidia_smi()
    cuda = CudaRuntime.load()
    gpus = cuda.device_count() if cuda is not None else 0
    v["cuda_runtime"] = cuda.runtime_version() if gpus else None  # cuda-bindings' runtime, when a GPU can use it
    v["cuda_driver"] = cuda.driver_version() if gpus else None
    v["nvidia_driver"] = smi.get("driver")
    device = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "cpu_affinity": default_threads(), "threads": threads,
              "gpu": smi.get("gpu") or (cuda.device_name(0) if gpus else None),
              "gpu_compute_capability": cuda.compute_capability(0) if gpus else None, "gpu_count": gpus}
    return {"versions": v, "device": device}

"""The benchmark stage: latency and throughput of an exported model per backend, precision and
batch size, with the versions and device they were measured on.

Backends (``--backend``, comma list):

* ``paddle`` -- Paddle Inference; CPU with oneDNN and ``--threads`` math threads (fp32); GPU
  with CUDA kernels (fp32, fp16 through Paddle's mixed precision);
* ``paddle-trt`` -- Paddle Inference on the GPU with TensorRT subgraphs (fp32, fp16, int8). The
  exports are Paddle 3.x ``.json`` (PIR) programs, for which Paddle's documented TensorRT route is
  ``paddle.tensorrt.convert`` (PIR-TRT; ``Config.enable_tensorrt_engine`` is the pre-PIR
  ``.pdmodel`` route); the converted program is cached in the engine cache. PIR-TRT has no
  calibrator: int8 converts the export's ``int8/`` model, quantized by post-training calibration
  on real images at export time (``clasflow export --int8_calib LIST``, `clasflow.quantize`);
* ``onnxruntime`` -- ``model.onnx`` on CPUExecutionProvider (CPU) or CUDAExecutionProvider (GPU);
* ``onnxruntime-trt`` -- ``model.onnx`` on onnxruntime's TensorrtExecutionProvider (fp32, fp16);
* ``tensorrt`` -- a native TensorRT engine built from ``model.onnx`` with the ``tensorrt`` Python
  API (fp32, fp16, and int8 calibrated with an entropy calibrator on up to 32 real preprocessed
  images from ``--image_list``), cached on disk under a key made of the model hash, precision
  (+ calibration set hash), batch profile, input size, TensorRT version and GPU name.

A combination this machine cannot run becomes a result ``{"status": "skipped", "reason": ...}``;
one that breaks while running becomes ``{"status": "failed", "reason": ...}``. Engine build /
predictor creation (``build_s``) and warm-up (``warmup_s``, ``first_run_ms``) are measured apart
from the steady-state latencies (mean/p50/p90/p99 over ``repeats`` timed runs, host array in,
host array out). With ``--image_list`` the inputs are real images preprocessed as inference.yml
says, and each result reports its top-1 agreement with fp32 on those images.

``python -m clasflow.benchmark --bench-cpu`` measures MobileNetV3_large_x1_0 and ResNet50_vd
(random weights) at 224px, batch 1 and 4, paddle (oneDNN) and onnxruntime side by side.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime as _dt
import gc
import hashlib
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from clasflow.errors import ClasflowError
from clasflow.predict import OrtRunner, PaddleRunner, default_threads, load_image_list, load_meta, model_file
from clasflow.quantize import images_sha256

log = logging.getLogger(__name__)

SCHEMA = "clasflow.benchmark/1"
BACKENDS = ("paddle", "paddle-trt", "onnxruntime", "onnxruntime-trt", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
DEVICES = ("cpu", "gpu")
MAX_IMAGES = 256  # real images kept for inputs and the top-1 agreement
CALIB_IMAGES = 32  # images fed to TensorRT's int8 calibration
WORKSPACE = 1 << 30
BENCH_ARCHS = ("MobileNetV3_large_x1_0", "ResNet50_vd")


class Skip(Exception):
    """This backend/device/precision cannot run here; the message says why."""


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


# ------------------------------------------------------------------ argument parsing helpers


def parse_choices(text: str | Sequence[str], allowed: Sequence[str], what: str) -> list[str]:
    items = text if not isinstance(text, str) else [t for t in re.split(r"[,\s]+", text) if t]
    out: list[str] = []
    for item in items:
        item = item.strip().lower().replace("_", "-")
        if item not in allowed:
            raise ClasflowError(f"--{what}: {item!r} is not one of {', '.join(allowed)}")
        if item not in out:
            out.append(item)
    if not out:
        raise ClasflowError(f"--{what}: give at least one of {', '.join(allowed)}")
    return out


def parse_batch_sizes(text: str | Sequence[int]) -> list[int]:
    items = re.split(r"[,\s]+", text) if isinstance(text, str) else list(text)
    out: list[int] = []
    for item in items:
        if item == "":
            continue
        try:
            n = int(item)
        except ValueError:
            raise ClasflowError(f"--batch_size: {item!r} is not an integer (e.g. --batch_size 1,4)") from None
        if n < 1:
            raise ClasflowError(f"--batch_size: {n} must be at least 1")
        if n not in out:
            out.append(n)
    if not out:
        raise ClasflowError("--batch_size: give at least one batch size, e.g. 1,4")
    return out


# ------------------------------------------------------------------ environment


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or platform.machine()


def _nvidia_smi() -> dict[str, str]:
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


def environment(threads: int) -> dict[str, Any]:
    """Versions (paddle, onnxruntime, TensorRT, CUDA, driver where available) and the device."""
    from clasflow.export import versions

    import paddle
    import paddle.inference as pi

    v: dict[str, Any] = versions()
    v["paddle_cuda"] = str(paddle.version.cuda())
    v["paddle_cudnn"] = str(paddle.version.cudnn())
    trt_compile = ".".join(map(str, pi.get_trt_compile_version()))
    v["paddle_tensorrt_compiled"] = trt_compile if trt_compile != "0.0.0" else None
    try:
        import tensorrt as trt

        v["tensorrt"] = trt.__version__
    except Exception:  # ImportError, or a broken install that fails to load its libraries
        v["tensorrt"] = None
    smi = _nvidia_smi()
    cuda = _Cudart.try_load()
    gpus = cuda.device_count() if cuda is not None else 0
    v["cuda_runtime"] = cuda.runtime_version() if gpus else None  # libcudart, when a GPU can use it
    v["cuda_driver"] = cuda.driver_version() if gpus else None
    v["nvidia_driver"] = smi.get("driver")
    device = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "cpu_affinity": default_threads(), "threads": threads,
              "gpu": smi.get("gpu") or (cuda.device_name(0) if gpus else None), "gpu_count": gpus}
    return {"versions": v, "device": device}


# ------------------------------------------------------------------ CUDA runtime (ctypes; for native TensorRT)


class _Cudart:
    """The few libcudart calls native TensorRT needs (device buffers, a stream, copies)."""

    H2D, D2H = 1, 2

    def __init__(self, lib: ctypes.CDLL):
        self.lib = lib
        for name in ("cudaMalloc", "cudaFree", "cudaMemcpyAsync", "cudaStreamCreate", "cudaStreamSynchronize",
                     "cudaStreamDestroy", "cudaGetDeviceCount", "cudaSetDevice", "cudaRuntimeGetVersion",
                     "cudaDriverGetVersion"):
            getattr(lib, name).restype = ctypes.c_int
        lib.cudaMemcpyAsync.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]

    @classmethod
    def try_load(cls) -> "_Cudart | None":
        names = []
        with contextlib.suppress(OSError):  # prefer the CUDA runtime this process already uses (Paddle's)
            for line in Path("/proc/self/maps").read_text().splitlines():
                path = line.split()[-1]
                if "libcudart.so" in path and path not in names:
                    names.append(path)
        found = ctypes.util.find_library("cudart")
        if found:
            names.append(found)
        names += ["libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"]
        with contextlib.suppress(Exception):  # pip wheels (nvidia-cuda-runtime-cu12) keep it in site-packages
            import nvidia.cuda_runtime as ncr  # type: ignore

            for base in getattr(ncr, "__path__", []):
                names += [str(p) for p in sorted(Path(base, "lib").glob("libcudart.so*"))]
        for name in names:
            try:
                return cls(ctypes.CDLL(name))
            except OSError:
                continue
        return None

    def _check(self, status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"CUDA runtime error {status} in {what}")

    def device_count(self) -> int:
        n = ctypes.c_int(0)
        return n.value if self.lib.cudaGetDeviceCount(ctypes.byref(n)) == 0 else 0

    def set_device(self, i: int) -> None:
        self._check(self.lib.cudaSetDevice(int(i)), "cudaSetDevice")

    def device_name(self, i: int) -> str | None:
        buf = ctypes.create_string_buffer(16384)  # cudaDeviceProp starts with char name[256]
        for fn in ("cudaGetDeviceProperties_v2", "cudaGetDeviceProperties"):
            f = getattr(self.lib, fn, None)
            if f is not None and f(buf, int(i)) == 0:
                return buf.raw[:256].split(b"\0", 1)[0].decode(errors="replace") or None
        return None

    def runtime_version(self) -> str | None:
        v = ctypes.c_int(0)
        return _cuda_version(v.value) if self.lib.cudaRuntimeGetVersion(ctypes.byref(v)) == 0 else None

    def driver_version(self) -> str | None:
        v = ctypes.c_int(0)
        return _cuda_version(v.value) if self.lib.cudaDriverGetVersion(ctypes.byref(v)) == 0 and v.value else None

    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        self._check(self.lib.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(max(1, int(nbytes)))), "cudaMalloc")
        return int(ptr.value)

    def free(self, ptr: int) -> None:
        self.lib.cudaFree(ctypes.c_void_p(ptr))

    def stream(self) -> int:
        s = ctypes.c_void_p()
        self._check(self.lib.cudaStreamCreate(ctypes.byref(s)), "cudaStreamCreate")
        return int(s.value or 0)

    def sync(self, stream: int) -> None:
        self._check(self.lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize")

    def destroy_stream(self, stream: int) -> None:
        self.lib.cudaStreamDestroy(ctypes.c_void_p(stream))

    def copy(self, dst: int, src: int, nbytes: int, kind: int, stream: int) -> None:
        self._check(self.lib.cudaMemcpyAsync(ctypes.c_void_p(dst), ctypes.c_void_p(src), ctypes.c_size_t(nbytes),
                                             kind, ctypes.c_void_p(stream)), "cudaMemcpyAsync")


def _cuda_version(n: int) -> str:
    return f"{n // 1000}.{(n % 1000) // 10}"


# ------------------------------------------------------------------ native TensorRT


def _slug(text: str) -> str:
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
    return (f"{model_hash[:16]}_{precision}_bs{mn}-{opt}-{mx}_{hw[0]}x{hw[1]}_trt{_slug(trt_version)}"
            f"_{_slug(gpu or 'gpu')}")


class TensorRTRunner:
    """A TensorRT engine built from model.onnx (or loaded from the cache), run with
    ``execute_async_v3`` on one stream (TensorRT >= 8.5 tensor-name API)."""

    def __init__(self, onnx_file: Path, *, precision: str, profile: tuple[int, int, int], hw: tuple[int, int],
                 cache_dir: Path, gpu_id: int = 0, calib: np.ndarray | None = None):
        import tensorrt as trt

        self.trt = trt
        self.cuda = _Cudart.try_load()
        if self.cuda is None:
            raise Skip("libcudart (the CUDA runtime) could not be loaded")
        if self.cuda.device_count() <= gpu_id:
            raise Skip(f"no CUDA device {gpu_id} visible")
        self.cuda.set_device(gpu_id)
        self.logger = trt.Logger(trt.Logger.WARNING)
        tag = precision
        if precision == "int8":
            if calib is None or len(calib) == 0:
                raise Skip("int8 calibration needs real images: pass --image_list")
            tag = f"int8-calib{images_sha256(calib)[:8]}"
        key = engine_key(file_sha256(onnx_file), tag, profile, hw, trt.__version__, self.cuda.device_name(gpu_id))
        self.engine_path = Path(cache_dir) / f"{key}.engine"
        self.calib = calib
        started = time.perf_counter()
        engine = None
        if self.engine_path.is_file():
            engine = trt.Runtime(self.logger).deserialize_cuda_engine(self.engine_path.read_bytes())
            self.cache = "hit" if engine is not None else "stale"
        if engine is None:
            blob = self._build(onnx_file, precision, profile, hw)
            from clasflow.fsutil import atomic_write

            with atomic_write(self.engine_path) as fh:
                fh.write(blob)
            engine = trt.Runtime(self.logger).deserialize_cuda_engine(blob)
            self.cache = "miss" if not hasattr(self, "cache") else self.cache
            if engine is None:
                raise RuntimeError("TensorRT could not deserialize the engine it just built")
        self.build_s = time.perf_counter() - started
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        ins = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or len(outs) < 1:
            raise RuntimeError(f"expected one input and an output, engine has inputs {ins} outputs {outs}")
        self.input_name, self.output_name = ins[0], outs[0]
        self.out_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self.output_name)))
        max_bs = profile[2]
        self.d_in = self.cuda.malloc(max_bs * 3 * hw[0] * hw[1] * 4)
        out_shape = list(engine.get_tensor_shape(self.output_name))
        per_sample = int(np.prod([d for d in out_shape[1:] if d > 0])) if len(out_shape) > 1 else 1
        self.d_out = self.cuda.malloc(max_bs * max(per_sample, 1) * self.out_dtype.itemsize)
        self.stream = self.cuda.stream()
        self.device, self.precision = "gpu", precision

    def _build(self, onnx_file: Path, precision: str, profile: tuple[int, int, int], hw: tuple[int, int]) -> bytes:
        trt = self.trt
        builder = trt.Builder(self.logger)
        flags = 0
        if int(trt.__version__.split(".")[0]) < 10:
            flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(Path(onnx_file).read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT's ONNX parser rejected {onnx_file}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE)
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        mn, opt, mx = profile
        h, w = hw
        name = network.get_input(0).name
        opt_profile = builder.create_optimization_profile()
        opt_profile.set_shape(name, (mn, 3, h, w), (opt, 3, h, w), (mx, 3, h, w))
        config.add_optimization_profile(opt_profile)
        calibrator = None
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            cb = int(min(len(self.calib), 8))
            calib_profile = builder.create_optimization_profile()
            calib_profile.set_shape(name, (cb, 3, h, w), (cb, 3, h, w), (cb, 3, h, w))
            config.set_calibration_profile(calib_profile)
            calibrator = _make_calibrator(trt, self.cuda, self.calib, cb, self.engine_path.with_suffix(".calib"))
            config.int8_calibrator = calibrator
        blob = builder.build_serialized_network(network, config)
        if calibrator is not None:
            calibrator.free()
        if blob is None:
            raise RuntimeError("TensorRT failed to build the engine (see the TensorRT log above)")
        return bytes(blob)

    def run(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        ctx = self.context
        ctx.set_input_shape(self.input_name, tuple(batch.shape))
        ctx.set_tensor_address(self.input_name, self.d_in)
        ctx.set_tensor_address(self.output_name, self.d_out)
        self.cuda.copy(self.d_in, batch.ctypes.data, batch.nbytes, _Cudart.H2D, self.stream)
        if not ctx.execute_async_v3(self.stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        out = np.empty(tuple(ctx.get_tensor_shape(self.output_name)), dtype=self.out_dtype)
        self.cuda.copy(out.ctypes.data, self.d_out, out.nbytes, _Cudart.D2H, self.stream)
        self.cuda.sync(self.stream)
        return out.astype(np.float32, copy=False)

    def close(self) -> None:
        if getattr(self, "cuda", None) is None:
            return
        with contextlib.suppress(Exception):
            self.cuda.sync(self.stream)
            self.cuda.destroy_stream(self.stream)
            self.cuda.free(self.d_in)
            self.cuda.free(self.d_out)
        self.context = self.engine = None


def _make_calibrator(trt, cuda: _Cudart, images: np.ndarray, batch: int, cache_file: Path):
    """An entropy calibrator feeding ``images`` (N, 3, H, W float32, preprocessed) in batches."""

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.pos = 0
            self.nbytes = batch * int(np.prod(images.shape[1:])) * 4
            self.device = cuda.malloc(self.nbytes)

        def get_batch_size(self):
            return batch

        def get_batch(self, names):
            if self.pos + batch > len(images):
                return None
            chunk = np.ascontiguousarray(images[self.pos:self.pos + batch], dtype=np.float32)
            self.pos += batch
            cuda.copy(self.device, chunk.ctypes.data, chunk.nbytes, _Cudart.H2D, 0)
            cuda.sync(0)
            return [self.device]

        def read_calibration_cache(self):
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache):
            from clasflow.fsutil import atomic_write

            with atomic_write(cache_file) as fh:
                fh.write(bytes(cache))

        def free(self):
            if self.device:
                cuda.free(self.device)
                self.device = 0

    return Calibrator()


# ------------------------------------------------------------------ backends


@dataclass
class _Ctx:
    settings: BenchSettings
    model_dir: Path
    meta: dict[str, Any]
    hw: tuple[int, int]
    profile: tuple[int, int, int]
    threads: int
    cache_dir: Path
    calib: np.ndarray | None
    _hash: str | None = None

    def model_hash(self) -> str:
        if self._hash is None:
            self._hash = file_sha256(model_file(self.model_dir, self.meta, "model"), model_file(self.model_dir, self.meta, "params"))
        return self._hash


def _paddle_gpu_or_skip(gpu_id: int) -> None:
    import paddle

    if not paddle.is_compiled_with_cuda():
        raise Skip("PaddlePaddle here is a CPU build (paddle.is_compiled_with_cuda() is False); install paddlepaddle-gpu")
    if paddle.device.cuda.device_count() <= gpu_id:
        raise Skip(f"no CUDA device {gpu_id} visible to Paddle")


def _onnx_or_skip(ctx: _Ctx) -> Path:
    name = (ctx.meta.get("files") or {}).get("onnx")
    if not name or not (ctx.model_dir / name).is_file():
        raise Skip(f"{ctx.model_dir} has no model.onnx (export with --onnx)")
    return ctx.model_dir / name


def _ort_providers_or_skip(*wanted: str) -> None:
    import onnxruntime as ort

    available = ort.get_available_providers()
    missing = [p for p in wanted if p not in available]
    if missing:
        raise Skip(f"onnxruntime {ort.__version__} has no {', '.join(missing)} (available: {', '.join(available)}; "
                   "install onnxruntime-gpu on a CUDA machine)")


def _make_paddle(ctx: _Ctx, device: str, precision: str):
    if precision == "int8":
        if device == "cpu":
            raise Skip("no trustworthy int8 on the CPU: Paddle 3.3's oneDNN int8 disagreed with fp32 on every image "
                       "of our quantized export when measured, and without it the quantize ops run in fp32 (slower); "
                       "int8 runs on the GPU: --backend paddle-trt or tensorrt")
        raise Skip("Paddle Inference runs int8 on the GPU through TensorRT: use --backend paddle-trt "
                   "(an export with --int8_calib) or --backend tensorrt")
    if device == "cpu":
        if precision != "fp32":
            raise Skip(f"Paddle Inference on the CPU runs fp32 here ({precision} needs a GPU)")
        return PaddleRunner(ctx.model_dir, device="cpu", threads=ctx.threads, meta=ctx.meta), {"onednn": True, "threads": ctx.threads}
    _paddle_gpu_or_skip(ctx.settings.gpu_id)
    runner = PaddleRunner(ctx.model_dir, device="gpu", precision=precision, gpu_id=ctx.settings.gpu_id, meta=ctx.meta)
    return runner, {"mixed_precision": precision == "fp16"}


def _paddle_trt_source(ctx: _Ctx, precision: str) -> tuple[Path, str, dict[str, Any]]:
    """(model file to convert, its hash, what to report): the fp32 export, or for int8 the
    quantized model of ``clasflow export --int8_calib`` (PIR-TRT takes int8 ranges from its
    quantize/dequantize ops; it has no calibrator)."""
    if precision != "int8":
        return model_file(ctx.model_dir, ctx.meta, "model"), ctx.model_hash(), {}
    int8 = ctx.meta.get("int8")
    meta_file = ctx.model_dir / "inference.yml"
    if not int8:
        raise Skip(f"{ctx.model_dir} has no int8 model: export with --int8_calib LIST (real images to calibrate on); "
                   "or use --backend tensorrt, which calibrates on --image_list")
    if "error" in int8:
        raise ClasflowError(f"{meta_file}: the export could not build the int8 model: {int8['error']}")
    names = (int8.get("files") or {})
    if not all(names.get(k) for k in ("model", "params")):
        raise ClasflowError(f"{meta_file}: int8.files must name the model and params files; re-export with --int8_calib")
    files = [ctx.model_dir / names[k] for k in ("model", "params")]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ClasflowError(f"{meta_file} names int8 files that are missing: {', '.join(missing)}; re-export with --int8_calib")
    calib = int8.get("calibration") or {}
    report = {"calibration_images": calib.get("images"), "calibration_source": calib.get("source"),
              "calibrator": calib.get("observer"),
              "export_top1_agreement_vs_fp32": (int8.get("self_check") or {}).get("top1_agreement_vs_fp32")}
    return files[0], file_sha256(*files), report


def _make_paddle_trt(ctx: _Ctx, device: str, precision: str):
    """Paddle 3.x TensorRT: ``paddle.tensorrt.convert`` writes a program with TensorRT engine ops
    (cached), which Paddle Inference then runs on the GPU. fp32/fp16 convert the export; int8
    converts its calibrated quantized model (``int8/``)."""
    if device != "gpu":
        raise Skip("TensorRT runs on the GPU: use --device gpu")
    source, source_hash, extra = _paddle_trt_source(ctx, precision)
    _paddle_gpu_or_skip(ctx.settings.gpu_id)
    try:
        import paddle.tensorrt.export as pte
    except Exception as exc:
        raise Skip(f"paddle.tensorrt is not available ({type(exc).__name__}: {exc}); it needs a PaddlePaddle GPU "
                   "build with TensorRT and the tensorrt Python package") from None
    import paddle.inference as pi

    runtime = ".".join(map(str, pi.get_trt_runtime_version()))
    if runtime == "0.0.0":
        with contextlib.suppress(Exception):
            import tensorrt

            runtime = tensorrt.__version__
    mn, opt, mx = ctx.profile
    h, w = ctx.hw
    key = engine_key(source_hash, precision, ctx.profile, ctx.hw, runtime, _gpu_name(ctx.settings.gpu_id))
    folder = ctx.cache_dir / f"paddle_{key}"
    prefix = folder / "inference"
    files = {"model": "inference.json", "params": "inference.pdiparams"}
    modes = {"fp32": pte.PrecisionMode.FP32, "fp16": pte.PrecisionMode.FP16, "int8": pte.PrecisionMode.INT8}
    started = time.perf_counter()
    cache = "hit"
    if not all((folder / f).is_file() for f in files.values()):
        cache = "miss"
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=_mkdir(ctx.cache_dir)))
        try:
            trt_input = pte.Input(min_input_shape=(mn, 3, h, w), optim_input_shape=(opt, 3, h, w),
                                  max_input_shape=(mx, 3, h, w), name=ctx.meta["input"]["name"])
            trt_config = pte.TensorRTConfig(inputs=[trt_input])
            trt_config.precision_mode = modes[precision]
            trt_config.save_model_dir = str(tmp / "inference")
            trt_config.workspace_size = WORKSPACE
            pte.convert(str(source.with_suffix("")), trt_config)
            if not all((tmp / f).is_file() for f in files.values()):
                raise RuntimeError(f"paddle.tensorrt.convert wrote {sorted(p.name for p in tmp.iterdir())}, "
                                   f"expected {sorted(files.values())}")
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    runner = PaddleRunner(folder, device="gpu", precision="fp32", gpu_id=ctx.settings.gpu_id,
                          meta={"files": files, "input": ctx.meta["input"]})
    runner.build_s = time.perf_counter() - started
    options = {"trt_api": "paddle.tensorrt.convert (PIR-TRT)", "tensorrt": runtime, "engine_cache": cache,
               "converted_model": str(prefix), "source_model": str(source), "profile": list(ctx.profile), **extra}
    return runner, options


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _gpu_name(gpu_id: int) -> str:
    cuda = _Cudart.try_load()
    name = cuda.device_name(gpu_id) if cuda is not None else None
    return name or f"gpu{gpu_id}"


def _make_ort(ctx: _Ctx, device: str, precision: str):
    onnx_file = _onnx_or_skip(ctx)
    if precision != "fp32":
        where = "CPUExecutionProvider" if device == "cpu" else "CUDAExecutionProvider"
        raise Skip(f"onnxruntime {where} runs the exported fp32 graph only"
                   + ("; use --backend onnxruntime-trt for fp16" if device == "gpu" and precision == "fp16" else ""))
    if device == "cpu":
        runner = OrtRunner(onnx_file, providers=["CPUExecutionProvider"], threads=ctx.threads)
        return runner, {"providers": runner.providers, "threads": ctx.threads}
    _ort_providers_or_skip("CUDAExecutionProvider")
    runner = OrtRunner(onnx_file, providers=[("CUDAExecutionProvider", {"device_id": ctx.settings.gpu_id}),
                                             "CPUExecutionProvider"], threads=ctx.threads)
    if runner.providers[0] != "CUDAExecutionProvider":
        raise Skip(f"onnxruntime could not start CUDAExecutionProvider (session providers: {runner.providers})")
    return runner, {"providers": runner.providers}


def _make_ort_trt(ctx: _Ctx, device: str, precision: str):
    onnx_file = _onnx_or_skip(ctx)
    if device != "gpu":
        raise Skip("TensorRT runs on the GPU: use --device gpu")
    if precision == "int8":
        raise Skip("onnxruntime's TensorRT provider needs a calibration table for int8; use --backend tensorrt for int8")
    _ort_providers_or_skip("TensorrtExecutionProvider", "CUDAExecutionProvider")
    h, w = ctx.hw
    mn, opt, mx = ctx.profile
    name = ctx.meta["input"]["name"]
    cache = ctx.cache_dir / f"ort_{ctx.model_hash()[:16]}_{precision}"
    cache.mkdir(parents=True, exist_ok=True)
    trt_options = {
        "device_id": ctx.settings.gpu_id,
        "trt_fp16_enable": precision == "fp16",
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_max_workspace_size": WORKSPACE,
        "trt_profile_min_shapes": f"{name}:{mn}x3x{h}x{w}",
        "trt_profile_opt_shapes": f"{name}:{opt}x3x{h}x{w}",
        "trt_profile_max_shapes": f"{name}:{mx}x3x{h}x{w}",
    }
    runner = OrtRunner(onnx_file, providers=[("TensorrtExecutionProvider", trt_options),
                                             ("CUDAExecutionProvider", {"device_id": ctx.settings.gpu_id}),
                                             "CPUExecutionProvider"], threads=ctx.threads)
    if runner.providers[0] != "TensorrtExecutionProvider":
        raise Skip(f"onnxruntime could not start TensorrtExecutionProvider (session providers: {runner.providers})")
    return runner, {"providers": runner.providers, "cache_dir": str(cache), "profile": list(ctx.profile)}


def _make_tensorrt(ctx: _Ctx, device: str, precision: str):
    if device != "gpu":
        raise Skip("TensorRT runs on the GPU: use --device gpu")
    if precision == "int8" and ctx.calib is None:
        raise Skip("int8 calibration needs real images: pass --image_list (and --data_dir)")
    onnx_file = _onnx_or_skip(ctx)
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # ImportError, or libnvinfer missing behind an installed wheel
        raise Skip(f"the tensorrt Python package is not usable here ({type(exc).__name__}: {exc}); "
                   "install TensorRT (pip install tensorrt) on a CUDA machine") from None
    runner = TensorRTRunner(onnx_file, precision=precision, profile=ctx.profile, hw=ctx.hw,
                            cache_dir=ctx.cache_dir, gpu_id=ctx.settings.gpu_id,
                            calib=ctx.calib if precision == "int8" else None)
    import tensorrt as trt

    options = {"tensorrt": trt.__version__, "engine": str(runner.engine_path), "engine_cache": runner.cache,
               "profile": list(ctx.profile)}
    if precision == "int8":
        options["calibration_images"] = int(len(ctx.calib))
        options["calibrator"] = "IInt8EntropyCalibrator2 (fp16 allowed for layers without int8)"
    return runner, options


MAKERS: dict[str, Callable[[_Ctx, str, str], tuple[Any, dict[str, Any]]]] = {
    "paddle": _make_paddle,
    "paddle-trt": _make_paddle_trt,
    "onnxruntime": _make_ort,
    "onnxruntime-trt": _make_ort_trt,
    "tensorrt": _make_tensorrt,
}


# ------------------------------------------------------------------ inputs


def _batches(images: np.ndarray | None, bs: int, hw: tuple[int, int], rng: np.random.Generator, count: int = 4) -> list[np.ndarray]:
    if images is None:
        return [rng.standard_normal((bs, 3, hw[0], hw[1])).astype(np.float32) for _ in range(count)]
    n = len(images)
    out = []
    for b in range(max(1, min(count, math.ceil(n / bs)))):
        idx = [(b * bs + j) % n for j in range(bs)]
        out.append(np.ascontiguousarray(images[idx]))
    return out


# ------------------------------------------------------------------ measuring


def measure(runner, batches: Sequence[np.ndarray], warmup: int, repeats: int) -> dict[str, Any]:
    bs = int(batches[0].shape[0])
    started = time.perf_counter()
    runner.run(batches[0])
    first_ms = (time.perf_counter() - started) * 1000
    for i in range(1, max(1, warmup)):
        runner.run(batches[i % len(batches)])
    warmup_s = time.perf_counter() - started
    times = np.empty(repeats, dtype=np.float64)
    for i in range(repeats):
        batch = batches[i % len(batches)]
        t = time.perf_counter()
        runner.run(batch)
        times[i] = time.perf_counter() - t
    ms = times * 1000.0
    mean = float(ms.mean())
    return {
        "latency_ms": {"mean": mean, "p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
                       "p99": float(np.percentile(ms, 99)), "min": float(ms.min()), "max": float(ms.max()),
                       "std": float(ms.std())},
        "throughput_ips": bs * 1000.0 / mean if mean > 0 else None,
        "first_run_ms": first_ms,
        "warmup_s": warmup_s,
    }


def _top1(runner, images: np.ndarray, chunk: int) -> np.ndarray:
    out = [np.asarray(runner.run(images[s:s + chunk])).argmax(axis=1) for s in range(0, len(images), chunk)]
    return np.concatenate(out)


def _entry(backend: str, device: str, precision: str, bs: int, **kw) -> dict[str, Any]:
    return {"backend": backend, "device": device, "precision": precision, "batch_size": bs, **kw}


def run_benchmark(settings: BenchSettings, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every backend x device x precision x batch size; returns the report (see the module docstring)."""
    say = progress or (lambda text: log.info("%s", text))
    meta = load_meta(settings.model_dir)
    model_dir = Path(settings.model_dir)
    h, w = (int(v) for v in meta["input"]["shape"][2:])
    bss = sorted(settings.batch_sizes)
    threads = int(settings.threads or default_threads())
    if settings.warmup < 1 or settings.repeats < 1:
        raise ClasflowError("--warmup and --repeats must be at least 1")
    images, image_paths = (None, [])
    if settings.image_list:
        images, image_paths = load_image_list(settings.image_list, settings.data_dir, meta, limit=MAX_IMAGES)
    cache_dir = Path(settings.engine_cache) if settings.engine_cache else default_engine_cache()
    calib = None
    if images is not None:  # spread over the images, which are spread over the list
        calib = images[np.linspace(0, len(images) - 1, min(CALIB_IMAGES, len(images))).astype(int)]
    ctx = _Ctx(settings, model_dir, meta, (h, w), (1, max(bss), max(bss)), threads, cache_dir, calib)
    env = environment(threads)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {"dir": str(model_dir.resolve()), "architecture": meta.get("architecture"),
                  "class_num": meta.get("class_num"), "input_shape": [-1, 3, h, w]},
        "inputs": ({"kind": "images", "count": len(image_paths), "list": str(settings.image_list)} if images is not None
                   else {"kind": "random", "distribution": "standard normal", "seed": settings.seed}),
        "settings": {"backends": settings.backends, "devices": settings.devices, "precisions": settings.precisions,
                     "batch_sizes": bss, "threads": threads, "warmup": settings.warmup, "repeats": settings.repeats,
                     "engine_cache": str(cache_dir), "timing": "host input -> host output, per batch"},
        **env,
        "results": [],
    }
    results: list[dict[str, Any]] = report["results"]
    reference: dict[str, Any] = {}  # "<backend>/<device>" -> fp32 top-1; "*" -> the first fp32 top-1
    precisions = sorted(settings.precisions, key=PRECISIONS.index)  # fp32 first: it is the reference
    for device in settings.devices:
        for backend in settings.backends:
            for precision in precisions:
                label = f"{backend}/{device}/{precision}"
                try:
                    runner, options = MAKERS[backend](ctx, device, precision)
                except Skip as exc:
                    log.debug("%s: skipped: %s", label, exc)
                    results += [_entry(backend, device, precision, bs, status="skipped", reason=str(exc)) for bs in bss]
                    continue
                except Exception as exc:  # a backend that is present but breaks: report it, go on
                    reason = f"{type(exc).__name__}: {exc}".strip()
                    say(f"{label}: failed: {reason}")
                    results += [_entry(backend, device, precision, bs, status="failed", reason=reason) for bs in bss]
                    continue
                try:
                    agreement: dict[str, Any] = {"top1_agreement_vs_fp32": None}
                    if images is not None:
                        top1 = _top1(runner, images, max(bss))
                        own = f"{backend}/{device}"
                        if precision == "fp32":  # fp32 entries: agreement with the first fp32 measured
                            reference.setdefault(own, top1)
                            reference.setdefault("*", (label, top1))
                            ref_name, ref = reference["*"]
                        else:  # fp16/int8: agreement with this backend's fp32 (else the first fp32)
                            ref_name, ref = ((f"{own}/fp32", reference[own]) if own in reference
                                             else reference.get("*", (None, None)))
                        if ref is not None and ref_name != label:
                            agreement = {"top1_agreement_vs_fp32": float((top1 == ref).mean()),
                                         "agreement_reference": ref_name, "agreement_images": int(len(images))}
                    for bs in bss:
                        say(f"{label}: batch {bs}: {settings.warmup} warm-up + {settings.repeats} timed runs")
                        rng = np.random.default_rng(settings.seed + bs)
                        try:
                            stats = measure(runner, _batches(images, bs, (h, w), rng), settings.warmup, settings.repeats)
                        except Exception as exc:
                            reason = f"{type(exc).__name__}: {exc}".strip()
                            results.append(_entry(backend, device, precision, bs, status="failed", reason=reason))
                            continue
                        results.append(_entry(backend, device, precision, bs, status="ok", build_s=float(runner.build_s),
                                              **stats, **agreement, options=options))
                except Exception as exc:
                    reason = f"{type(exc).__name__}: {exc}".strip()
                    results += [_entry(backend, device, precision, bs, status="failed", reason=reason)
                                for bs in bss if not any(r["batch_size"] == bs and r["backend"] == backend and r["device"] == device
                                                         and r["precision"] == precision for r in results)]
                finally:
                    runner.close()
                    del runner
                    gc.collect()
    report["summary"] = {s: sum(1 for r in results if r["status"] == s) for s in ("ok", "skipped", "failed")}
    return report


def default_engine_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clasflow" / "engines"


# ------------------------------------------------------------------ output


def metric_tag(r: dict[str, Any]) -> str:
    tag = f"{r['backend']}.{r['precision']}.bs{r['batch_size']}"
    return tag if r["device"] == "cpu" else f"{r['backend']}.{r['device']}.{r['precision']}.bs{r['batch_size']}"


def mlflow_metrics(report: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in report["results"]:
        if r["status"] != "ok":
            continue
        tag = metric_tag(r)
        for k in ("mean", "p50", "p90", "p99"):
            out[f"latency_ms_{k}.{tag}"] = r["latency_ms"][k]
        if r.get("throughput_ips") is not None:
            out[f"throughput_ips.{tag}"] = r["throughput_ips"]
        out[f"build_s.{tag}"] = r["build_s"]
        out[f"warmup_s.{tag}"] = r["warmup_s"]
        if r.get("top1_agreement_vs_fp32") is not None:
            out[f"top1_agreement.{tag}"] = r["top1_agreement_vs_fp32"]
    return out


def log_to_mlflow(report: dict[str, Any], json_path: str | os.PathLike | None = None) -> bool:
    """Log every result to the active MLflow run, if there is one (and mlflow is in use)."""
    mlflow = sys.modules.get("mlflow")  # no run can be active unless mlflow was imported
    if mlflow is None or mlflow.active_run() is None:
        return False
    metrics = mlflow_metrics(report)
    if metrics:
        mlflow.log_metrics(metrics)
    with contextlib.suppress(Exception):
        mlflow.set_tags({"benchmark.device": str(report["device"].get("gpu") or report["device"]["cpu"]),
                         "benchmark.paddle": str(report["versions"].get("paddlepaddle")),
                         "benchmark.onnxruntime": str(report["versions"].get("onnxruntime")),
                         "benchmark.tensorrt": str(report["versions"].get("tensorrt"))})
    if json_path:
        mlflow.log_artifact(str(json_path))
    return True


def write_report(report: dict[str, Any], path: str | os.PathLike) -> None:
    from clasflow.fsutil import write_text_atomic

    write_text_atomic(path, json.dumps(report, indent=2) + "\n")


def _fmt(v: Any, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def print_table(report: dict[str, Any], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=max(120, shutil.get_terminal_size((120, 20)).columns))
    arch = report["model"].get("architecture")
    shape = "x".join(str(s) for s in report["model"]["input_shape"][1:])
    table = Table(title=f"{arch} {shape}  ({report['inputs']['kind']} inputs)", show_lines=False)
    for col in ("backend", "device", "prec", "bs", "mean ms", "p50 ms", "p90 ms", "p99 ms", "img/s", "build s",
                "warm-up s", "top1 agr"):
        table.add_column(col, justify="right" if col not in ("backend", "device", "prec") else "left")
    reasons: dict[str, str] = {}
    for r in report["results"]:
        head = [r["backend"], r["device"], r["precision"], str(r["batch_size"])]
        if r["status"] == "ok":
            lat = r["latency_ms"]
            agr = r.get("top1_agreement_vs_fp32")
            table.add_row(*head, _fmt(lat["mean"]), _fmt(lat["p50"]), _fmt(lat["p90"]), _fmt(lat["p99"]),
                          _fmt(r["throughput_ips"], 1), _fmt(r["build_s"]), _fmt(r["warmup_s"]),
                          "-" if agr is None else f"{agr:.3f}")
        else:
            reasons.setdefault(f"{r['backend']}/{r['device']}/{r['precision']} {r['status']}", r.get("reason", ""))
    if table.row_count:
        console.print(table)
    for what, why in reasons.items():
        console.print(f"[yellow]{what}[/yellow]: {why}", highlight=False)
    v, d = report["versions"], report["device"]
    console.print(f"device: {d['cpu']} ({d['threads']} threads)" + (f", GPU {d['gpu']}" if d.get("gpu") else ""))
    console.print("versions: " + ", ".join(f"{k} {v[k]}" for k in ("paddlepaddle", "onnxruntime", "tensorrt", "paddle_cuda",
                                                                   "cuda_runtime", "cuda_driver", "nvidia_driver") if v.get(k) not in (None, "False")))


# ------------------------------------------------------------------ seed flags


def translate_seed_flags(*, use_gpu: bool | None, use_tensorrt: bool | None, use_fp16: bool | None,
                         enable_benchmark: bool | None) -> tuple[dict[str, str], str | None]:
    """PaddleClas predict.py's benchmark flags -> (backend/device/precision values, a note)."""
    given = {k: v for k, v in (("use_gpu", use_gpu), ("use_tensorrt", use_tensorrt), ("use_fp16", use_fp16),
                               ("enable_benchmark", enable_benchmark)) if v is not None}
    if not given:
        return {}, None
    out: dict[str, str] = {}
    if use_tensorrt:
        out["backend"], out["device"] = "paddle-trt", "gpu"
    if use_gpu is not None and "device" not in out:
        out["device"] = "gpu" if use_gpu else "cpu"
    if use_gpu is False and use_tensorrt:
        raise ClasflowError("--use_tensorrt needs the GPU; drop --use_gpu False")
    if use_fp16 is not None:
        out["precision"] = "fp16" if use_fp16 else "fp32"
    seed = " ".join(f"--{k} {v}" for k, v in given.items())
    new = " ".join(f"--{k} {v}" for k, v in out.items()) or "(defaults)"
    return out, f"clasflow: seed flags {seed} -> {new}"


# ------------------------------------------------------------------ CPU figures for `make bench`


def bench_cpu(out: str | os.PathLike | None = None, *, archs: Sequence[str] = BENCH_ARCHS, image_size: int = 224,
              batch_sizes: Sequence[int] = (1, 4), warmup: int = 10, repeats: int = 50, threads: int | None = None,
              work_dir: str | os.PathLike | None = None, print_results: bool = True) -> dict[str, Any]:
    """CPU latency of paddle (oneDNN) and onnxruntime side by side for ``archs`` (random weights)."""
    from clasflow.export import export_model

    threads = int(threads or default_threads())
    combined: dict[str, Any] = {"schema": "clasflow.bench-cpu/1", "image_size": image_size, "threads": threads,
                                "weights": "random (latency only)", "models": {}}
    with tempfile.TemporaryDirectory(prefix="clasflow-bench-", dir=work_dir) as tmp:
        for arch in archs:
            model_dir = Path(tmp) / arch
            exported = export_model(arch=arch, output_path=model_dir, pretrained_model=None, class_num=1000,
                                    image_size=image_size, onnx=True)
            report = run_benchmark(BenchSettings(model_dir=str(model_dir), backends=["paddle", "onnxruntime"],
                                                 batch_sizes=list(batch_sizes), threads=threads, warmup=warmup,
                                                 repeats=repeats), progress=lambda text: None)
            report["export_max_abs_diff"] = exported.max_abs_diff
            combined["models"][arch] = report
            combined.setdefault("versions", report["versions"])
            combined.setdefault("device", report["device"])
    combined["table"] = [
        {"architecture": arch, "batch_size": bs,
         **{f"{b}_ms_{k}": next((r["latency_ms"][k] for r in rep["results"]
                                 if r["backend"] == b and r["batch_size"] == bs and r["status"] == "ok"), None)
            for b in ("paddle", "onnxruntime") for k in ("mean", "p50")}}
        for arch, rep in combined["models"].items() for bs in batch_sizes]
    if out:
        write_report(combined, out)
    if print_results:
        _print_bench_cpu(combined)
    return combined


def _print_bench_cpu(combined: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"CPU inference, {combined['image_size']}px, {combined['threads']} threads "
                    f"({combined.get('device', {}).get('cpu', '?')}), random weights")
    for col in ("model", "bs", "paddle oneDNN p50 ms", "paddle mean ms", "onnxruntime p50 ms", "onnxruntime mean ms",
                "paddle / ort"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for row in combined["table"]:
        p, o = row["paddle_ms_p50"], row["onnxruntime_ms_p50"]
        ratio = f"{p / o:.2f}" if p and o else "-"
        t.add_row(row["architecture"], str(row["batch_size"]), _fmt(p), _fmt(row["paddle_ms_mean"]), _fmt(o),
                  _fmt(row["onnxruntime_ms_mean"]), ratio)
    Console(width=140).print(t)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    os.environ.setdefault("OMP_NUM_THREADS", str(default_threads()))
    parser = argparse.ArgumentParser(prog="python -m clasflow.benchmark",
                                     description="CPU inference figures (paddle oneDNN vs onnxruntime); "
                                                 "the full benchmark is `clasflow benchmark`")
    parser.add_argument("--bench-cpu", action="store_true", required=True,
                        help="MobileNetV3_large_x1_0 and ResNet50_vd at 224px, bs 1 and 4, random weights")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", default="1,4")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--archs", default=",".join(BENCH_ARCHS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        bench_cpu(args.out, archs=[a for a in args.archs.split(",") if a], image_size=args.image_size,
                  batch_sizes=parse_batch_sizes(args.batch_size), warmup=args.warmup, repeats=args.repeats,
                  threads=args.threads)
    except ClasflowError as exc:
        print(f"clasflow: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

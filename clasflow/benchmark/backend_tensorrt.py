"""Backend ``tensorrt``: a native TensorRT engine built from ``model.onnx`` with the ``tensorrt``
Python API (fp32, fp16, and int8 calibrated with an entropy calibrator on real preprocessed
images), cached on disk under a key made of the model hash, precision (+ calibration set hash),
batch profile, input size, TensorRT version and GPU name. Device memory, the stream and the
copies go through cuda-python (`clasflow.benchmark.cuda`)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from clasflow.benchmark.common import WORKSPACE, Context, Skip, engine_key, file_sha256, need_gpu
from clasflow.benchmark.cuda import CudaRuntime, gpu_tag
from clasflow.fsutil import atomic_write
from clasflow.quantize import images_sha256


def major(version: str) -> int:
    return int(str(version).split(".")[0])


class TensorRTRunner:
    """A TensorRT engine built from model.onnx (or loaded from the cache), run with
    ``execute_async_v3`` on one stream (TensorRT >= 8.5 tensor-name API)."""

    def __init__(self, onnx_file: Path, *, precision: str, profile: tuple[int, int, int], hw: tuple[int, int],
                 cache_dir: Path, gpu_id: int = 0, calib: np.ndarray | None = None):
        import tensorrt as trt

        self.trt = trt
        self.cuda = CudaRuntime.load()
        if self.cuda is None:
            raise Skip("cuda-python (cuda-bindings) is not installed: pip install cuda-bindings")
        if self.cuda.device_count() <= gpu_id:
            raise Skip(f"no CUDA device {gpu_id} visible")
        self.cuda.set_device(gpu_id)
        self.logger = trt.Logger(trt.Logger.WARNING)
        tag = precision
        if precision == "int8":
            if calib is None or len(calib) == 0:
                raise Skip("int8 calibration needs real images: pass --image_list")
            tag = f"int8-calib{images_sha256(calib)[:8]}"
        key = engine_key(file_sha256(onnx_file), tag, profile, hw, trt.__version__, gpu_tag(gpu_id))
        self.engine_path = Path(cache_dir) / f"{key}.engine"
        self.calib = calib
        started = time.perf_counter()
        engine = None
        self.cache = "miss"
        if self.engine_path.is_file():
            engine = trt.Runtime(self.logger).deserialize_cuda_engine(self.engine_path.read_bytes())
            self.cache = "hit" if engine is not None else "stale"
        if engine is None:
            blob = self._build(onnx_file, precision, profile, hw)
            with atomic_write(self.engine_path) as fh:
                fh.write(blob)
            engine = trt.Runtime(self.logger).deserialize_cuda_engine(blob)
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
        if major(trt.__version__) < 10:
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
            calibrator = make_calibrator(trt, self.cuda, self.calib, cb, self.engine_path.with_suffix(".calib"))
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
        self.cuda.copy(self.d_in, batch.ctypes.data, batch.nbytes, self.cuda.H2D, self.stream)
        if not ctx.execute_async_v3(int(self.stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        out = np.empty(tuple(ctx.get_tensor_shape(self.output_name)), dtype=self.out_dtype)
        self.cuda.copy(out.ctypes.data, self.d_out, out.nbytes, self.cuda.D2H, self.stream)
        self.cuda.sync(self.stream)
        return out.astype(np.float32, copy=False)

    def close(self) -> None:
        if getattr(self, "cuda", None) is None or not hasattr(self, "stream"):
            return
        with contextlib.suppress(Exception):
            self.cuda.sync(self.stream)
            self.cuda.destroy_stream(self.stream)
            self.cuda.free(self.d_in)
            self.cuda.free(self.d_out)
        self.context = self.engine = None


def make_calibrator(trt, cuda: CudaRuntime, images: np.ndarray, batch: int, cache_file: Path):
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
            cuda.copy(self.device, chunk.ctypes.data, chunk.nbytes, cuda.H2D, 0)
            cuda.sync(0)
            return [self.device]

        def read_calibration_cache(self):
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache):
            with atomic_write(cache_file) as fh:
                fh.write(bytes(cache))

        def free(self):
            if self.device:
                cuda.free(self.device)
                self.device = 0

    return Calibrator()


def make(ctx: Context, device: str, precision: str) -> tuple[TensorRTRunner, dict[str, Any]]:
    need_gpu(device)
    if precision == "int8" and ctx.calib is None:
        raise Skip("int8 calibration needs real images: pass --image_list (and --data_dir)")
    onnx_file = ctx.onnx_file()
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or libnvinfer missing behind an installed wheel
        raise Skip(f"the tensorrt Python package is not usable here ({type(exc).__name__}: {exc}); "
                   "install TensorRT (pip install tensorrt) on a CUDA machine") from None
    if precision != "fp32" and major(trt.__version__) >= 11:
        raise Skip(f"TensorRT {trt.__version__} builds strongly typed networks only (TensorRT 11 removed the FP16 and "
                   f"INT8 builder flags and the int8 calibrators): {precision} needs a network typed for it; "
                   "fp32 runs; the GPU image pins TensorRT 10")
    runner = TensorRTRunner(onnx_file, precision=precision, profile=ctx.profile, hw=ctx.hw,
                            cache_dir=ctx.cache_dir, gpu_id=ctx.gpu_id,
                            calib=ctx.calib if precision == "int8" else None)
    options = {"tensorrt": trt.__version__, "engine": str(runner.engine_path), "engine_cache": runner.cache,
               "profile": list(ctx.profile)}
    if precision == "int8":
        options["calibration_images"] = int(len(ctx.calib))
        options["calibrator"] = "IInt8EntropyCalibrator2 (fp16 allowed for layers without int8)"
    return runner, options

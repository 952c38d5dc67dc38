"""Backends ``onnxruntime`` (model.onnx on CPUExecutionProvider or CUDAExecutionProvider) and
``onnxruntime-trt`` (model.onnx on onnxruntime's TensorrtExecutionProvider, fp32 and fp16)."""

from __future__ import annotations

from typing import Any

from clasflow.benchmark.common import WORKSPACE, Context, Skip, engine_key, need_gpu
from clasflow.benchmark.cuda import gpu_tag
from clasflow.benchmark.environment import tensorrt_version
from clasflow.predict import OrtRunner


def ort_trt_cache_name(ctx: Context, precision: str, ort_version: str, trt_version: str | None, gpu: str) -> str:
    """The TensorRT provider's engine-cache folder: a new one whenever the model, precision, batch
    profile, input size, onnxruntime or TensorRT version or the GPU (name, compute capability) change."""
    runtime = f"ort{ort_version}-trt{trt_version or 'unknown'}"
    return "ort_" + engine_key(ctx.model_hash(), precision, ctx.profile, ctx.hw, runtime, gpu)


def need_providers(*wanted: str) -> None:
    import onnxruntime as ort

    available = ort.get_available_providers()
    missing = [p for p in wanted if p not in available]
    if missing:
        raise Skip(f"onnxruntime {ort.__version__} has no {', '.join(missing)} (available: {', '.join(available)}; "
                   "install onnxruntime-gpu on a CUDA machine)")


def make(ctx: Context, device: str, precision: str) -> tuple[OrtRunner, dict[str, Any]]:
    onnx_file = ctx.onnx_file()
    if precision != "fp32":
        where = "CPUExecutionProvider" if device == "cpu" else "CUDAExecutionProvider"
        raise Skip(f"onnxruntime {where} runs the exported fp32 graph only"
                   + ("; use --backend onnxruntime-trt for fp16" if device == "gpu" and precision == "fp16" else ""))
    if device == "cpu":
        runner = OrtRunner(onnx_file, providers=["CPUExecutionProvider"], threads=ctx.threads)
        return runner, {"providers": runner.providers, "threads": ctx.threads}
    need_providers("CUDAExecutionProvider")
    runner = OrtRunner(onnx_file, providers=[("CUDAExecutionProvider", {"device_id": ctx.gpu_id}),
                                             "CPUExecutionProvider"], threads=ctx.threads)
    if runner.providers[0] != "CUDAExecutionProvider":
        raise Skip(f"onnxruntime could not start CUDAExecutionProvider (session providers: {runner.providers})")
    return runner, {"providers": runner.providers}


def make_trt(ctx: Context, device: str, precision: str) -> tuple[OrtRunner, dict[str, Any]]:
    onnx_file = ctx.onnx_file()
    need_gpu(device)
    if precision == "int8":
        raise Skip("onnxruntime's TensorRT provider needs a calibration table for int8; use --backend tensorrt for int8")
    need_providers("TensorrtExecutionProvider", "CUDAExecutionProvider")
    h, w = ctx.hw
    mn, opt, mx = ctx.profile
    name = ctx.meta["input"]["name"]
    import onnxruntime as ort

    cache = ctx.cache_dir / ort_trt_cache_name(ctx, precision, ort.__version__, tensorrt_version(), gpu_tag(ctx.gpu_id))
    cache.mkdir(parents=True, exist_ok=True)
    trt_options = {
        "device_id": ctx.gpu_id,
        "trt_fp16_enable": precision == "fp16",
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_max_workspace_size": WORKSPACE,
        "trt_profile_min_shapes": f"{name}:{mn}x3x{h}x{w}",
        "trt_profile_opt_shapes": f"{name}:{opt}x3x{h}x{w}",
        "trt_profile_max_shapes": f"{name}:{mx}x3x{h}x{w}",
    }
    runner = OrtRunner(onnx_file, providers=[("TensorrtExecutionProvider", trt_options),
                                             ("CUDAExecutionProvider", {"device_id": ctx.gpu_id}),
                                             "CPUExecutionProvider"], threads=ctx.threads)
    if runner.providers[0] != "TensorrtExecutionProvider":
        raise Skip(f"onnxruntime could not start TensorrtExecutionProvider (session providers: {runner.providers})")
    return runner, {"providers": runner.providers, "cache_dir": str(cache), "profile": list(ctx.profile)}

"""Backend ``paddle-trt``: Paddle Inference on the GPU with TensorRT engines (fp32, fp16, int8).

The exports are Paddle 3.x ``.json`` (PIR) programs, for which Paddle's documented TensorRT route
is ``paddle.tensorrt.convert`` (PIR-TRT; ``Config.enable_tensorrt_engine`` is the pre-PIR
``.pdmodel`` route); the converted program is cached in the engine cache. PIR-TRT has no
calibrator: int8 converts the export's ``int8/`` model, quantized by post-training calibration on
real images at export time (``clasflow export --int8_calib LIST``, `clasflow.quantize`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from clasflow.benchmark.backend_paddle import need_paddle_gpu
from clasflow.benchmark.common import WORKSPACE, Context, Skip, engine_key, file_sha256, need_gpu
from clasflow.benchmark.cuda import gpu_name
from clasflow.errors import ClasflowError
from clasflow.predict import PaddleRunner, model_file

FILES = {"model": "inference.json", "params": "inference.pdiparams"}


def source_model(ctx: Context, precision: str) -> tuple[Path, str, dict[str, Any]]:
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


def tensorrt_runtime() -> str:
    """The TensorRT version Paddle runs with (its runtime, else the tensorrt package's)."""
    import paddle.inference as pi

    runtime = ".".join(map(str, pi.get_trt_runtime_version()))
    if runtime == "0.0.0":
        with contextlib.suppress(Exception):
            import tensorrt

            runtime = tensorrt.__version__
    return runtime


def make(ctx: Context, device: str, precision: str) -> tuple[PaddleRunner, dict[str, Any]]:
    """``paddle.tensorrt.convert`` writes a program with TensorRT engine ops (cached), which
    Paddle Inference then runs on the GPU. fp32/fp16 convert the export; int8 converts its
    calibrated quantized model (``int8/``)."""
    need_gpu(device)
    source, source_hash, extra = source_model(ctx, precision)
    need_paddle_gpu(ctx.gpu_id)
    try:
        import paddle.tensorrt.export as pte
    except Exception as exc:
        raise Skip(f"paddle.tensorrt is not available ({type(exc).__name__}: {exc}); it needs a PaddlePaddle GPU "
                   "build with TensorRT and the tensorrt Python package") from None
    runtime = tensorrt_runtime()
    mn, opt, mx = ctx.profile
    h, w = ctx.hw
    key = engine_key(source_hash, precision, ctx.profile, ctx.hw, runtime, gpu_name(ctx.gpu_id))
    folder = ctx.cache_dir / f"paddle_{key}"
    prefix = folder / "inference"
    modes = {"fp32": pte.PrecisionMode.FP32, "fp16": pte.PrecisionMode.FP16, "int8": pte.PrecisionMode.INT8}
    started = time.perf_counter()
    cache = "hit"
    if not all((folder / f).is_file() for f in FILES.values()):
        cache = "miss"
        ctx.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=ctx.cache_dir))
        try:
            trt_input = pte.Input(min_input_shape=(mn, 3, h, w), optim_input_shape=(opt, 3, h, w),
                                  max_input_shape=(mx, 3, h, w), name=ctx.meta["input"]["name"])
            trt_config = pte.TensorRTConfig(inputs=[trt_input])
            trt_config.precision_mode = modes[precision]
            trt_config.save_model_dir = str(tmp / "inference")
            trt_config.workspace_size = WORKSPACE
            pte.convert(str(source.with_suffix("")), trt_config)
            if not all((tmp / f).is_file() for f in FILES.values()):
                raise RuntimeError(f"paddle.tensorrt.convert wrote {sorted(p.name for p in tmp.iterdir())}, "
                                   f"expected {sorted(FILES.values())}")
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    runner = PaddleRunner(folder, device="gpu", precision="fp32", gpu_id=ctx.gpu_id,
                          meta={"files": FILES, "input": ctx.meta["input"]})
    runner.build_s = time.perf_counter() - started
    options = {"trt_api": "paddle.tensorrt.convert (PIR-TRT)", "tensorrt": runtime, "engine_cache": cache,
               "converted_model": str(prefix), "source_model": str(source), "profile": list(ctx.profile), **extra}
    return runner, options

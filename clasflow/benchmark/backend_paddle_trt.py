"""Backend ``paddle-trt``: Paddle Inference on the GPU with TensorRT engines (fp32, fp16, int8).

The exports are Paddle 3.x ``.json`` (PIR) programs, for which Paddle's documented TensorRT route
is ``paddle.tensorrt.convert`` (PIR-TRT; ``Config.enable_tensorrt_engine`` is the pre-PIR
``.pdmodel`` route); the converted program is cached in the engine cache, converted in the
folder it stays in (its engine paths are recorded inside it). PIR-TRT has no
calibrator: int8 converts the export's ``int8/`` model, quantized by post-training calibration on
real images at export time (``clasflow export --int8_calib LIST``, `clasflow.quantize`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from clasflow.benchmark.backend_paddle import need_paddle_gpu
from clasflow.benchmark.common import WORKSPACE, Context, Skip, engine_key, file_sha256, need_gpu
from clasflow.benchmark.cuda import gpu_tag
from clasflow.errors import ClasflowError
from clasflow.fsutil import write_text_atomic
from clasflow.predict import PaddleRunner, model_file

FILES = {"model": "inference.json", "params": "inference.pdiparams"}
COMPLETE = "COMPLETE"  # written last: the conversion in this folder finished


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


def paddle_trt_cache_name(ctx: Context, source_hash: str, precision: str, paddle_version: str, trt_version: str,
                          gpu: str) -> str:
    """The converted model's cache folder: a new one whenever the model, precision, batch profile,
    input size, Paddle or TensorRT version or the GPU (name, compute capability) change."""
    return "paddle_" + engine_key(source_hash, precision, ctx.profile, ctx.hw, f"paddle{paddle_version}-trt{trt_version}", gpu)


def converted_folder(folder: Path, convert: Callable[[Path], None]) -> str:
    """Run ``convert(folder)`` in ``folder`` itself, the place the converted program stays:
    ``paddle.tensorrt.convert`` records its engine files' paths inside the program, so a
    converted folder must never move. A folder whose ``COMPLETE`` marker is missing (a crashed
    conversion) is converted again; a lock file keeps two processes from converting at once.
    Returns "hit" (reused) or "miss" (converted now)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / COMPLETE).is_file() and all((folder / f).is_file() for f in FILES.values()):
            return "hit"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        try:
            convert(folder)
            missing = [f for f in FILES.values() if not (folder / f).is_file()]
            if missing:
                raise RuntimeError(f"paddle.tensorrt.convert wrote {sorted(p.name for p in folder.iterdir())}, "
                                   f"expected {sorted(FILES.values())}")
            write_text_atomic(folder / COMPLETE, json.dumps({"folder": str(folder)}) + "\n")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    return "miss"


def make(ctx: Context, device: str, precision: str) -> tuple[PaddleRunner, dict[str, Any]]:
    """``paddle.tensorrt.convert`` writes a program with TensorRT engine ops (cached, one folder
    per precision: the precision is part of the key), which Paddle Inference then runs on the
    GPU. fp32/fp16 convert the export; int8 converts its calibrated quantized model (``int8/``)."""
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
    import paddle

    folder = ctx.cache_dir / paddle_trt_cache_name(ctx, source_hash, precision, paddle.__version__, runtime,
                                                   gpu_tag(ctx.gpu_id))
    modes = {"fp32": pte.PrecisionMode.FP32, "fp16": pte.PrecisionMode.FP16, "int8": pte.PrecisionMode.INT8}

    def convert(into: Path) -> None:
        trt_input = pte.Input(min_input_shape=(mn, 3, h, w), optim_input_shape=(opt, 3, h, w),
                              max_input_shape=(mx, 3, h, w), name=ctx.meta["input"]["name"])
        trt_config = pte.TensorRTConfig(inputs=[trt_input])
        trt_config.precision_mode = modes[precision]
        trt_config.save_model_dir = str(into / "inference")
        trt_config.workspace_size = WORKSPACE
        pte.convert(str(source.with_suffix("")), trt_config)

    started = time.perf_counter()
    cache = converted_folder(folder, convert)
    runner = PaddleRunner(folder, device="gpu", precision="fp32", gpu_id=ctx.gpu_id,
                          meta={"files": FILES, "input": ctx.meta["input"]})
    runner.build_s = time.perf_counter() - started
    options = {"trt_api": "paddle.tensorrt.convert (PIR-TRT)", "tensorrt": runtime, "engine_cache": cache,
               "converted_model": str(folder / "inference"), "source_model": str(source), "profile": list(ctx.profile),
               **extra}
    return runner, options

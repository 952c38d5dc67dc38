"""Backend ``paddle``: Paddle Inference on the exported program. CPU: oneDNN with ``threads``
math threads (fp32); GPU: CUDA kernels (fp32, fp16 through Paddle's mixed precision)."""

from __future__ import annotations

from typing import Any

from clasflow.benchmark.common import Context, Skip
from clasflow.predict import PaddleRunner


def need_paddle_gpu(gpu_id: int) -> None:
    """Skip unless this Paddle is a CUDA build that sees device ``gpu_id``."""
    import paddle

    if not paddle.is_compiled_with_cuda():
        raise Skip("PaddlePaddle here is a CPU build (paddle.is_compiled_with_cuda() is False); install paddlepaddle-gpu")
    if paddle.device.cuda.device_count() <= gpu_id:
        raise Skip(f"no CUDA device {gpu_id} visible to Paddle")


def make(ctx: Context, device: str, precision: str) -> tuple[PaddleRunner, dict[str, Any]]:
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
    need_paddle_gpu(ctx.gpu_id)
    runner = PaddleRunner(ctx.model_dir, device="gpu", precision=precision, gpu_id=ctx.gpu_id, meta=ctx.meta)
    return runner, {"mixed_precision": precision == "fp16"}

"""Device, distributed and seeding setup shared by train, eval and distill."""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import paddle
import paddle.distributed as dist

from clasflow.config import Config
from clasflow.errors import ClasflowError, ConfigError

log = logging.getLogger(__name__)
REQUIRE_GPU_ENV = "CLASFLOW_REQUIRE_GPU"  # "1": train/eval/distill/benchmark refuse to run without a GPU


def gpu_available() -> bool:
    return paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


def gpu_required() -> bool:
    return os.environ.get(REQUIRE_GPU_ENV, "").strip().lower() in ("1", "true", "yes")


def what_paddle_sees() -> str:
    """One line on the GPUs Paddle can use, for error messages."""
    compiled = paddle.is_compiled_with_cuda()
    count = paddle.device.cuda.device_count() if compiled else 0
    visible = {k: os.environ[k] for k in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES") if k in os.environ}
    return (f"paddle {paddle.__version__} compiled with CUDA: {compiled} (CUDA {paddle.version.cuda()}, cuDNN "
            f"{paddle.version.cudnn()}), paddle.device.cuda.device_count() = {count}, "
            + (", ".join(f"{k}={v!r}" for k, v in visible.items()) or "CUDA_VISIBLE_DEVICES unset"))


def check_gpu_requirement(stage: str) -> None:
    """Refuse `stage` before any work when a GPU is required (CLASFLOW_REQUIRE_GPU=1, --require-gpu)
    and Paddle sees none: on a cluster, a GPU task on the CPU would run for hours unnoticed."""
    if gpu_required() and not gpu_available():
        raise ClasflowError(
            f"{stage}: a GPU is required ({REQUIRE_GPU_ENV}=1 or --require-gpu) but Paddle sees none: "
            f"{what_paddle_sees()}. Check the node's NVIDIA driver and device plugin and the task's GPU limit, "
            f"or unset {REQUIRE_GPU_ENV} to run on the CPU")


def device_tags(device: str | None = None) -> dict[str, str]:
    """What this process computes on, as MLflow tags: the GPU's name and count, CUDA and cuDNN, or cpu."""
    device = device or paddle.device.get_device()
    if not device.startswith("gpu"):
        return {"clasflow.device": "cpu"}
    return {"clasflow.device": device, "clasflow.gpu_name": paddle.device.cuda.get_device_name(),
            "clasflow.gpu_count": str(world_size()), "clasflow.gpus_visible": str(paddle.device.cuda.device_count()),
            "clasflow.cuda_version": str(paddle.version.cuda()), "clasflow.cudnn_version": str(paddle.version.cudnn())}


def world_size() -> int:
    return dist.get_world_size()


def rank() -> int:
    return dist.get_rank()


def setup_device(cfg: Config) -> str:
    """GPU (this rank's card) when there is one, else CPU; AMP is refused on CPU."""
    if gpu_available():
        device = f"gpu:{dist.ParallelEnv().dev_id}"
    else:
        if cfg.use_amp:
            raise ConfigError("use_amp: AMP needs a GPU and none was found; set use_amp=False to train on the CPU")
        device = "cpu"
    paddle.set_device(device)
    if world_size() > 1:
        dist.init_parallel_env()
    log.info("device %s, rank %d of %d", device, rank(), world_size())
    return device


def seed_everything(seed: int) -> None:
    paddle.seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)


def epoch_seed(base: int, epoch: int) -> int:
    """Each epoch (and rank) gets its own seed, so a resumed run replays the same randomness."""
    return (base * 1_000_003 + epoch * 101 + rank()) % (2**31)


def all_reduce_sum(values: list[float]) -> list[float]:
    if world_size() == 1:
        return values
    t = paddle.to_tensor(np.array(values, dtype="float64"))
    dist.all_reduce(t)
    return t.numpy().tolist()

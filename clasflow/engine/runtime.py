"""Device, distributed and seeding setup shared by train, eval and distill."""

from __future__ import annotations

import logging
import random

import numpy as np
import paddle
import paddle.distributed as dist

from clasflow.config import Config
from clasflow.errors import ConfigError

log = logging.getLogger(__name__)


def gpu_available() -> bool:
    return paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


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

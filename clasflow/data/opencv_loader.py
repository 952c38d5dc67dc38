"""OpenCV loader: PaddleClas operators (clasflow.data.transforms) in paddle.io.DataLoader workers.

Decoding, augmentation and normalisation run in numpy inside the workers; the
main process only receives ready float32 batches.  Every sample's augmentation
is seeded from (seed, epoch, sample index), so results do not depend on the
number of workers.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from typing import Any, Sequence

import cv2
import numpy as np
from paddle.io import DataLoader, Dataset, DistributedBatchSampler

from clasflow.data import EpochLoader, SampleSet
from clasflow.data import transforms as T
from clasflow.errors import DataError

log = logging.getLogger("clasflow.data")

__all__ = ["OpenCVLoader"]


class _ListDataset(Dataset):
    """Item ``epoch * n + i`` is sample ``i`` augmented with epoch ``epoch``'s seed."""

    def __init__(self, paths: list[str], labels: np.ndarray, ops: list, seed: int, random_aug: bool):
        super().__init__()
        self.paths = paths
        self.labels = labels
        self.ops = ops
        self.seed = seed
        self.random_aug = random_aug

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: int):
        n = len(self.paths)
        epoch, idx = divmod(int(item), n)
        if self.random_aug:
            T.reseed(hash((self.seed, epoch, idx)) & 0x7FFFFFFFFFFFFFFF)
        try:
            with open(self.paths[idx], "rb") as f:
                data = f.read()
            img = T.apply_ops(self.ops, data)
            img = np.ascontiguousarray(img, dtype=np.float32)
            if img.ndim != 3:
                raise ValueError(f"transforms produced shape {img.shape}, expected [3, H, W]")
            return img, self.labels[idx], 1, idx
        except Exception:  # reported (with the reason) by the main process
            return np.zeros((1, 1, 1), np.float32), self.labels[idx], 0, idx


def _collate(items):
    good = [it for it in items if it[2] == 1]
    bad = [it[3] for it in items if it[2] == 0]
    meta = np.asarray([len(good), len(bad), *bad], dtype=np.int64)
    if not good:  # paddle cannot ship empty tensors from workers: send a placeholder
        return [np.zeros((1, 1, 1, 1), np.float32), np.zeros((1, 1), np.int64), meta]
    imgs = np.stack([it[0] for it in good])
    labels = np.asarray([it[1] for it in good], dtype=np.int64).reshape(-1, 1)
    return [imgs, labels, meta]


def _die_with_parent(_worker_id: int) -> None:
    """A worker must not outlive its trainer: after a SIGKILL (an OOM kill, a killed pod
    process) Paddle's workers would otherwise stay behind as orphans holding memory."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


class _EpochBatchSampler(DistributedBatchSampler):
    """Paddle's DistributedBatchSampler with clasflow's order: seed + epoch shuffle, rank shard,
    bad samples left out, items tagged with the epoch for per-sample augmentation seeds."""

    def __init__(self, dataset, loader: "OpenCVLoader"):
        super().__init__(
            dataset,
            batch_size=loader.batch_size,
            num_replicas=loader.world,
            rank=loader.rank,
            shuffle=loader.mode == "train",
            drop_last=False,
        )
        self._loader = loader

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        n = len(self.dataset)
        for b in self._loader._plan(self.epoch):
            yield [int(i) + self.epoch * n for i in b]

    def __len__(self) -> int:
        return len(self._loader._plan(self.epoch))


class OpenCVLoader(EpochLoader):
    name = "opencv"

    def __init__(
        self,
        *,
        samples: SampleSet,
        transforms: Sequence[Any],
        batch_size: int,
        num_workers: int,
        mode: str,
        shuffle_seed: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        skip_bad: bool = False,
    ):
        super().__init__(samples=samples, transforms=transforms, batch_size=batch_size, mode=mode,
                         shuffle_seed=shuffle_seed, seed=seed, rank=rank, world=world, skip_bad=skip_bad)
        self.num_workers = num_workers
        self._dataset = _ListDataset(samples.paths, samples.labels, self._ops, seed, random_aug=(mode == "train"))
        self._sampler = _EpochBatchSampler(self._dataset, self)
        self._loader = DataLoader(
            self._dataset,
            batch_sampler=self._sampler,
            num_workers=num_workers,
            collate_fn=_collate,
            return_list=True,
            worker_init_fn=_die_with_parent,
            # no cv2.setNumThreads in the workers: with OpenCV 5.0 it hangs in a forked
            # child when the parent has already used OpenCV's thread pool
        )

    def close(self) -> None:
        """Nothing to free between epochs (workers live for one epoch); for API symmetry."""

    def _diagnose(self, idx: int) -> str:
        path = self.samples.paths[idx]
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            return f"cannot read ({e.strerror or e})"
        if cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is None:
            return "cannot be decoded (corrupt or unsupported image)"
        try:
            T.apply_ops(self._ops, data)
        except Exception as e:  # noqa: BLE001 - reported to the user
            return f"transforms failed: {e}"
        return "failed in a worker"

    def __iter__(self):
        epoch = self._epoch
        self._sampler.set_epoch(epoch)
        try:
            for imgs, labels, meta in self._loader:
                m = meta.numpy()
                n_good, n_bad = int(m[0]), int(m[1])
                if n_bad:
                    for idx in (int(i) for i in m[2 : 2 + n_bad]):
                        path = self.samples.paths[idx]
                        reason = self._diagnose(idx)
                        if not self.skip_bad:
                            raise DataError(
                                f"bad image {path}: {reason}. Fix or remove it from "
                                f"{self.samples.file_list}, or set skip_bad_images: true"
                            )
                        self._mark_bad(idx, reason)
                if n_good == 0:
                    continue
                yield imgs, labels
        finally:
            self._epoch = epoch + 1

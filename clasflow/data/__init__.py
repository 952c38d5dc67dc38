"""Data loading: PaddleClas transforms on DALI (CPU or GPU) or on OpenCV workers.

``build_loader(section, mode=...)`` returns an object that yields, once per
``for`` loop (one epoch), ``(images, labels)`` with images a float32 paddle
Tensor ``[N, 3, H, W]`` and labels an int64 Tensor ``[N, 1]`` (-1 for unlabeled
lists).  It has ``len()`` (batches per epoch), ``num_samples``, ``name``
("dali" or "opencv"), ``skipped`` (bad images dropped) and ``skipped_files``.

Both loaders use the same sample order for a given seed and epoch, the same
sharding across data-parallel ranks, and the same bad-image policy:
files are checked cheaply up front (existence, image signature, JPEG header
and end marker); a bad file raises ``DataError`` naming it, or with
``skip_bad_images: true`` is dropped and counted.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from clasflow.errors import ConfigError, DataError
from clasflow.data.lists import ListEntry, check_image_file, read_list

__all__ = ["build_loader", "dali_available", "loader_tags", "dist_info", "epoch_indices", "EpochLoader", "SampleSet"]

log = logging.getLogger("clasflow.data")

_MODES = ("train", "eval")


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA/driver install
        return False
    return True


def dist_info() -> tuple[int, int]:
    """(rank, world_size) of this data-parallel process (1 process: (0, 1))."""
    try:
        import paddle.distributed as dist

        rank, world = int(dist.get_rank()), int(dist.get_world_size())
    except Exception:
        rank = int(os.environ.get("PADDLE_TRAINER_ID", "0"))
        world = int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))
    world = max(world, 1)
    if not 0 <= rank < world:
        raise DataError(f"data-parallel rank {rank} is outside world size {world}")
    return rank, world


def epoch_indices(
    n: int, epoch: int, *, shuffle: bool, seed: int, rank: int = 0, world: int = 1, pad: bool = True,
    exclude: Sequence[int] = (),
) -> np.ndarray:
    """Sample indices this rank visits in ``epoch``.

    Shuffling is a full permutation drawn from ``seed + epoch`` (identical on all
    ranks); the `exclude`d samples (bad images) are left out before the ranks'
    shares are cut.  With ``pad`` (training) the list is padded by wrapping around
    so that every rank gets the same count; without it (evaluation) the ranks'
    shares are disjoint and together cover every sample exactly once.
    """
    order = np.arange(n, dtype=np.int64)
    if shuffle:
        order = np.random.RandomState((int(seed) + int(epoch)) % (2**32)).permutation(n)
    if len(exclude):
        order = order[~np.isin(order, list(exclude))]
        n = len(order)
    if world > 1:
        if pad:
            total = int(math.ceil(n / world)) * world
            if total > n:
                order = np.concatenate([order, order[: total - n]])
        order = order[rank::world]
    return order


def batches_of(indices: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]


@dataclass
class SampleSet:
    """The samples a loader serves: absolute paths, labels, and what was dropped."""

    paths: list[str]
    labels: np.ndarray  # int64 [n]
    skipped_files: list[tuple[str, str]]  # (path, reason)
    file_list: str


class EpochLoader:
    """What both loaders share: the operators, the per-epoch sample plan (order, rank shard,
    batches) and the bookkeeping of bad images."""

    def __init__(self, *, samples: SampleSet, transforms: Sequence[Any], batch_size: int, mode: str,
                 shuffle_seed: int, seed: int, rank: int = 0, world: int = 1, skip_bad: bool = False):
        from clasflow.data import transforms as T

        try:
            self._ops = T.build_ops(transforms)
        except ValueError as e:
            raise ConfigError(f"transforms: {e}") from None
        self.samples = samples
        self.batch_size = batch_size
        self.mode = mode
        self.shuffle_seed = shuffle_seed
        self.seed = seed
        self.rank, self.world = rank, world
        self.skip_bad = skip_bad
        self.skipped_files: list[tuple[str, str]] = list(samples.skipped_files)
        self._bad: set[int] = set()
        self._epoch = 0
        self.fallback = ""  # why `loader: auto` did not get DALI (set by build_loader)

    def _indices(self, epoch: int) -> np.ndarray:
        return epoch_indices(len(self.samples.paths), epoch, shuffle=self.mode == "train", seed=self.shuffle_seed,
                             rank=self.rank, world=self.world, pad=self.mode == "train", exclude=sorted(self._bad))

    def _plan(self, epoch: int) -> list[np.ndarray]:
        return batches_of(self._indices(epoch), self.batch_size)

    @property
    def skipped(self) -> int:
        return len(self.skipped_files)

    @property
    def num_samples(self) -> int:
        return int(len(self._indices(self._epoch)))

    def __len__(self) -> int:
        return len(self._plan(self._epoch))

    def set_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)

    @property
    def bad_indices(self) -> set[int]:
        """Samples found bad while decoding (left out from the next epoch on)."""
        return set(self._bad)

    def exclude(self, indices: Sequence[int]) -> None:
        """Leave out samples another data-parallel rank found bad, so every rank's epoch keeps
        the same number of batches."""
        for idx in indices:
            self._mark_bad(int(idx), "failed to decode on another data-parallel rank")

    def _mark_bad(self, idx: int, reason: str) -> None:
        if idx not in self._bad:
            self._bad.add(idx)
            path = self.samples.paths[idx]
            self.skipped_files.append((path, reason))
            log.warning("skipping bad image %s: %s", path, reason)


def _attr(section: Any, name: str, default: Any = None) -> Any:
    return getattr(section, name, default)


def _load_samples(section: Any, *, labeled: bool, class_num: int | None, skip_bad: bool) -> SampleSet:
    file_list = _attr(section, "file_list")
    data_dir = _attr(section, "data_dir") or ""
    entries: list[ListEntry] = read_list(file_list, labeled=labeled, class_num=class_num)
    paths, labels, bad = [], [], []
    for e in entries:
        p = os.path.join(data_dir, e.path)
        reason = check_image_file(p)
        if reason is not None:
            bad.append((p, reason, e.line))
            continue
        paths.append(p)
        labels.append(e.label)
    if bad and not skip_bad:
        shown = "; ".join(f"{p} ({r}, {file_list}:{ln})" for p, r, ln in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise DataError(
            f"bad image file: {shown}{more}. Fix or remove it from the list, "
            f"or set skip_bad_images: true to drop bad images"
        )
    for p, r, _ in bad:
        log.warning("skipping bad image %s: %s", p, r)
    if not paths:
        raise DataError(f"no usable images in {file_list} ({len(bad)} bad)")
    return SampleSet(
        paths=paths,
        labels=np.asarray(labels, dtype=np.int64),
        skipped_files=[(p, r) for p, r, _ in bad],
        file_list=file_list,
    )


def _check_transforms(transforms: Sequence[Any]) -> None:
    names = [t.name for t in transforms]
    if not names or names[0] != "DecodeImage":
        raise ConfigError(f"transforms must start with DecodeImage, got {names}")
    if "ToCHWImage" not in names:
        raise ConfigError(f"transforms must include ToCHWImage (images are fed as [N, 3, H, W]), got {names}")


def build_loader(
    section: Any,
    *,
    mode: str,
    labeled: bool = True,
    class_num: int | None = None,
    seed: int = 0,
):
    """Build the loader for one data section (see the module docstring).

    mode: "train" (shuffled per epoch, augmentation random) or "eval" (list order,
    every sample exactly once).  ``loader: auto`` picks DALI when ``nvidia.dali``
    imports and maps every transform, else falls back to OpenCV with a WARNING (the reason is
    kept in ``loader.fallback``; see `loader_tags`).
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    choice = _attr(section, "loader", "auto") or "auto"
    if choice not in ("auto", "dali", "opencv"):
        raise ConfigError(f"loader must be auto, dali or opencv, got {choice!r}")
    batch_size = _attr(section, "batch_size")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    transforms = list(_attr(section, "transforms", []) or [])
    _check_transforms(transforms)

    fallback = ""
    if choice == "auto":
        choice, fallback = _auto_choice(transforms)
    elif choice == "dali" and not dali_available():
        raise ConfigError("loader: dali was requested but nvidia.dali cannot be imported; use loader: opencv or auto")
    else:
        log.info("data loader: %s (configured)", "DALI" if choice == "dali" else "OpenCV workers")

    skip_bad = bool(_attr(section, "skip_bad_images", False))
    samples = _load_samples(section, labeled=labeled, class_num=class_num, skip_bad=skip_bad)
    rank, world = dist_info()
    shuffle_seed = _attr(section, "shuffle_seed")
    common = dict(
        samples=samples,
        transforms=transforms,
        batch_size=batch_size,
        num_workers=max(int(_attr(section, "num_workers", 0) or 0), 0),
        mode=mode,
        shuffle_seed=int(seed if shuffle_seed is None else shuffle_seed),
        seed=int(seed),
        rank=rank,
        world=world,
        skip_bad=skip_bad,
    )
    if choice == "dali":
        from clasflow.data.dali_pipeline import DaliLoader

        loader = DaliLoader(**common)
    else:
        from clasflow.data.opencv_loader import OpenCVLoader

        loader = OpenCVLoader(**common)
    loader.fallback = fallback
    return loader


def _auto_choice(transforms: Sequence[Any]) -> tuple[str, str]:
    """``loader: auto``: DALI when it imports and maps every transform, else OpenCV with a WARNING
    (returns the choice and the reason for a fallback)."""
    if not dali_available():
        reason = "nvidia.dali is not importable"
    else:
        from clasflow.data.dali_pipeline import DaliUnsupportedError, check_dali_transforms
        from clasflow.data.transforms import build_ops

        try:
            check_dali_transforms(build_ops(transforms))
        except DaliUnsupportedError as e:
            reason = str(e)
        except ValueError as e:
            raise ConfigError(f"transforms: {e}") from None
        else:
            log.info("data loader: DALI (nvidia.dali is installed)")
            return "dali", ""
    log.warning("data loader: falling back from DALI to OpenCV workers (loader: auto): %s; "
                "set loader: opencv to choose OpenCV, or loader: dali to fail instead", reason)
    return "opencv", reason


def loader_tags(loader: Any, section: str) -> dict[str, str]:
    """The loader a section really used, as MLflow tags: dali-gpu, dali-cpu or opencv, and why it
    is not DALI when ``loader: auto`` fell back."""
    kind = loader.name
    if kind == "dali":
        kind = "dali-cpu" if loader.device_id is None else "dali-gpu"
    tags = {f"clasflow.loader.{section}": kind}
    if getattr(loader, "fallback", ""):
        tags[f"clasflow.loader.{section}.fallback"] = loader.fallback[:5000]
    return tags

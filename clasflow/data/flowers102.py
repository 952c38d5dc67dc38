"""The flowers102 dataset stage: download, verify, extract, write PaddleClas lists, validate.

Reproduces PaddleClas's ``generate_flowers102_list.py``: split train <- ``trnid``, valid <-
``valid``, test <- ``tstid`` of ``setid.mat``; each line ``jpg/image_XXXXX.jpg LABEL`` with
LABEL = ``imagelabels.mat`` label - 1. ``train_extra_list.txt`` = train + test (the unlabeled
data of the distillation config).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError

from clasflow.archive import safe_extract
from clasflow.download import Checksum, fetch
from clasflow.errors import DataError, DownloadError
from clasflow.fsutil import write_text_atomic

log = logging.getLogger(__name__)

OFFICIAL_URL_BASE = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102"
OFFICIAL_MD5 = {
    "102flowers.tgz": "52808999861908f626f3c1f4e79d11fa",
    "imagelabels.mat": "e0620be6f572b9609742df49c70aed4d",
    "setid.mat": "a5357ecc9cb78c4bef273ce3793fc85c",
}
CHECKSUM_FILE = "MD5SUMS"  # a mirror with other content (fixtures) publishes its own sums here
SPLITS = {"train": "trnid", "valid": "valid", "test": "tstid"}
LIST_FILES = {
    "train_list.txt": ("train",),
    "val_list.txt": ("valid",),
    "extra_list.txt": ("test",),
    "train_extra_list.txt": ("train", "test"),
}


@dataclass
class DatasetReport:
    root: str
    classes: int
    counts: dict[str, int]
    bad_images: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = ", ".join(f"{name} {n}" for name, n in self.counts.items())
        bad = f"; {len(self.bad_images)} bad images dropped" if self.bad_images else ""
        return f"flowers102 at {self.root}: {self.classes} classes; {parts}{bad}"


def image_relpath(image_id: int) -> str:
    return f"jpg/image_{image_id:05d}.jpg"


def _mirror_checksums(url_base: str, root: Path) -> dict[str, str]:
    """Checksums for `url_base`: the official ones, or the mirror's MD5SUMS file."""
    if url_base.rstrip("/") == OFFICIAL_URL_BASE:
        return dict(OFFICIAL_MD5)
    sums_path = root / CHECKSUM_FILE
    sums_path.unlink(missing_ok=True)  # always read the mirror's current sums
    try:
        fetch(f"{url_base.rstrip('/')}/{CHECKSUM_FILE}", sums_path, binary=False, retries=1)
    except DownloadError:
        log.info("mirror %s has no %s; verifying against the official checksums", url_base, CHECKSUM_FILE)
        return dict(OFFICIAL_MD5)
    sums = {}
    for line in sums_path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip().lstrip("*")] = digest
    missing = set(OFFICIAL_MD5) - set(sums)
    if missing:
        raise DataError(f"{url_base}/{CHECKSUM_FILE} lacks checksums for {', '.join(sorted(missing))}")
    return sums


def download_flowers102(root: Path, url_base: str = OFFICIAL_URL_BASE, *, retries: int = 4, timeout: float = 60.0) -> None:
    """Fetch the three files into `root`, verified by md5 (skipped when present and verified)."""
    sums = _mirror_checksums(url_base, root)
    for name in OFFICIAL_MD5:
        fetch(f"{url_base.rstrip('/')}/{name}", root / name, Checksum("md5", sums[name]), retries=retries, timeout=timeout)


def read_metadata(root: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Labels (1-based, per image id) and the three id splits from the two .mat files."""
    try:
        labels = scipy.io.loadmat(root / "imagelabels.mat")["labels"].reshape(-1).astype(np.int64)
    except (OSError, KeyError, ValueError, MatReadError) as exc:
        raise DataError(f"{root / 'imagelabels.mat'}: cannot read key 'labels' ({exc}); re-download it") from None
    try:
        setid = scipy.io.loadmat(root / "setid.mat")
        splits = {split: setid[key].reshape(-1).astype(np.int64) for split, key in SPLITS.items()}
    except (OSError, KeyError, ValueError, MatReadError) as exc:
        raise DataError(f"{root / 'setid.mat'}: cannot read keys trnid/valid/tstid ({exc}); re-download it") from None
    return labels, splits


def _check_labels(root: Path, labels: np.ndarray, splits: dict[str, np.ndarray]) -> int:
    classes = int(labels.max()) if labels.size else 0
    if labels.size == 0 or labels.min() < 1 or set(np.unique(labels).tolist()) != set(range(1, classes + 1)):
        raise DataError(f"{root / 'imagelabels.mat'}: labels must cover 1..K without gaps, got {np.unique(labels)[:10]}...")
    for split, ids in splits.items():
        bad = ids[(ids < 1) | (ids > labels.size)]
        if bad.size:
            raise DataError(
                f"{root / 'setid.mat'}: split {SPLITS[split]!r} has image ids outside 1..{labels.size}: {bad[:5].tolist()}"
            )
    return classes


def _image_ok(path: Path) -> bool:
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else None
    if data is None or data.size == 0:
        return False
    return cv2.imdecode(data, cv2.IMREAD_REDUCED_GRAYSCALE_8) is not None


def _ensure_extracted(root: Path, ids: np.ndarray) -> None:
    """Extract the archive when images are missing; without it, missing images are reported later."""
    if all((root / image_relpath(int(i))).is_file() for i in ids):
        return
    archive = root / "102flowers.tgz"
    if not archive.is_file():
        if not (root / "jpg").is_dir():
            raise DataError(f"{root}: neither the images (jpg/) nor 102flowers.tgz are there; drop --no-download or add them")
        return
    log.info("extracting %s", archive)
    safe_extract(archive, root)


def write_lists(root: Path, labels: np.ndarray, splits: dict[str, np.ndarray], drop: set[int] = frozenset()) -> dict[str, int]:
    """Write the four PaddleClas list files atomically; return lines per file."""
    lines = {
        split: [f"{image_relpath(int(i))} {int(labels[i - 1]) - 1}" for i in ids if int(i) not in drop]
        for split, ids in splits.items()
    }
    counts = {}
    for filename, parts in LIST_FILES.items():
        body = [line for split in parts for line in lines[split]]
        write_text_atomic(root / filename, "".join(f"{line}\n" for line in body))
        counts[filename] = len(body)
    return counts


def prepare_flowers102(
    root: str | Path,
    *,
    url_base: str = OFFICIAL_URL_BASE,
    download: bool = True,
    strict: bool = False,
) -> DatasetReport:
    """The whole stage: download (optional), extract, validate images, write the lists."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if download:
        download_flowers102(root, url_base)
    for name in ("imagelabels.mat", "setid.mat"):
        if not (root / name).is_file():
            raise DataError(f"{root / name} not found; run without --no-download or copy it there")
    labels, splits = read_metadata(root)
    classes = _check_labels(root, labels, splits)
    all_ids = np.unique(np.concatenate(list(splits.values())))
    _ensure_extracted(root, all_ids)

    bad = [int(i) for i in all_ids if not _image_ok(root / image_relpath(int(i)))]
    bad_paths = [str(root / image_relpath(i)) for i in bad]
    if bad and strict:
        shown = "\n  ".join(bad_paths[:20])
        raise DataError(f"{len(bad)} listed images are missing or do not decode (--strict):\n  {shown}")
    for path in bad_paths:
        log.warning("dropping missing or corrupt image %s", path)
    counts = write_lists(root, labels, splits, drop=set(bad))
    report = DatasetReport(root=str(root), classes=classes, counts=counts, bad_images=bad_paths)
    log.info(report.summary())
    return report

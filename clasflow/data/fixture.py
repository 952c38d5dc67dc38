"""Small datasets in the exact flowers102 layout, so the real list-generation path runs on them.

Sources:
- ``digits``: scikit-learn's bundled handwritten digits (real images, 10 classes), upscaled and
  colorized with random per-image colors (bright strokes on a dark ground) so color carries no
  label information.
- ``synthetic``: procedural images whose orientation, stripe frequency and hue depend on the
  class, with random phase, offset and noise; easy to learn, any number of classes.
- ``glyphs``: one character per class (``0-9`` then ``A-Z``; ``offset`` skips the first ones),
  drawn with OpenCV's Hershey fonts in random font, size, stroke, slant, position and colors
  (bright strokes on a dark, noisy ground). Classes share strokes and curves, not shapes: ``glyphs?offset=10`` (letters)
  is the demo zoo's source task, ``glyphs`` (digits) the demo's target task.

Writes ``jpg/image_XXXXX.jpg``, ``imagelabels.mat``, ``setid.mat`` and, with ``archive=True``,
``102flowers.tgz`` plus ``MD5SUMS`` so the directory can serve as a download mirror.
"""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from clasflow.data.flowers102 import CHECKSUM_FILE, image_relpath
from clasflow.errors import DataError
from clasflow.fsutil import atomic_write, write_text_atomic

SOURCES = ("digits", "synthetic", "glyphs")
GLYPHS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX)


def _digits(classes: int, per_class: int, size: int, rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    if classes > 10:
        raise DataError(f"--source digits has 10 classes; asked for {classes}")
    out = []
    for c in range(classes):
        pool = np.flatnonzero(digits.target == c)
        if per_class > pool.size:
            raise DataError(f"--source digits has {pool.size} images of class {c}; asked for {per_class}")
        for idx in pool[:per_class]:
            gray = digits.images[idx] / 16.0
            h, w = size + int(rng.integers(0, size // 4 + 1)), size + int(rng.integers(0, size // 4 + 1))
            big = cv2.resize(gray.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)
            fg, bg = rng.uniform(150, 255, 3), rng.uniform(0, 90, 3)  # random hues, bright strokes
            img = big[..., None] * fg + (1 - big[..., None]) * bg + rng.normal(0, 6, (h, w, 3))
            out.append((img.clip(0, 255).astype(np.uint8), c))
    return out


def _synthetic(classes: int, per_class: int, size: int, rng: np.random.Generator, noise: float = 8.0) -> list[tuple[np.ndarray, int]]:
    out = []
    for c in range(classes):
        angle = np.pi * c / classes
        freq = 2.0 + 3.0 * ((c * 7) % classes) / classes
        hue = int(180 * c / classes)
        for _ in range(per_class):
            h, w = size + int(rng.integers(0, size // 4 + 1)), size + int(rng.integers(0, size // 4 + 1))
            yy, xx = np.mgrid[0:h, 0:w] / size
            a = angle + rng.normal(0, 0.05)
            wave = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(a) + yy * np.sin(a)) + rng.uniform(0, 2 * np.pi))
            hsv = np.stack(
                [np.full((h, w), (hue + rng.integers(-4, 5)) % 180), np.full((h, w), 200), 60 + 180 * wave], axis=-1
            ).astype(np.uint8)
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32) + rng.normal(0, noise, (h, w, 3))
            out.append((img.clip(0, 255).astype(np.uint8), c))
    return out


def _glyphs(classes: int, per_class: int, size: int, rng: np.random.Generator, offset: int = 0) -> list[tuple[np.ndarray, int]]:
    if not 0 <= offset or offset + classes > len(GLYPHS):
        raise DataError(f"--source glyphs has {len(GLYPHS)} characters; offset {offset} + classes {classes} is too many")
    out = []
    for c in range(classes):
        char = GLYPHS[offset + c]
        for _ in range(per_class):
            h, w = size + int(rng.integers(0, size // 4 + 1)), size + int(rng.integers(0, size // 4 + 1))
            big = 4 * min(h, w)  # draw large, then shrink: anti-aliased strokes of any width
            font = _FONTS[int(rng.integers(len(_FONTS)))] | (cv2.FONT_ITALIC if rng.random() < 0.2 else 0)
            (tw, th), _ = cv2.getTextSize(char, font, 1.0, 1)
            scale = big * rng.uniform(0.6, 0.8) / max(tw, th)
            thick = max(1, int(big * rng.uniform(0.05, 0.1)))
            (tw, th), _ = cv2.getTextSize(char, font, scale, thick)
            canvas = np.zeros((big, big), np.uint8)
            x = int((big - tw) / 2 + rng.uniform(-0.08, 0.08) * big)
            y = int((big + th) / 2 + rng.uniform(-0.08, 0.08) * big)
            cv2.putText(canvas, char, (x, y), font, scale, 255, thick, cv2.LINE_AA)
            turn = cv2.getRotationMatrix2D((big / 2, big / 2), rng.uniform(-10, 10), 1.0)
            canvas = cv2.warpAffine(canvas, turn, (big, big))
            mask = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA)[..., None] / 255.0
            fg, bg = rng.uniform(150, 255, 3), rng.uniform(0, 100, 3)  # random hues, bright strokes
            img = mask * fg + (1 - mask) * bg + rng.normal(0, 10, (h, w, 3))
            out.append((img.clip(0, 255).astype(np.uint8), c))
    return out


def _split_sizes(per_class: int, train: int = 0, valid: int = 0) -> tuple[int, int]:
    """Train and valid images per class: as asked, else 40 % and 30 % (the rest is the "test" split)."""
    train = train or max(1, round(per_class * 0.4))
    valid = valid or max(1, round(per_class * 0.3))
    if train + valid > per_class:
        raise DataError(f"--per-class {per_class} is fewer than {train} train + {valid} valid images per class; "
                        f"raise --per-class or lower --train/--valid")
    return train, valid


def build_fixture(
    root: str | Path,
    *,
    source: str = "synthetic",
    classes: int = 10,
    per_class: int = 20,
    size: int = 64,
    seed: int = 0,
    offset: int = 0,
    archive: bool = False,
    noise: float = 8.0,
    train: int = 0,
    valid: int = 0,
) -> dict[str, int]:
    """Write the dataset; return the number of images per split (`offset`: first glyph class;
    `train`, `valid`: images per class in those splits, 0: 40 % and 30 % of `per_class`, the rest
    is the "test" split that the distillation uses unlabeled, as flowers102's 10 / 10 / ~60).

    ``noise`` (synthetic only): the per-pixel noise's standard deviation, which sets how much a
    JPEG weighs: 8 gives ~2.7 bits per pixel, 2 gives ~1.1 like flowers102's photos (42 KB at
    ~500 x 600)."""
    if source not in SOURCES:
        raise DataError(f"--source must be one of {', '.join(SOURCES)}, got {source!r}")
    if classes < 2:
        raise DataError(f"--classes must be at least 2, got {classes}")
    n_train, n_valid = _split_sizes(per_class, train, valid)
    rng = np.random.default_rng(seed)
    if offset and source != "glyphs":
        raise DataError(f"--offset is an option of --source glyphs, not of {source}")
    if source == "glyphs":
        images = _glyphs(classes, per_class, size, rng, offset)
    elif source == "digits":
        images = _digits(classes, per_class, size, rng)
    else:
        images = _synthetic(classes, per_class, size, rng, noise=noise)

    root = Path(root)
    (root / "jpg").mkdir(parents=True, exist_ok=True)
    ids = rng.permutation(len(images)) + 1  # image ids in shuffled order, like the real data
    labels = np.zeros(len(images), dtype=np.uint8)
    splits: dict[str, list[int]] = {"trnid": [], "valid": [], "tstid": []}
    for k, ((img, label), image_id) in enumerate(zip(images, ids)):
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        with atomic_write(root / image_relpath(int(image_id))) as fh:
            fh.write(buf.tobytes())
        labels[image_id - 1] = label + 1
        rank = k % per_class
        key = "trnid" if rank < n_train else "valid" if rank < n_train + n_valid else "tstid"
        splits[key].append(int(image_id))
    with atomic_write(root / "imagelabels.mat") as fh:
        scipy.io.savemat(fh, {"labels": labels[None, :]})
    with atomic_write(root / "setid.mat") as fh:
        scipy.io.savemat(fh, {k: np.array(v, dtype=np.uint16)[None, :] for k, v in splits.items()})
    if archive:
        _write_mirror_files(root)
    return {"train": len(splits["trnid"]), "valid": len(splits["valid"]), "test": len(splits["tstid"])}


def _write_mirror_files(root: Path) -> None:
    with atomic_write(root / "102flowers.tgz") as fh:
        with tarfile.open(fileobj=fh, mode="w:gz") as tar:
            tar.add(root / "jpg", arcname="jpg")
    sums = []
    for name in ("102flowers.tgz", "imagelabels.mat", "setid.mat"):
        sums.append(f"{hashlib.md5((root / name).read_bytes()).hexdigest()}  {name}\n")
    write_text_atomic(root / CHECKSUM_FILE, "".join(sums))

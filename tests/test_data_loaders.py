"""Data loaders: DALI (CPU-only here) and OpenCV agree with each other and with PaddleClas.

Tiny JPEG datasets are written with cv2 into tmp dirs.  Statistical checks use fixed
seeds (so they are deterministic) and bounds that a correct implementation passes with
overwhelming probability (KS tests at p > 1e-3, binomial rates within 4.5 sigma).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

from clasflow.data import build_loader, epoch_indices  # noqa: E402
from clasflow.data import transforms as T  # noqa: E402
from clasflow.data.lists import check_image_file, read_list  # noqa: E402
from clasflow.errors import ConfigError, DataError  # noqa: E402

import nvidia.dali  # noqa: E402,F401  (in the lock: a broken install must fail, not skip)
from scipy import stats  # noqa: E402

LOADERS = ["dali", "opencv"]
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
NORM = {"scale": "1./255.", "mean": MEAN, "std": STD, "order": ""}


@dataclass
class Spec:
    name: str
    args: dict = field(default_factory=dict)


@dataclass
class Section:
    file_list: str
    data_dir: str
    transforms: list
    batch_size: int = 5
    num_workers: int = 0
    shuffle_seed: int | None = 0
    loader: str = "auto"
    skip_bad_images: bool = False


def eval_tf(short=36, crop=32):
    return [
        Spec("DecodeImage", {"to_rgb": True, "to_np": False, "channel_first": False}),
        Spec("ResizeImage", {"resize_short": short}),
        Spec("CropImage", {"size": crop}),
        Spec("NormalizeImage", dict(NORM)),
        Spec("ToCHWImage"),
    ]


def train_tf(crop=32, epsilon=0.5):
    return [
        Spec("DecodeImage", {"to_rgb": True}),
        Spec("RandCropImage", {"size": crop}),
        Spec("RandFlipImage", {"flip_code": 1}),
        Spec("NormalizeImage", dict(NORM)),
        Spec("RandomErasing", {"EPSILON": epsilon}),
        Spec("ToCHWImage"),
    ]


def write_jpeg(path: Path, rgb: np.ndarray, quality: int = 95, s444: bool = False) -> None:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    if s444:
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]), params)


def collect(loader):
    xs, ys = [], []
    for x, y in loader:
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


@pytest.fixture(scope="module")
def small_ds(tmp_path_factory):
    """12 smooth random images of 40-80 px; label i (unique) so order is checkable."""
    root = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(0)
    lines = []
    for i in range(12):
        h, w = (int(v) for v in rng.integers(40, 81, 2))
        img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 2.0)
        write_jpeg(root / "jpg" / f"im{i:02d}.jpg", img)
        lines.append(f"jpg/im{i:02d}.jpg {i}")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    return root


def section(root: Path, tf, **kw) -> Section:
    return Section(file_list=str(root / "list.txt"), data_dir=str(root), transforms=tf, **kw)


# ------------------------------------------------------------------------ shapes and order


@pytest.mark.parametrize("name", LOADERS)
def test_eval_shapes_labels_and_order(small_ds, name):
    ld = build_loader(section(small_ds, eval_tf(), loader=name), mode="eval", class_num=12)
    assert ld.name == name
    assert len(ld) == 3 and ld.num_samples == 12  # 5 + 5 + 2: the short batch is kept
    batches = list(ld)
    assert [tuple(x.shape) for x, _ in batches] == [(5, 3, 32, 32), (5, 3, 32, 32), (2, 3, 32, 32)]
    for x, y in batches:
        assert str(x.dtype) == "paddle.float32" and str(y.dtype) == "paddle.int64"
        assert tuple(y.shape) == (x.shape[0], 1)
    labels = np.concatenate([y.numpy() for _, y in batches]).ravel()
    assert labels.tolist() == list(range(12))  # every sample once, in list order
    again = np.concatenate([y.numpy() for _, y in ld]).ravel()
    assert again.tolist() == list(range(12))


def test_train_order_shared_and_reshuffled(small_ds):
    orders = {}
    for name in LOADERS:
        ld = build_loader(section(small_ds, train_tf(), loader=name, shuffle_seed=7), mode="train", class_num=12)
        e0 = collect(ld)[1].ravel().tolist()
        e1 = collect(ld)[1].ravel().tolist()
        assert sorted(e0) == list(range(12)) and sorted(e1) == list(range(12))
        assert e0 != e1 and e0 != list(range(12))
        orders[name] = (e0, e1)
    assert orders["dali"] == orders["opencv"]  # same plan: seed + epoch permutation


@pytest.mark.timeout(120)
def test_opencv_augmentation_independent_of_worker_count(small_ds):
    """Per-sample seeds: 0 or 2 worker processes give the very same training batches.

    Also a regression test: the in-process run uses OpenCV's thread pool before the
    workers fork (cv2.setNumThreads in a forked worker then hung)."""
    a = collect(build_loader(section(small_ds, train_tf(), loader="opencv", num_workers=0), mode="train"))
    b = collect(build_loader(section(small_ds, train_tf(), loader="opencv", num_workers=2), mode="train"))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_unlabeled_list_gives_minus_one(small_ds, tmp_path):
    lst = tmp_path / "extra.txt"
    lst.write_text("jpg/im00.jpg\njpg/im01.jpg 3\n")
    for name in LOADERS:
        s = Section(file_list=str(lst), data_dir=str(small_ds), transforms=eval_tf(), loader=name)
        _, y = collect(build_loader(s, mode="eval", labeled=False))
        assert y.ravel().tolist() == [-1, -1]


def test_epoch_indices_shards_cover_once():
    parts = [epoch_indices(10, 0, shuffle=True, seed=3, rank=r, world=3, pad=False) for r in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))
    padded = [epoch_indices(10, 0, shuffle=True, seed=3, rank=r, world=3, pad=True) for r in range(3)]
    assert {len(p) for p in padded} == {4}


def test_excluded_samples_leave_every_rank_the_same_count():
    """Bad images are left out before the shares are cut: whichever rank they were on, every
    rank still gets the same number of samples (so the same number of steps)."""
    for bad in ([0], [0, 1, 2], [3, 7]):
        parts = [epoch_indices(10, 1, shuffle=True, seed=3, rank=r, world=2, exclude=bad) for r in range(2)]
        assert len(parts[0]) == len(parts[1]) == -(-(10 - len(bad)) // 2)
        assert not set(np.concatenate(parts).tolist()) & set(bad)
        assert set(np.concatenate(parts).tolist()) == set(range(10)) - set(bad)


def test_auto_picks_dali_and_logs(small_ds, caplog):
    from clasflow.data import loader_tags

    with caplog.at_level(logging.INFO, logger="clasflow.data"):
        ld = build_loader(section(small_ds, eval_tf()), mode="eval")
    assert ld.name == "dali"
    assert any("DALI" in r.getMessage() for r in caplog.records)
    assert loader_tags(ld, "VALID") == {"clasflow.loader.VALID": "dali-cpu"}  # no GPU here: DALI's CPU operators
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_auto_without_dali_falls_back_loudly_and_dali_fails(small_ds, caplog, monkeypatch):
    from clasflow import data
    from clasflow.data import loader_tags

    monkeypatch.setattr(data, "dali_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="clasflow.data"):
        ld = build_loader(section(small_ds, eval_tf()), mode="eval")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert ld.name == "opencv" and len(warnings) == 1 and "nvidia.dali is not importable" in warnings[0]
    assert loader_tags(ld, "VALID") == {"clasflow.loader.VALID": "opencv",
                                        "clasflow.loader.VALID.fallback": "nvidia.dali is not importable"}
    with pytest.raises(ConfigError, match="loader: dali was requested but nvidia.dali cannot be imported"):
        build_loader(section(small_ds, eval_tf(), loader="dali"), mode="eval")
    configured = build_loader(section(small_ds, eval_tf(), loader="opencv"), mode="eval")
    assert loader_tags(configured, "VALID") == {"clasflow.loader.VALID": "opencv"}  # asked for: no fallback


def test_dali_epoch_abandoned_midway_then_full_epoch(small_ds):
    ld = build_loader(section(small_ds, train_tf(), loader="dali", batch_size=4), mode="train", class_num=12)
    for _ in ld:
        break
    _, y = collect(ld)
    assert sorted(y.ravel().tolist()) == list(range(12))


@pytest.mark.parametrize("name", LOADERS)
def test_resumed_epoch_replays_exactly(small_ds, name):
    """A loader that starts at epoch 2 (a resumed run) yields what one that ran epochs 0-1 did."""
    tf = train_tf(epsilon=1.0)
    run = build_loader(section(small_ds, tf, loader=name, batch_size=5), mode="train", seed=3)
    epochs = [collect(run) for _ in range(3)]
    resumed = build_loader(section(small_ds, tf, loader=name, batch_size=5), mode="train", seed=3)
    resumed.set_epoch(2)
    x, y = collect(resumed)
    np.testing.assert_array_equal(y, epochs[2][1])
    np.testing.assert_array_equal(x, epochs[2][0])
    assert not np.array_equal(epochs[1][0][np.argsort(epochs[1][1].ravel())],
                              epochs[2][0][np.argsort(epochs[2][1].ravel())])  # new augmentations each epoch


def test_dali_pipeline_built_once(small_ds):
    """Epochs, an abandoned epoch and evaluations reuse one pipeline per loader."""
    train = build_loader(section(small_ds, train_tf(), loader="dali", batch_size=5), mode="train")
    valid = build_loader(section(small_ds, eval_tf(), loader="dali", batch_size=5), mode="eval")
    first = collect(valid)
    for epoch in range(3):
        collect(train)
        if epoch == 1:
            next(iter(train))  # abandoned after one batch
        np.testing.assert_array_equal(collect(valid)[0], first[0])
    assert train.builds == 1 and valid.builds == 1


def test_dali_batches_stay_valid_after_later_batches(small_ds):
    """Batches reach Paddle through DLPack, sharing DALI's buffers; each has its own: a batch kept
    while the pipeline runs on (two more epochs) still holds what it held when it was yielded."""
    ld = build_loader(section(small_ds, train_tf(), loader="dali", batch_size=4), mode="train")
    kept = list(ld)
    snapshot = [x.numpy().copy() for x, _ in kept]
    collect(ld), collect(ld)
    for (x, _), before in zip(kept, snapshot):
        np.testing.assert_array_equal(x.numpy(), before)
    assert len({x.data_ptr() for x, _ in kept}) == len(kept)


def test_dali_augmentation_independent_of_batch_size_and_threads(small_ds):
    """Fed per-sample uniforms: batch size and thread count do not change a sample's augmentation."""
    a = collect(build_loader(section(small_ds, train_tf(), loader="dali", batch_size=4, num_workers=1), mode="train"))
    b = collect(build_loader(section(small_ds, train_tf(), loader="dali", batch_size=5, num_workers=3), mode="train"))
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])


# ------------------------------------------------------------------------ equivalence


@pytest.mark.parametrize(
    "tf",
    [
        eval_tf(short=36, crop=32),
        [
            Spec("DecodeImage"),
            Spec("ResizeImage", {"size": [40, 36]}),
            Spec("CropImage", {"size": [32, 30]}),
            Spec("ToCHWImage"),
            Spec("NormalizeImage", {**NORM, "order": "chw"}),
        ],
        [Spec("DecodeImage"), Spec("ResizeImage", {"resize_short": 36, "interpolation": "bicubic"}), *eval_tf()[2:]],
    ],
    ids=["short-center", "fixed-size-chw", "bicubic"],
)
def test_eval_transforms_dali_matches_opencv(small_ds, tf):
    """Same images, same eval transforms: DALI-CPU vs cv2 tensors.

    Measured (DALI 2.4 CPU, OpenCV 5.0): mean |diff| 0.0021, max 0.0175 in normalized
    units (bicubic: 0.0028 / 0.0175), i.e. at most ~1 gray level (0.0175 * 0.229 * 255).
    Bounds: mean < 0.01, max < 0.1.
    """
    out = {}
    for name in LOADERS:
        out[name], labels = collect(build_loader(section(small_ds, tf, loader=name), mode="eval"))
    assert out["dali"].shape == out["opencv"].shape
    diff = np.abs(out["dali"] - out["opencv"])
    assert diff.mean() < 0.01, diff.mean()
    assert diff.max() < 0.1, diff.max()
    # and the numpy path itself is PaddleClas's formula on cv2 output
    ops = T.build_ops(tf)
    first = T.apply_ops(ops, (small_ds / "jpg" / "im00.jpg").read_bytes())
    np.testing.assert_allclose(out["opencv"][0], first, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------ train statistics

GRAD_SIZES = [(256, 96), (96, 256), (256, 128), (192, 192)]  # (W, H), all <= 256
N_STAT = 1024


@pytest.fixture(scope="module")
def gradient_ds(tmp_path_factory):
    """Images whose red channel is x and green channel is y (pixel units): a crop's position,
    size and flip can be read back from the output tensor."""
    root = tmp_path_factory.mktemp("grad")
    for k, (w, h) in enumerate(GRAD_SIZES):
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([xx, yy, np.full_like(xx, 128)], -1).astype(np.uint8)
        write_jpeg(root / f"g{k}.jpg", img, quality=100, s444=True)
    lines = [f"g{i % len(GRAD_SIZES)}.jpg {i % len(GRAD_SIZES)}" for i in range(N_STAT)]
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    return root


def measure(x: np.ndarray, labels: np.ndarray):
    """Per sample: (area fraction, aspect w/h, flipped, erased fraction) inferred from pixels."""
    n = x.shape[0]
    raw = (x * np.asarray(STD)[:, None, None] + np.asarray(MEAN)[:, None, None]) * 255.0
    res = []
    cols = np.arange(32)[None, :].repeat(32, 0).astype(np.float64)
    rows = cols.T.copy()
    for i in range(n):
        erased = np.all(x[i] == 0.0, axis=0)
        keep = ~erased
        bx = np.polyfit(cols[keep], raw[i, 0][keep], 1)[0]  # R = x: slope = +-w/32
        by = np.polyfit(rows[keep], raw[i, 1][keep], 1)[0]  # G = y: slope = h/32
        w, h = abs(bx) * 32, by * 32
        W, H = GRAD_SIZES[int(labels[i])]
        res.append((w * h / (W * H), w / h, bx < 0, erased.mean(), by, _oriented(W, H, w / h)))
    return np.array(res, dtype=np.float64)


def _oriented(W, H, aspect):
    """Aspect along the image's long side: for elongated images the bound on the area makes
    PaddleClas's draw (aspect uniform, area clamped) differ from rejection sampling (DALI's
    image_random_crop), and this statistic shows it without landscape/portrait cancelling."""
    return aspect if W >= H else 1.0 / aspect


def reference_crops(n_per_size: int = 4000):
    T.reseed(2024)
    op = T.RandCropImage(size=32)
    area, aspect = [], []
    for W, H in GRAD_SIZES:
        for _ in range(n_per_size):
            _, _, w, h = op.sample_window(W, H)
            area.append(w * h / (W * H))
            aspect.append(_oriented(W, H, w / h))
    return np.array(area), np.array(aspect)


def rejection_crops(n_per_size: int = 4000):
    """What a rejection sampler (uniform area and aspect, retry until it fits) would give."""
    rng = np.random.default_rng(2026)
    area, aspect = [], []
    for W, H in GRAD_SIZES:
        kept = 0
        while kept < n_per_size:
            a, r = rng.uniform(0.08, 1.0), rng.uniform(0.75, 4 / 3)
            w, h = int(np.sqrt(a * W * H * r)), int(np.sqrt(a * W * H / r))
            if w <= W and h <= H:
                area.append(w * h / (W * H))
                aspect.append(_oriented(W, H, w / h))
                kept += 1
    return np.array(area), np.array(aspect)


def reference_erase(n: int = 20000):
    T.reseed(2025)
    op = T.RandomErasing(EPSILON=1.0)
    fr = []
    for _ in range(n):
        win = op.sample_window(32, 32)
        if win is not None:
            fr.append(win[2] * win[3] / 1024.0)
    return np.array(fr)


@pytest.fixture(scope="module")
def train_measurements(gradient_ds):
    out = {}
    for name in LOADERS:
        s = Section(
            file_list=str(gradient_ds / "list.txt"),
            data_dir=str(gradient_ds),
            transforms=train_tf(),
            loader=name,
            batch_size=32,
        )
        x, y = collect(build_loader(s, mode="train", seed=11))
        assert x.shape == (N_STAT, 3, 32, 32)
        out[name] = measure(x, y.ravel())
    return out


@pytest.mark.parametrize("name", LOADERS)
def test_train_crop_distribution_matches_paddleclas(train_measurements, name):
    m = train_measurements[name]
    ref_area, ref_aspect = reference_crops()
    assert np.all(m[:, 4] > 0)  # green still increases downwards: never flipped vertically
    # aspect w/h ~ U(3/4, 4/3) (PaddleClas: sqrt of a uniform ratio per side)
    assert m[:, 1].min() > 0.75 * 0.95 and m[:, 1].max() < 4 / 3 * 1.05
    assert stats.ks_2samp(m[:, 5], ref_aspect).pvalue > 1e-3
    # ... and the test can tell: rejection sampling (DALI's default random crop) is rejected
    assert stats.ks_2samp(m[:, 5], rejection_crops()[1]).pvalue < 1e-3
    # area fraction: PaddleClas's clamp-to-bound formula, per image size
    assert m[:, 0].min() > 0.08 * 0.9 and m[:, 0].max() < 1.02
    assert stats.ks_2samp(m[:, 0], ref_area).pvalue > 1e-3


def test_train_crop_distributions_agree_between_loaders(train_measurements):
    d, o = train_measurements["dali"], train_measurements["opencv"]
    assert stats.ks_2samp(d[:, 0], o[:, 0]).pvalue > 1e-3
    assert stats.ks_2samp(d[:, 5], o[:, 5]).pvalue > 1e-3
    assert stats.ks_2samp(d[:, 3], o[:, 3]).pvalue > 1e-3


@pytest.mark.parametrize("name", LOADERS)
def test_train_flip_and_erase_rates(train_measurements, name):
    m = train_measurements[name]
    n = len(m)
    tol = 4.5 * np.sqrt(0.25 / n)  # binomial, p = 0.5
    assert abs(m[:, 2].mean() - 0.5) < tol  # RandFlipImage
    erased = m[:, 3] > 0
    assert abs(erased.mean() - 0.5) < tol  # RandomErasing EPSILON 0.5 (a 32x32 crop always fits)
    frac = m[erased, 3]
    ref = reference_erase()
    # area in [sl, sh] = [0.02, 0.4] of the image up to rounding h and w to whole pixels
    assert frac.min() >= ref.min() - 1e-9 and frac.max() <= ref.max() + 1e-9
    assert ref.min() > 0.01 and ref.max() < 0.45
    assert stats.ks_2samp(frac, ref).pvalue > 1e-3


# ------------------------------------------------------------------------ transform args


def test_normalize_scale_strings_are_parsed_not_evaluated():
    assert T.NormalizeImage(scale="1./255.").scale == pytest.approx(1 / 255)
    assert T.NormalizeImage(scale="1.0 / 255.0").scale == pytest.approx(1 / 255)
    assert T.NormalizeImage(scale=0.5).scale == 0.5
    for bad in ["__import__('os').system('true')", "1/0", "1/2/3", "abc", "", True]:
        with pytest.raises(ValueError, match="scale"):
            T.NormalizeImage(scale=bad)


@pytest.mark.parametrize(
    "name,args,match",
    [
        ("RandCropImage", {"size": 0}, "size"),
        ("RandCropImage", {"size": 32, "scale": [0.5, 0.1]}, "scale"),
        ("RandFlipImage", {"flip_code": 2}, "flip_code"),
        ("ResizeImage", {}, "resize_short"),
        ("CropImage", {"size": [1, 2, 3]}, "size"),
        ("NormalizeImage", {"mean": [0.5, 0.5]}, "mean"),
        ("NormalizeImage", {"order": "nhwc"}, "order"),
        ("RandomErasing", {"EPSILON": 1.5}, "EPSILON"),
        ("RandomErasing", {"sl": 0.5, "sh": 0.1}, "sl"),
        ("ResizeImage", {"resize_short": 8, "interpolation": "magic"}, "interpolation"),
    ],
)
def test_op_constructors_validate(name, args, match):
    with pytest.raises(ValueError, match=match) as ei:
        T.OPS[name](**args)
    assert name in str(ei.value)


def test_registry():
    assert set(T.OPS) == {
        "DecodeImage", "RandCropImage", "RandFlipImage", "ResizeImage",
        "CropImage", "NormalizeImage", "ToCHWImage", "RandomErasing",
    }
    assert T.DALI_SUPPORTED <= set(T.OPS)


@pytest.mark.parametrize(
    "spec,op",
    [
        (Spec("RandomErasing", {"mode": "pixel"}), "RandomErasing"),
        (Spec("ResizeImage", {"resize_short": 36, "interpolation": "area"}), "ResizeImage"),
        (Spec("ResizeImage", {"resize_short": 36, "interpolation": "nearest"}), "ResizeImage"),
    ],
)
def test_dali_unsupported_transform_names_the_op(small_ds, spec, op):
    tf = eval_tf()
    tf.insert(3, spec) if spec.name == "RandomErasing" else tf.__setitem__(1, spec)
    with pytest.raises(ConfigError, match=op):
        build_loader(section(small_ds, tf, loader="dali"), mode="eval")
    # auto falls back to OpenCV instead, and keeps the reason
    fallback = build_loader(section(small_ds, tf, loader="auto"), mode="eval")
    assert fallback.name == "opencv" and op in fallback.fallback and "no DALI mapping" in fallback.fallback


def test_unknown_op_is_reported(small_ds):
    tf = eval_tf()
    tf.insert(1, Spec("AutoAugment"))
    for name in LOADERS:
        with pytest.raises(ConfigError, match="AutoAugment"):
            build_loader(section(small_ds, tf, loader=name), mode="eval")


# ------------------------------------------------------------------------ bad data


@pytest.fixture
def bad_ds(tmp_path, small_ds):
    """6 good images plus one that passes the header check but cannot be decoded."""
    lines = []
    for i in range(6):
        data = (small_ds / "jpg" / f"im{i:02d}.jpg").read_bytes()
        (tmp_path / f"ok{i}.jpg").write_bytes(data)
        lines.append(f"ok{i}.jpg {i}")
    data = bytearray((small_ds / "jpg" / "im00.jpg").read_bytes())
    dht = data.find(b"\xff\xc4")  # wreck the Huffman tables; markers and lengths stay valid
    seglen = (data[dht + 2] << 8) | data[dht + 3]
    data[dht + 4 : dht + 2 + seglen] = b"\xff" * (seglen - 2)
    (tmp_path / "broken.jpg").write_bytes(bytes(data))
    assert check_image_file(str(tmp_path / "broken.jpg")) is None  # only decoding finds it
    lines.insert(3, "broken.jpg 0")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


@pytest.mark.parametrize("name", LOADERS)
def test_undecodable_image_raises_naming_it(bad_ds, name):
    ld = build_loader(section(bad_ds, eval_tf(), loader=name, batch_size=3), mode="eval")
    with pytest.raises(DataError, match="broken.jpg"):
        collect(ld)


@pytest.mark.parametrize("name,workers", [("dali", 0), ("opencv", 0), ("opencv", 2)])
def test_undecodable_image_skipped_and_counted(bad_ds, name, workers):
    s = section(bad_ds, train_tf(), loader=name, batch_size=3, skip_bad_images=True, num_workers=workers)
    ld = build_loader(s, mode="train")
    _, y = collect(ld)
    assert sorted(y.ravel().tolist()) == list(range(6))
    assert ld.skipped == 1 and ld.skipped_files[0][0].endswith("broken.jpg")
    _, y = collect(ld)  # next epoch leaves it out from the start
    assert sorted(y.ravel().tolist()) == list(range(6)) and ld.skipped == 1


@pytest.mark.parametrize("name", LOADERS)
def test_missing_and_garbage_files(tmp_path, small_ds, name):
    (tmp_path / "a.jpg").write_bytes((small_ds / "jpg" / "im01.jpg").read_bytes())
    (tmp_path / "garbage.jpg").write_bytes(b"this is not an image at all" * 10)
    (tmp_path / "list.txt").write_text("a.jpg 0\nmissing.jpg 1\ngarbage.jpg 2\n")
    with pytest.raises(DataError, match="missing.jpg") as ei:
        build_loader(section(tmp_path, eval_tf(), loader=name), mode="eval")
    assert "garbage.jpg" in str(ei.value) and "skip_bad_images" in str(ei.value)
    ld = build_loader(section(tmp_path, eval_tf(), loader=name, skip_bad_images=True), mode="eval")
    assert ld.skipped == 2 and ld.num_samples == 1
    assert collect(ld)[1].ravel().tolist() == [0]


def test_file_deleted_after_build_raises_naming_it(tmp_path, small_ds):
    for i in range(3):
        (tmp_path / f"x{i}.jpg").write_bytes((small_ds / "jpg" / f"im{i:02d}.jpg").read_bytes())
    (tmp_path / "list.txt").write_text("x0.jpg 0\nx1.jpg 1\nx2.jpg 2\n")
    for name in LOADERS:
        ld = build_loader(section(tmp_path, eval_tf(), loader=name), mode="eval")
        (tmp_path / "x1.jpg").rename(tmp_path / "gone.jpg")
        with pytest.raises(DataError, match="x1.jpg"):
            collect(ld)
        (tmp_path / "gone.jpg").rename(tmp_path / "x1.jpg")


# ------------------------------------------------------------------------ memory


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS")


def test_dali_cpu_memory_flat_across_epochs(small_ds):
    """Warm up 4 epochs, then 30 more: RSS growth must stay under 8 MB.

    Measured: +0.6 MB over the first 50 epochs after warm-up, +0.2 MB over the next 250."""
    ld = build_loader(section(small_ds, train_tf(), loader="dali", batch_size=4), mode="train")
    for _ in range(4):
        collect(ld)
    before = _rss_mb()
    for _ in range(30):
        collect(ld)
    grown = _rss_mb() - before
    assert grown < 8.0, f"RSS grew {grown:.1f} MB over 30 epochs"


# ------------------------------------------------------------------------ lists.py


def test_read_list_ok_and_unlabeled(tmp_path):
    f = tmp_path / "l.txt"
    f.write_text("a/b c.jpg 3\n\nd.jpg 0\n")
    e = read_list(str(f), class_num=5)
    assert [(x.path, x.label, x.line) for x in e] == [("a/b c.jpg", 3, 1), ("d.jpg", 0, 3)]
    f.write_text("x.jpg\ny.jpg 7\n")
    assert [(x.path, x.label) for x in read_list(str(f), labeled=False)] == [("x.jpg", -1), ("y.jpg", -1)]


@pytest.mark.parametrize(
    "text,match",
    [
        ("a.jpg 1\nlonely\n", r"l\.txt:2: expected"),
        ("a.jpg 1\nb.jpg one\n", r"l\.txt:2: label 'one' is not an integer"),
        ("a.jpg 5\n", r"l\.txt:1: label 5 is outside \[0, 5\)"),
        ("a.jpg -1\n", r"l\.txt:1: label -1 is outside"),
        ("\n  \n", "has no entries"),
    ],
)
def test_read_list_errors(tmp_path, text, match):
    f = tmp_path / "l.txt"
    f.write_text(text)
    with pytest.raises(DataError, match=match):
        read_list(str(f), class_num=5)


def test_read_list_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.txt"):
        read_list(str(tmp_path / "nope.txt"))


def test_check_image_file(tmp_path, small_ds):
    good = (small_ds / "jpg" / "im00.jpg").read_bytes()
    (tmp_path / "ok.jpg").write_bytes(good)
    (tmp_path / "trunc.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    ok, png = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "p.png").write_bytes(png.tobytes())
    assert check_image_file(str(tmp_path / "ok.jpg")) is None
    assert check_image_file(str(tmp_path / "p.png")) is None
    assert "truncated" in check_image_file(str(tmp_path / "trunc.jpg"))
    assert check_image_file(str(tmp_path / "empty.jpg")) == "empty file"
    assert check_image_file(str(tmp_path / "none.jpg")) == "file not found"


# ------------------------------------------------------------------------ bench


def test_bench_loaders_reports_both(small_ds):
    """Steady state apart from start-up; alternating rounds give medians and ranges; DALI builds once
    (the second build is the deliberate rebuild after close()); a list too short for the asked
    batches is an error naming the need."""
    from clasflow.data.bench import bench_loaders

    t = time.time()
    res = bench_loaders(section(small_ds, train_tf(), batch_size=4), loaders=("dali-cpu", "opencv"), batches=1,
                        warmup=1, rounds=2, workers={"opencv": 2})
    assert set(res) == {"dali-cpu", "opencv"}
    for r in res.values():
        assert r["images_per_sec"] > 0 and r["cpu_ms_per_image"] >= 0 and r["images"] == 4 and r["rounds"] == 2
        lo, hi = r["images_per_sec_range"]
        assert lo <= r["images_per_sec"] <= hi
        assert r["first_batch_s"] > 0 and r["epoch_start_s"] > 0
        assert r["cores_used"] >= 0 and 0 <= r["other_cores"] < float("inf")  # (jiffies: coarse on a 1-batch run)
    assert res["dali-cpu"]["builds"] == 2 and res["dali-cpu"]["rebuild_s"] > 0 and res["dali-cpu"]["device"] == "cpu"
    assert res["opencv"]["workers"] == 2
    short = bench_loaders(section(small_ds, train_tf(), batch_size=4), loaders=("dali-cpu",), batches=3)
    assert "needs warm-up + timed = 6 in one epoch" in short["dali-cpu"]["error"]
    assert time.time() - t < 60


def test_opencv_workers_die_with_a_killed_trainer(tmp_path):
    """SIGKILL of the training process (an OOM kill) must not leave its loader workers behind."""
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    data = tmp_path / "data"
    data.mkdir()
    lines = []
    for i in range(16):
        cv2.imwrite(str(data / f"{i}.jpg"), np.full((40, 40, 3), i * 10, np.uint8))
        lines.append(f"{i}.jpg {i % 2}\n")
    (data / "list.txt").write_text("".join(lines))
    script = textwrap.dedent(f"""
        import os, time
        from types import SimpleNamespace as NS
        from clasflow.data import build_loader
        ops = [NS(name="DecodeImage", args={{}}), NS(name="ResizeImage", args={{"size": 32}}),
               NS(name="NormalizeImage", args={{}}), NS(name="ToCHWImage", args={{}})]
        section = NS(batch_size=2, num_workers=2, file_list={str(data / 'list.txt')!r}, data_dir={str(data)!r},
                     shuffle_seed=0, transforms=ops, loader="opencv", skip_bad_images=False)
        loader = build_loader(section, mode="train", class_num=2)
        it = iter(loader)
        next(it)
        print("READY", flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "READY"
    children = [int(p) for p in open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()]
    assert len(children) >= 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(os.path.exists(f"/proc/{c}") and "Z" not in open(f"/proc/{c}/stat").read().split()[2] for c in children):
        time.sleep(0.2)
    alive = [c for c in children if os.path.exists(f"/proc/{c}") and open(f"/proc/{c}/stat").read().split()[2] != "Z"]
    assert alive == [], f"orphaned loader workers {alive}"

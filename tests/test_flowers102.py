"""The flowers102 stage on fixture data: download from a mirror, lists, validation, CLI."""

import hashlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.io

from clasflow.cli import main
from clasflow.data.fixture import build_fixture
from clasflow.data.flowers102 import OFFICIAL_MD5, prepare_flowers102, read_metadata
from clasflow.errors import DataError, DownloadError


def _lines(path):
    return path.read_text().splitlines()


def test_lists_follow_paddleclas_split_mapping(digits_mirror, tmp_path):
    root = tmp_path / "flowers"
    report = prepare_flowers102(root, url_base=f"file://{digits_mirror}")
    labels, splits = read_metadata(root)
    train = _lines(root / "train_list.txt")
    # same order as setid.mat, label = mat label - 1, path jpg/image_%05d.jpg
    expected = [f"jpg/image_{i:05d}.jpg {labels[i - 1] - 1}" for i in splits["train"]]
    assert train == expected
    assert _lines(root / "val_list.txt") == [f"jpg/image_{i:05d}.jpg {labels[i - 1] - 1}" for i in splits["valid"]]
    assert _lines(root / "train_extra_list.txt") == train + _lines(root / "extra_list.txt")
    assert report.counts == {"train_list.txt": 16, "val_list.txt": 12, "extra_list.txt": 12, "train_extra_list.txt": 28}
    assert report.classes == 4
    assert {int(l.split()[1]) for l in train} == {0, 1, 2, 3}


def test_download_over_http_skips_verified_files(digits_mirror, http_server, tmp_path):
    for f in digits_mirror.iterdir():
        if f.is_file():
            shutil.copy(f, http_server.root / f.name)
    root = tmp_path / "flowers"
    prepare_flowers102(root, url_base=http_server.url)
    fetched = [p for p, _ in http_server.faults.requests]
    assert sorted(fetched) == ["102flowers.tgz", "MD5SUMS", "imagelabels.mat", "setid.mat"]
    prepare_flowers102(root, url_base=http_server.url)  # second run: only the sums are read again
    assert [p for p, _ in http_server.faults.requests][4:] == ["MD5SUMS"]


def test_mirror_without_sums_is_checked_against_official_md5(digits_mirror, http_server, tmp_path):
    for name in OFFICIAL_MD5:
        shutil.copy(digits_mirror / name, http_server.root / name)
    with pytest.raises(DownloadError, match="checksum mismatch .*expected md5 (52808999|e0620be6|a5357ecc)"):
        prepare_flowers102(tmp_path / "flowers", url_base=http_server.url)
    assert not any(p.suffix in (".tgz", ".mat") for p in (tmp_path / "flowers").iterdir())


def test_tampered_mirror_file_is_refused(digits_mirror, http_server, tmp_path):
    for f in digits_mirror.iterdir():
        if f.is_file():
            shutil.copy(f, http_server.root / f.name)
    (http_server.root / "setid.mat").write_bytes(b"tampered")
    with pytest.raises(DownloadError, match="setid.mat"):
        prepare_flowers102(tmp_path / "flowers", url_base=http_server.url)
    assert not (tmp_path / "flowers" / "setid.mat").exists()


def test_archive_with_traversal_member_is_refused(tmp_path):
    import io
    import tarfile

    root = tmp_path / "flowers"
    build_fixture(root, classes=2, per_class=3, size=16)
    shutil.rmtree(root / "jpg")
    with tarfile.open(root / "102flowers.tgz", "w:gz") as tar:
        info = tarfile.TarInfo("../escape.jpg")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(Exception, match="outside the destination"):
        prepare_flowers102(root, download=False)
    assert not (tmp_path / "escape.jpg").exists()


def _corrupt(root, relpath):
    (root / relpath).write_bytes(b"not a jpeg")


def test_bad_images_are_dropped_and_reported(tmp_path):
    root = tmp_path / "flowers"
    build_fixture(root, classes=3, per_class=5, size=24)
    first_train = _lines_after_prepare = None
    prepare_flowers102(root, download=False)
    first_train = _lines(root / "train_list.txt")[0].split()[0]
    first_val = _lines(root / "val_list.txt")[0].split()[0]
    _corrupt(root, first_train)
    (root / first_val).unlink()
    report = prepare_flowers102(root, download=False)
    assert sorted(report.bad_images) == sorted([str(root / first_train), str(root / first_val)])
    assert first_train not in (root / "train_list.txt").read_text()
    assert report.counts["train_list.txt"] == 5  # 3 classes x 2 train - 1 dropped


def test_strict_makes_bad_images_fatal_and_keeps_lists(tmp_path):
    root = tmp_path / "flowers"
    build_fixture(root, classes=3, per_class=5, size=24)
    prepare_flowers102(root, download=False)
    before = (root / "train_list.txt").read_text()
    bad = before.splitlines()[1].split()[0]
    _corrupt(root, bad)
    with pytest.raises(DataError, match=bad.replace("/", ".")):
        prepare_flowers102(root, download=False, strict=True)
    assert (root / "train_list.txt").read_text() == before


def test_labels_out_of_range_and_bad_ids_are_errors(tmp_path):
    root = tmp_path / "flowers"
    build_fixture(root, classes=3, per_class=4, size=16)
    scipy.io.savemat(root / "imagelabels.mat", {"labels": np.array([[1, 2, 5] * 4])})
    with pytest.raises(DataError, match="imagelabels.mat.*1..K"):
        prepare_flowers102(root, download=False)
    build_fixture(root, classes=3, per_class=4, size=16)
    scipy.io.savemat(root / "setid.mat", {"trnid": np.array([[1, 99]]), "valid": np.array([[2]]), "tstid": np.array([[3]])})
    with pytest.raises(DataError, match=r"split 'trnid' has image ids outside 1..12: \[99\]"):
        prepare_flowers102(root, download=False)
    (root / "setid.mat").write_bytes(b"junk")
    with pytest.raises(DataError, match="setid.mat.*re-download"):
        prepare_flowers102(root, download=False)


def test_no_download_without_files_names_what_is_missing(tmp_path):
    with pytest.raises(DataError, match="imagelabels.mat not found"):
        prepare_flowers102(tmp_path / "empty", download=False)


@pytest.mark.parametrize("source", ["digits", "synthetic"])
def test_fixture_layout_and_determinism(tmp_path, source):
    counts = build_fixture(tmp_path / "a", source=source, classes=5, per_class=10, size=32, seed=3)
    build_fixture(tmp_path / "b", source=source, classes=5, per_class=10, size=32, seed=3)
    assert counts == {"train": 20, "valid": 15, "test": 15}
    labels = scipy.io.loadmat(tmp_path / "a" / "imagelabels.mat")["labels"]
    assert labels.shape == (1, 50) and set(np.unique(labels)) == {1, 2, 3, 4, 5}
    files = sorted(p.name for p in (tmp_path / "a" / "jpg").iterdir())
    assert files == [f"image_{i:05d}.jpg" for i in range(1, 51)]
    digest = lambda d: hashlib.md5(b"".join((d / "jpg" / f).read_bytes() for f in files)).hexdigest()  # noqa: E731
    assert digest(tmp_path / "a") == digest(tmp_path / "b")


def test_fixture_split_like_flowers102(tmp_path):
    """train/valid images per class as asked, the rest in the test split (the distillation's extra data)."""
    counts = build_fixture(tmp_path / "g", source="glyphs", classes=3, per_class=8, size=16, train=2, valid=2)
    assert counts == {"train": 6, "valid": 6, "test": 12}
    report = prepare_flowers102(tmp_path / "g", download=False, strict=True)
    assert report.counts == {"train_list.txt": 6, "val_list.txt": 6, "extra_list.txt": 12, "train_extra_list.txt": 18}
    for name in ("train_list.txt", "val_list.txt"):
        assert sorted(int(line.split()[1]) for line in _lines(tmp_path / "g" / name)) == [0, 0, 1, 1, 2, 2]


def test_synthetic_classes_are_distinguishable(tmp_path):
    """Nearest-centroid on tiny color histograms separates the synthetic classes: learnable data."""
    import cv2

    root = tmp_path / "s"
    build_fixture(root, source="synthetic", classes=6, per_class=10, size=32)
    prepare_flowers102(root, download=False)

    def feats(listfile):
        xs, ys = [], []
        for line in _lines(root / listfile):
            rel, label = line.split()
            img = cv2.imread(str(root / rel))
            hist = cv2.calcHist([cv2.cvtColor(img, cv2.COLOR_BGR2HSV)], [0], None, [30], [0, 180]).ravel()
            xs.append(hist / hist.sum())
            ys.append(int(label))
        return np.array(xs), np.array(ys)

    xtr, ytr = feats("train_list.txt")
    xva, yva = feats("val_list.txt")
    centroids = np.stack([xtr[ytr == c].mean(0) for c in range(6)])
    pred = np.argmin(((xva[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == yva).mean() > 0.8


def test_fixture_rejects_bad_arguments(tmp_path):
    with pytest.raises(DataError, match="--source digits has 10 classes"):
        build_fixture(tmp_path, source="digits", classes=11)
    with pytest.raises(DataError, match="--per-class 1 is fewer than 1 train \\+ 1 valid images per class"):
        build_fixture(tmp_path, per_class=1)
    with pytest.raises(DataError, match="--per-class 10 is fewer than 6 train \\+ 5 valid"):
        build_fixture(tmp_path, per_class=10, train=6, valid=5)
    with pytest.raises(DataError, match="--source must be one of"):
        build_fixture(tmp_path, source="imagenet")


def test_cli_fixture_then_dataset(tmp_path, capsys):
    assert main(["dataset", "fixture", "--root", str(tmp_path / "m"), "--classes", "3", "--per-class", "4", "--size", "16", "--archive"]) == 0
    assert main(["dataset", "flowers102", "--root", str(tmp_path / "d"), "--url-base", f"file://{tmp_path / 'm'}"]) == 0
    out = capsys.readouterr().out
    assert "3 classes; train_list.txt 6, val_list.txt 3, extra_list.txt 3, train_extra_list.txt 9" in out


def test_cli_error_is_one_clear_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "clasflow", "dataset", "flowers102", "--root", str(tmp_path), "--no-download"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "clasflow: error:" in proc.stderr and "imagelabels.mat not found" in proc.stderr
    assert "Traceback" not in proc.stderr

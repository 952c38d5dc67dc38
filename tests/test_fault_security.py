"""Hostile archives and weight files.

Archives: tests/test_archive.py refuses tar/zip traversal (``../``, ``/etc/...``), symlinks and
hard links out of the destination, a character device, zip symlinks, and tar/zip bombs of one big
member. Added here: zip absolute and drive-letter paths, a tar FIFO, an absolute hard link, a
symlink chain that escapes in two hops, bombs made of many small members, a zip whose headers lie
about the sizes, and an archive inside an archive (not expanded).

Weight files are pickles (``paddle.load`` runs what they carry): a file listed in the
``zoo.lock.json`` beside it (written by ``clasflow download``) whose sha256 differs is refused
before it is unpickled, unless ``--trust``; checkpoints our trainer writes (no lock file) load
as before.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import paddle
import pytest

from clasflow.archive import safe_extract
from clasflow.cli import main
from clasflow.errors import ArchiveError, ClasflowError
from clasflow.models import build_model, load_pretrained
from clasflow.models.pretrained import LOCK_FILE, trusted_weights, verify_weights
from tests.conftest import CONFIGS, tiny_overrides

# ------------------------------------------------------------------ archives


from tests.test_archive import _file, _tar  # noqa: E402  (the same archive builders)


def _special(name, kind, target=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _zip(path, entries, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in entries:
            zf.writestr(zipfile.ZipInfo(name) if isinstance(name, str) else name, data)
    return path


def _lying_zip(path: Path) -> Path:
    """A deflated member whose local and central headers claim 10 bytes for 300 kB of zeros."""
    _zip(path, [("big.bin", b"\0" * 300_000)], zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    lh = data.find(b"PK\x03\x04")
    struct.pack_into("<I", data, lh + 22, 10)  # local header: uncompressed size
    cd = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, cd + 24, 10)  # central directory: uncompressed size
    path.write_bytes(bytes(data))
    return path


def _nested(path: Path) -> Path:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.bin", b"\0" * 300_000)
    return _zip(path, [("inner.zip", inner.getvalue())])


HOSTILE = {
    "zip absolute path": (lambda p: _zip(p / "a.zip", [("/tmp/clasflow-evil.txt", b"x")]), "outside the destination"),
    "zip drive-letter path": (lambda p: _zip(p / "a.zip", [("C:/evil.txt", b"x")]), "outside the destination"),
    "zip traversal inside a folder": (lambda p: _zip(p / "a.zip", [("jpg/../../evil.txt", b"x")]), "outside the destination"),
    "tar FIFO": (lambda p: _tar(p / "a.tgz", [_file("jpg/ok.jpg"), _special("jpg/fifo", tarfile.FIFOTYPE)]), "device file or FIFO"),
    "tar block device": (lambda p: _tar(p / "a.tgz", [_special("jpg/sda", tarfile.BLKTYPE)]), "device file or FIFO"),
    "tar absolute hard link": (lambda p: _tar(p / "a.tgz", [_special("jpg/h", tarfile.LNKTYPE, "/etc/passwd")]), "outside the destination"),
    "tar symlink chain escaping in two hops": (
        lambda p: _tar(p / "a.tgz", [_special("x", tarfile.SYMTYPE, "."), _special("x/y", tarfile.SYMTYPE, ".."),
                                     _file("x/y/evil.txt")]), "outside the destination"),
    "tar symlink to a parent, then a file through it": (
        lambda p: _tar(p / "a.tgz", [_special("sub", tarfile.SYMTYPE, "../"), _file("sub/evil.txt")]), "points outside"),
    "tar bomb of 3000 small members": (
        lambda p: _tar(p / "a.tgz", [_file(f"jpg/{i}.jpg", b"\0" * 100) for i in range(3000)]), "more than 100000 bytes"),
    "zip bomb of 3000 small members": (
        lambda p: _zip(p / "a.zip", [(f"jpg/{i}.jpg", b"\0" * 100) for i in range(3000)], zipfile.ZIP_DEFLATED),
        "more than 100000 bytes"),
    "zip whose headers lie about the sizes": (lambda p: _lying_zip(p / "a.zip"), "corrupt|more than"),
}


@pytest.mark.timeout(120)
def test_hostile_archives_are_refused_and_leave_nothing(tmp_path, fault_record):
    import re

    refused, problems = 0, []
    for i, (what, (make, message)) in enumerate(HOSTILE.items()):
        src = tmp_path / f"src{i}"
        src.mkdir()
        arc = make(src)
        dest = tmp_path / f"dest{i}" / "inside"
        try:
            safe_extract(arc, dest, max_bytes=100_000)
            problems.append(f"{what}: extracted")
        except ArchiveError as exc:
            if re.search(message, str(exc)) and str(arc) in str(exc):
                refused += 1
            else:
                problems.append(f"{what}: unclear error {exc}")
        left = sorted(p.relative_to(tmp_path / f"dest{i}").as_posix() for p in (tmp_path / f"dest{i}").rglob("*"))
        if left != ["inside"]:
            problems.append(f"{what}: left {left}")
    escaped = [p for p in (tmp_path / "evil.txt", Path("/tmp/clasflow-evil.txt")) if p.exists()]
    fault_record("security: hostile archives (beyond test_archive.py)", trials=len(HOSTILE), survived=refused - len(escaped),
                 data_lost=0, note="; ".join(HOSTILE))
    assert not problems and not escaped, (problems, escaped)


def test_an_archive_inside_an_archive_is_not_expanded(tmp_path):
    arc = _nested(tmp_path / "outer.zip")
    assert safe_extract(arc, tmp_path / "d", max_bytes=100_000) == ["inner.zip"]
    assert (tmp_path / "d" / "inner.zip").stat().st_size < 10_000  # still compressed, the cap holds


# ------------------------------------------------------------------ weight files are pickles


class _Payload:
    """A pickle that writes a marker file when it is unpickled (what a hostile weight file could do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _lock(folder: Path, name: str, sha: str) -> None:
    (folder / LOCK_FILE).write_text(json.dumps({name: {"sha256": sha, "url": "file:///mirror/" + name, "demo": False}}))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _small(classes=10):
    paddle.seed(0)
    return build_model("MobileNetV3_small_x0_35", class_num=classes)


def _state(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


@pytest.fixture
def zoo_dir(tmp_path) -> Path:
    """pretrained/ as `clasflow download` leaves it: the weights and zoo.lock.json with their sha256."""
    folder = tmp_path / "pretrained"
    folder.mkdir()
    weights = folder / "MobileNetV3_small_x0_35_pretrained.pdparams"
    paddle.seed(1)
    paddle.save(build_model("MobileNetV3_small_x0_35", class_num=10).state_dict(), str(weights))
    _lock(folder, weights.name, _sha(weights))
    return folder


def test_lock_file_name_matches_the_zoo():
    from clasflow import zoo

    assert LOCK_FILE == zoo.LOCK_FILE


def test_locked_weights_load_and_tampered_ones_are_refused(zoo_dir, caplog, fault_record):
    weights = zoo_dir / "MobileNetV3_small_x0_35_pretrained.pdparams"
    model = _small()
    assert load_pretrained(model, str(weights.with_suffix(""))).loaded  # matches its lock entry

    expected = _sha(weights)
    state = paddle.load(str(weights))
    state["fc.bias"] = paddle.full_like(state["fc.bias"], 7.0)  # tampered: same keys, other values
    paddle.save(state, str(weights))
    model = _small()
    before = _state(model)
    with pytest.raises(ClasflowError) as err:
        load_pretrained(model, str(weights))
    msg = str(err.value)
    refused = all(s in msg for s in (str(weights), expected, _sha(weights), "--trust", LOCK_FILE))
    unchanged = all(np.array_equal(v, before[k]) for k, v in _state(model).items())

    caplog.set_level(logging.WARNING, logger="clasflow")
    report = load_pretrained(model, str(weights), trust=True)
    trusted = bool(report.loaded) and np.all(model.fc.bias.numpy() == 7.0)
    warned = "--trust" in caplog.text and _sha(weights) in caplog.text
    fault_record("security: tampered weight file beside its zoo.lock.json", trials=1, survived=int(refused and unchanged),
                 data_lost=0, note="refused naming file, both sha256 and --trust; loads with --trust and a warning")
    assert refused, msg
    assert unchanged
    assert trusted and warned, caplog.text


def test_a_hostile_pickle_is_refused_before_it_runs(zoo_dir, tmp_path, fault_record):
    weights = zoo_dir / "MobileNetV3_small_x0_35_pretrained.pdparams"
    marker = tmp_path / "payload-ran"
    weights.write_bytes(pickle.dumps({"fc.bias": _Payload(marker)}))  # lock still holds the good sha256
    with pytest.raises(ClasflowError, match="does not match"):
        load_pretrained(_small(), str(weights))
    with pytest.raises(ClasflowError, match="does not match"):
        verify_weights(weights)
    v1 = zoo_dir / "MobileNetV3_small_x0_35_pretrained.tar"  # a v1 archive is checked the same way
    with tarfile.open(v1, "w") as tar:
        info = tarfile.TarInfo("MobileNetV3_small_x0_35_pretrained/fc_0.w_0")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    _lock(zoo_dir, v1.name, "0" * 64)
    with pytest.raises(ClasflowError, match=f"{v1.name}: sha256 .* does not match"):
        load_pretrained(_small(), str(v1))
    fault_record("security: weight pickle carrying code, lock sha256 differs", trials=2, survived=2 - marker.exists(),
                 data_lost=0, note="refused before unpickling (.pdparams and v1 .tar)")
    assert not marker.exists()


def test_unreadable_lock_file_is_refused_unless_trusted(zoo_dir):
    weights = zoo_dir / "MobileNetV3_small_x0_35_pretrained.pdparams"
    (zoo_dir / LOCK_FILE).write_text("{not json")
    with pytest.raises(ClasflowError, match=f"cannot verify .*{LOCK_FILE}.*--trust"):
        load_pretrained(_small(), str(weights))
    (zoo_dir / LOCK_FILE).write_text(json.dumps({weights.name: {"url": "x"}}))  # an entry without sha256
    with pytest.raises(ClasflowError, match="no valid sha256"):
        load_pretrained(_small(), str(weights))
    assert load_pretrained(_small(), str(weights), trust=True).loaded
    with trusted_weights():
        assert load_pretrained(_small(), str(weights)).loaded


def test_files_the_lock_does_not_list_and_our_checkpoints_load_as_before(zoo_dir, tmp_path):
    from clasflow.engine import checkpoint as ckpt

    other = zoo_dir / "mine.pdparams"  # beside a lock that lists other files only
    paddle.save(_small().state_dict(), str(other))
    assert verify_weights(other) is None and load_pretrained(_small(), str(other)).loaded
    model = _small()
    opt = paddle.optimizer.Momentum(learning_rate=0.1, parameters=model.parameters())
    folder = ckpt.save_checkpoint(tmp_path / "output" / "MobileNetV3_small_x0_35" / "best_model", model, opt,
                                  ckpt.CheckpointMeta(0, 0, 1, "h"))
    assert not (folder / LOCK_FILE).exists()
    report = load_pretrained(_small(), str(folder / ckpt.PREFIX), strict_head=True)
    assert len(report.loaded) == len(model.state_dict())


def _tampered_checkpoint(zoo_dir: Path) -> Path:
    weights = zoo_dir / "MobileNetV3_small_x0_35_pretrained.pdparams"
    state = paddle.load(str(weights))
    state["fc.weight"] = state["fc.weight"] * 2
    paddle.save(state, str(weights))
    return weights


def _cli_subprocess(argv: list[str]) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "clasflow", *argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    return proc.returncode, proc.stderr


@pytest.mark.timeout(400)
def test_cli_train_eval_export_need_trust(digits_data, zoo_dir, tmp_path, capsys, fault_record):
    weights = _tampered_checkpoint(zoo_dir)
    over = tiny_overrides(digits_data, classes=10, epochs=1) + [
        "ARCHITECTURE.name=MobileNetV3_small_x0_35", f"model_save_dir={tmp_path / 'out'}", f"pretrained_model={weights}"]
    args = ["-c", str(CONFIGS / "ResNet50_vd.yaml"), *sum((["-o", o] for o in over), [])]
    codes, problems = {}, []
    for name, argv in (("train", ["train", *args, "--no-track"]), ("eval", ["eval", *args, "--no-track"])):
        capsys.readouterr()
        codes[name] = main(argv)
        err = capsys.readouterr().err
        if not (codes[name] == 2 and "does not match" in err and "--trust" in err and str(weights) in err):
            problems.append(f"{name} without --trust: exit {codes[name]}: {err[-500:]}")
        if main([*argv, "--trust"]) != 0:
            problems.append(f"{name} --trust failed")
    # export in a subprocess: Paddle Inference's self-check changes process-wide settings
    export = ["export", *args, "--output_path", str(tmp_path / "inference")]
    codes["export"], err = _cli_subprocess(export)
    if not (codes["export"] == 2 and "does not match" in err and "--trust" in err and "Traceback" not in err):
        problems.append(f"export without --trust: exit {codes['export']}: {err[-500:]}")
    rc, err = _cli_subprocess([*export, "--trust"])
    if rc != 0 or not (tmp_path / "inference" / "inference.json").is_file():
        problems.append(f"export --trust: exit {rc}: {err[-1000:]}")
    fault_record("security: tampered weights through the CLI (train, eval, export)", trials=3,
                 survived=sum(c == 2 for c in codes.values()), data_lost=0, note="exit 2 without --trust, 0 with it")
    assert not problems, problems

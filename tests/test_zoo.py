"""The zoo registry and the download stage against local mirrors (HTTP and file://)."""

import io
import json
import tarfile

import pytest

from clasflow.cli import main
from clasflow.errors import ClasflowError, DownloadError
from clasflow.zoo import LOCK_FILE, MIRROR_MANIFEST, download_weights, lookup, registry

WEIGHTS = b"pretend pdparams " * 5000


def test_registry_covers_the_seed_model_list():
    zoo = registry()
    assert len(zoo) == 124
    for arch in ("ResNet50_vd", "ResNet50_vd_ssld", "MobileNetV3_large_x1_0"):
        e = zoo[arch]
        assert e.v1_tar == f"https://paddle-imagenet-models-name.bj.bcebos.com/{arch}_pretrained.tar"
        assert e.v2_pdparams.endswith(f"/dygraph/legendary_models/{arch}_pretrained.pdparams")
    assert zoo["AlexNet"].v2_pdparams == ""


def test_unknown_architecture_suggests_names():
    with pytest.raises(ClasflowError, match="unknown architecture 'MobileNetV3_large_x1' .*MobileNetV3_large_x1_0"):
        lookup("MobileNetV3_large_x1")


def _serve(server, files, manifest=None):
    for name, data in files.items():
        (server.root / name).write_bytes(data)
    if manifest is not None:
        (server.root / MIRROR_MANIFEST).write_text(json.dumps(manifest))


def test_first_download_records_sha256_then_lock_guards(http_server, tmp_path):
    _serve(http_server, {"ResNet50_vd_pretrained.pdparams": WEIGHTS})
    out = tmp_path / "pretrained"
    r = download_weights("ResNet50_vd", out, url_base=http_server.url)
    lock = json.loads((out / LOCK_FILE).read_text())
    assert lock["ResNet50_vd_pretrained.pdparams"]["sha256"] == r.sha256 and not r.demo
    # the mirror now serves other bytes: the lock refuses them, nothing replaces the good file
    (out / "ResNet50_vd_pretrained.pdparams").unlink()
    _serve(http_server, {"ResNet50_vd_pretrained.pdparams": b"evil" * 100})
    with pytest.raises(DownloadError, match=f"checksum mismatch.*{LOCK_FILE}.*--trust"):
        download_weights("ResNet50_vd", out, url_base=http_server.url, retries=0)
    assert not (out / "ResNet50_vd_pretrained.pdparams").exists()
    r2 = download_weights("ResNet50_vd", out, url_base=http_server.url, trust=True)
    assert r2.sha256 != r.sha256
    assert json.loads((out / LOCK_FILE).read_text())["ResNet50_vd_pretrained.pdparams"]["sha256"] == r2.sha256


def test_mirror_manifest_pins_are_enforced(http_server, tmp_path):
    _serve(http_server, {"MobileNetV3_large_x1_0_pretrained.pdparams": WEIGHTS}, {"files": {"MobileNetV3_large_x1_0_pretrained.pdparams": "0" * 64}})
    with pytest.raises(DownloadError, match="zoo pin"):
        download_weights("MobileNetV3_large_x1_0", tmp_path, url_base=http_server.url, retries=0)
    assert not (tmp_path / "MobileNetV3_large_x1_0_pretrained.pdparams").exists()


def test_retry_and_env_mirror(http_server, tmp_path, monkeypatch):
    _serve(http_server, {"ResNet50_vd_ssld_pretrained.pdparams": WEIGHTS})
    http_server.faults.fail_500["ResNet50_vd_ssld_pretrained.pdparams"] = 1
    monkeypatch.setenv("CLASFLOW_ZOO_URL", http_server.url)
    monkeypatch.setattr("clasflow.download.time.sleep", lambda s: None)
    r = download_weights("ResNet50_vd_ssld", tmp_path)
    assert (tmp_path / "ResNet50_vd_ssld_pretrained.pdparams").read_bytes() == WEIGHTS
    assert r.source == f"{http_server.url}/ResNet50_vd_ssld_pretrained.pdparams"


def test_v1_tar_is_extracted_safely(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with tarfile.open(mirror / "ResNet50_vd_pretrained.tar", "w") as tar:
        info = tarfile.TarInfo("ResNet50_vd_pretrained/fc_0.w_0")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    assert main(["download", "-a", "ResNet50_vd", "-p", str(tmp_path / "p"), "-d", "True", "--format", "tar", "--url-base", f"file://{mirror}"]) == 0
    assert (tmp_path / "p" / "ResNet50_vd_pretrained" / "fc_0.w_0").read_bytes() == b"abc"
    with tarfile.open(mirror / "MobileNetV3_large_x1_0_pretrained.tar", "w") as tar:
        info = tarfile.TarInfo("../../escape")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    assert main(["download", "-a", "MobileNetV3_large_x1_0", "-p", str(tmp_path / "p"), "-d", "--format", "tar", "--url-base", f"file://{mirror}"]) == 2
    assert not (tmp_path / "escape").exists()


def test_architecture_without_pdparams_needs_tar():
    with pytest.raises(ClasflowError, match="AlexNet has no pdparams weights"):
        download_weights("AlexNet", "/nonexistent", fmt="pdparams")

"""clasflow.storage against moto's S3 server on loopback, and the same API over local folders."""

from __future__ import annotations

import io
import logging
import os
import threading
import time

import pytest
import urllib3
from minio import Minio
from minio.error import S3Error

from clasflow import storage
from clasflow.download import Checksum, fetch
from clasflow.errors import ClasflowError, StorageError
from clasflow.fsutil import file_digest

MiB = 1 << 20


def _random_file(path, size: int):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


@pytest.fixture(params=["path", "file", "s3"])
def root(request, tmp_path) -> str:
    """A store root: a local folder (as a path or a file:// URI) or a prefix in a fresh bucket."""
    if request.param == "path":
        return str(tmp_path / "store")
    if request.param == "file":
        return f"file://{tmp_path / 'store'}"
    return request.getfixturevalue("s3_env").uri("base")


@pytest.fixture
def http_requests(monkeypatch) -> list[tuple[str, str]]:
    """Every HTTP request any urllib3 pool sends, as (method, url); the requests still go out."""
    seen: list[tuple[str, str]] = []
    original = urllib3.PoolManager.urlopen

    def spy(self, method, url, *args, **kwargs):
        seen.append((method, url))
        return original(self, method, url, *args, **kwargs)

    monkeypatch.setattr(urllib3.PoolManager, "urlopen", spy)
    return seen


def test_round_trip_small_files(root, tmp_path):
    for name, data in (("empty.bin", b""), ("hello.txt", b"hello\n")):
        src = tmp_path / "in" / name
        src.parent.mkdir(exist_ok=True)
        src.write_bytes(data)
        uri = storage.join(root, "a", name)
        assert storage.upload(src, uri) == uri
        assert storage.exists(uri)
        got = storage.download(uri, tmp_path / "out" / name)
        assert got.read_bytes() == data
    assert not storage.exists(storage.join(root, "a", "missing.bin"))
    assert storage.list(storage.join(root, "a")) == [storage.join(root, "a", "empty.bin"), storage.join(root, "a", "hello.txt")]


def test_round_trip_multipart(s3_env, tmp_path, monkeypatch):
    monkeypatch.setenv("CLASFLOW_S3_PART_SIZE", str(5 * MiB))
    parts = []
    original = Minio._upload_part

    def counting(self, *args, **kwargs):
        parts.append(args[5])  # the part number
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Minio, "_upload_part", counting)
    src = _random_file(tmp_path / "big.bin", 11 * MiB)
    uri = storage.upload(src, s3_env.uri("weights/big.bin"))
    assert sorted(parts) == [1, 2, 3]
    client = s3_env.client()
    stat = client.stat_object(s3_env.bucket, "weights/big.bin")
    assert stat.size == 11 * MiB and stat.metadata["x-amz-meta-sha256"] == file_digest(src)
    assert storage.download(uri, tmp_path / "back.bin").read_bytes() == src.read_bytes()
    assert [o.object_name for o in client.list_objects(s3_env.bucket, recursive=True)] == ["weights/big.bin"]  # no temporaries left


def test_dirs_and_run_prefix(root, tmp_path):
    tree = tmp_path / "tree"
    for rel in ("model.pdparams", "logs/train.log", "logs/deep/x.json"):
        _random_file(tree / rel, 1000)
    prefix = storage.run_prefix(root, "run-42")
    assert prefix == storage.join(root, "runs", "run-42") + ("/" if "://" in root else os.sep)
    uris = storage.upload_dir(tree, prefix)
    assert uris == storage.list(prefix) == [storage.join(prefix, r) for r in ("logs/deep/x.json", "logs/train.log", "model.pdparams")]
    out = storage.download_dir(prefix, tmp_path / "back")
    assert sorted(p.relative_to(tmp_path / "back").as_posix() for p in out) == ["logs/deep/x.json", "logs/train.log", "model.pdparams"]
    for p in out:
        assert p.read_bytes() == (tree / p.relative_to(tmp_path / "back")).read_bytes()
    assert storage.list(storage.run_prefix(root, "run-4")) == []  # a prefix of another run's id is not that run
    with pytest.raises(StorageError, match="invalid run id"):
        storage.run_prefix(root, "../escape")


def test_remove_a_file_or_a_folder(root, tmp_path):
    for rel in ("a/1", "a/2", "a/deep/3", "ab/4"):
        storage.upload(_random_file(tmp_path / "src" / rel, 10), storage.join(root, rel))
    assert storage.remove(storage.join(root, "a", "deep", "3")) == 1
    assert storage.remove(storage.join(root, "a") + "/") == 2  # the folder only: ab/4 stays
    assert storage.list(storage.join(root, "")) == [storage.join(root, "ab/4")]
    assert storage.remove(storage.join(root, "a") + "/") == 0 and storage.remove(storage.join(root, "missing")) == 0


def test_tampered_object_is_refused(s3_env, tmp_path):
    src = _random_file(tmp_path / "data.bin", 4096)
    uri = storage.upload(src, s3_env.uri("datasets/data.bin"))
    client = s3_env.client()
    evil = os.urandom(4096)  # same size, same recorded sha256, other bytes
    client.put_object(s3_env.bucket, "datasets/data.bin", io.BytesIO(evil), len(evil), metadata={"sha256": file_digest(src)})
    dest = tmp_path / "got.bin"
    with pytest.raises(StorageError, match="does not match the sha256 recorded") as err:
        storage.download(uri, dest)
    assert "datasets/data.bin" in str(err.value) and s3_env.server.url in str(err.value)
    assert not dest.exists() and not list(tmp_path.glob(".got.bin.*"))


def test_interrupted_multipart_upload_is_atomic_and_retried(s3_env, tmp_path, monkeypatch):
    """The server dies after the first part; the upload restarts once it is back, and the final key
    never shows anything but the complete, verified object."""
    monkeypatch.setenv("CLASFLOW_S3_PART_SIZE", str(5 * MiB))
    monkeypatch.setenv("CLASFLOW_S3_PARALLEL", "1")  # part 2 is sent after the server is gone
    server, bucket, key = s3_env.server, s3_env.bucket, "models/best.pdparams"
    src = _random_file(tmp_path / "best.pdparams", 11 * MiB)
    size, sha = src.stat().st_size, file_digest(src)
    admin, probe = s3_env.client(), s3_env.client()
    parts: list[int] = []
    at_crash: dict = {}

    original_part = Minio._upload_part

    def part_then_crash(self, *args, **kwargs):
        etag = original_part(self, *args, **kwargs)
        parts.append(args[5])
        if len(parts) == 1:
            at_crash["names"] = [o.object_name for o in admin.list_objects(bucket, recursive=True)]
            server.stop()
        return etag

    def restart_between_attempts(delay):
        if server.proc is None:
            server.start()  # same port; moto forgot everything
            admin.make_bucket(bucket)

    monkeypatch.setattr(Minio, "_upload_part", part_then_crash)
    monkeypatch.setattr(storage, "_sleep", restart_between_attempts)

    seen, done = [], threading.Event()

    def watch_final_key():
        while not done.is_set():
            try:
                st = probe.stat_object(bucket, key)
                seen.append((st.size, st.metadata.get("x-amz-meta-sha256")))
            except (S3Error, urllib3.exceptions.HTTPError):
                pass  # not there yet, or the server is down
            time.sleep(0.005)

    watcher = threading.Thread(target=watch_final_key, daemon=True)
    watcher.start()
    try:
        storage.upload(src, s3_env.uri(key))
        time.sleep(0.05)
    finally:
        done.set()
        watcher.join()

    assert at_crash["names"] == []  # mid-upload: no object at all, final key included (the multipart is pending)
    assert parts == [1, 1, 2, 3]  # one part, the crash, then a full upload from scratch
    assert seen and all(s == (size, sha) for s in seen)
    assert storage.download(s3_env.uri(key), tmp_path / "back.bin").read_bytes() == src.read_bytes()
    assert [o.object_name for o in admin.list_objects(bucket, recursive=True)] == [key]


def test_server_down_beyond_the_retry_budget(s3_env, tmp_path):
    src = _random_file(tmp_path / "weights.pdparams", 2048)
    before = src.read_bytes()
    s3_env.server.stop()
    try:
        t0 = time.monotonic()
        with pytest.raises(StorageError) as up:
            storage.upload(src, s3_env.uri("zoo/weights.pdparams"))
        with pytest.raises(StorageError) as down:
            storage.download(s3_env.uri("zoo/weights.pdparams"), tmp_path / "got.bin")
        assert time.monotonic() - t0 < 10
    finally:
        s3_env.server.start()
    endpoint = s3_env.server.url
    msg = str(up.value)
    assert endpoint in msg and "zoo/weights.pdparams" in msg and "after 3 attempt(s)" in msg
    assert f"local copy {src} is kept" in msg
    assert src.read_bytes() == before
    assert endpoint in str(down.value) and "zoo/weights.pdparams" in str(down.value)
    assert not (tmp_path / "got.bin").exists()


def test_missing_object_and_bucket(s3_env, tmp_path):
    with pytest.raises(StorageError, match="NoSuchKey"):
        storage.download(s3_env.uri("nope.bin"), tmp_path / "x")
    src = _random_file(tmp_path / "a.bin", 10)
    with pytest.raises(StorageError, match="NoSuchBucket.*create the bucket"):
        storage.upload(src, "s3://no-such-bucket-here/a.bin")


def test_content_cache(root, tmp_path, http_requests):
    src = _random_file(tmp_path / "flowers.tgz", 300_000)
    sha = file_digest(src)
    uri = storage.cache_put(src, storage.join(root, "cache"))
    assert uri == storage.join(root, "cache", "sha256", sha)
    before = len(http_requests)
    local = None if uri.startswith("s3://") else storage._parse(uri)
    local_mtime = local.stat().st_mtime_ns if local else None
    assert storage.cache_put(src, storage.join(root, "cache")) == uri
    writes = [m for m, _ in http_requests[before:] if m in ("PUT", "POST")]
    assert writes == []  # a hit: no second upload
    if local:
        assert local.stat().st_mtime_ns == local_mtime

    got = storage.cache_get(sha, storage.join(root, "cache"), tmp_path / "node" / "flowers.tgz")
    assert got.read_bytes() == src.read_bytes()
    before = len(http_requests)
    assert storage.cache_get(sha, storage.join(root, "cache"), got) == got  # already on this machine
    assert http_requests[before:] == []
    assert storage.cache_get("0" * 64, storage.join(root, "cache"), tmp_path / "other") is None
    with pytest.raises(StorageError, match="not a sha256"):
        storage.cache_get("abc", storage.join(root, "cache"), tmp_path / "other")


def test_fetch_through_s3(s3_env, tmp_path):
    src = _random_file(tmp_path / "102flowers.tgz", 50_000)
    uri = storage.upload(src, s3_env.uri("mirror/102flowers.tgz"))
    dest = fetch(uri, tmp_path / "dl" / "102flowers.tgz", Checksum("sha256", file_digest(src)))
    assert dest.read_bytes() == src.read_bytes()
    assert not (tmp_path / "dl" / "102flowers.tgz.part").exists()
    with pytest.raises(ClasflowError, match="NoSuchKey"):
        fetch(s3_env.uri("mirror/missing.tgz"), tmp_path / "dl" / "missing.tgz")


def test_credentials_never_leak(s3_env, tmp_path, monkeypatch, caplog):
    access, secret = "AKIAPLANTEDACCESSKEY", "planted/Secret+0123456789"  # "/" and "+", as AWS secret keys have
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    caplog.set_level(logging.DEBUG)
    texts = [repr(storage.S3Config.from_env()), str(storage.S3Config.from_env())]

    src = _random_file(tmp_path / "a.bin", 100)
    storage.upload(src, s3_env.uri("a.bin"))  # moto takes any credentials
    errors = []
    with pytest.raises(StorageError) as e:
        storage.download(s3_env.uri("missing.bin"), tmp_path / "m")
    errors.append(e.value)
    s3_env.server.stop()
    try:
        with pytest.raises(StorageError) as e:
            storage.upload(src, s3_env.uri("b.bin"))
        errors.append(e.value)
    finally:
        s3_env.server.start()
    monkeypatch.setenv("CLASFLOW_S3_ENDPOINT", f"http://{access}:{secret}@127.0.0.1:9")
    with pytest.raises(StorageError) as e:
        storage.exists("s3://bucket/key")
    errors.append(e.value)

    for exc in errors:
        while exc is not None:  # the error and everything chained to it
            texts += [str(exc), repr(exc)]
            exc = exc.__cause__ or exc.__context__
    texts.append(caplog.text)
    assert "***" in texts[0] and "uploaded" in caplog.text
    for text in texts:
        assert secret not in text and access not in text


def test_uris_and_config_errors(monkeypatch):
    assert storage.join("s3://b/", "x/", "y") == "s3://b/x/y"
    assert storage.join("/data/store", "x") == "/data/store/x"
    assert storage._parse("file:///tmp/a%20b") == storage.Path("/tmp/a b")
    with pytest.raises(StorageError, match="unsupported scheme"):
        storage.exists("gs://bucket/key")
    with pytest.raises(StorageError, match="needs a bucket"):
        storage.exists("s3:///key")
    for name in ("CLASFLOW_S3_ENDPOINT", "MINIO_ENDPOINT", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(StorageError, match="no S3 endpoint"):
        storage.exists("s3://bucket/key")
    cfg = storage.S3Config.from_env({"MINIO_ENDPOINT": "minio.kubeflow:9000", "CLASFLOW_S3_SECURE": "0"})
    assert cfg.endpoint == "http://minio.kubeflow:9000" and cfg.access_key is None
    cfg = storage.S3Config.from_env({"AWS_ENDPOINT_URL": "https://s3.example.com", "MINIO_ACCESS_KEY": "k", "MINIO_SECRET_KEY": "s"})
    assert cfg.secure and cfg.access_key == "k" and cfg.secret_key == "s"
    with pytest.raises(StorageError, match="CLASFLOW_S3_PART_SIZE"):
        storage.S3Config.from_env({"CLASFLOW_S3_ENDPOINT": "http://h:1", "CLASFLOW_S3_PART_SIZE": "1024"})
    with pytest.raises(StorageError, match="MINIO_SECRET_KEY"):
        storage.S3Config.from_env({"CLASFLOW_S3_ENDPOINT": "http://h:1", "MINIO_ACCESS_KEY": "k"})

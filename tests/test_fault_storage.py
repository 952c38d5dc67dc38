"""Storage faults beyond tests/test_storage.py, counted for the fault table.

test_storage.py already kills the S3 server once, right after the first part of a multipart
upload, and restarts it between two attempts (`test_interrupted_multipart_upload_is_atomic_and_retried`),
and keeps a server down beyond the retry budget (`test_server_down_beyond_the_retry_budget`); the
fault report counts both. Here the kill lands at seeded random points of the upload (after any
part, before the server-side copy onto the final key, before its verification), the server stays
down for one or two further attempts before it comes back, downloads are cut the same way, and a
folder upload meets a server that never comes back.
"""

from __future__ import annotations

import io
import os
import random
import threading
import time

import pytest
import urllib3
from minio import Minio
from minio.error import S3Error

from clasflow import storage
from clasflow.errors import StorageError
from clasflow.fsutil import file_digest

MiB = 1 << 20
SEED = 7
CRASH_POINTS = ("after part 1", "after part 2", "after part 3", "before the copy onto the final key",
                "before verifying the final key")


class _Outage:
    """Stops the S3 server at an armed point and brings it back after `down_attempts` failed attempts."""

    def __init__(self, s3_env, down_attempts: int, restore=None):
        self.env, self.down_attempts, self.restore = s3_env, down_attempts, restore
        self.admin = s3_env.client()
        self.armed, self.crashed, self.sleeps = True, False, 0
        self.checks: list[str] = []  # problems seen while the server was down

    def crash(self) -> None:
        if self.armed:
            self.armed, self.crashed = False, True
            self.env.server.stop()

    def sleep(self, delay: float) -> None:  # replaces storage._sleep: runs between attempts
        if self.env.server.proc is None:
            self.sleeps += 1
            if self.sleeps >= self.down_attempts:
                self.env.server.start()  # same port; moto forgot everything
                self.admin.make_bucket(self.env.bucket)
                if self.restore:
                    self.restore(self.admin)


def _watch(s3_env, key: str):
    """A thread that stats the final key every few ms; returns (seen list, stop function)."""
    probe, seen, done = s3_env.client(), [], threading.Event()

    def run():
        while not done.is_set():
            try:
                st = probe.stat_object(s3_env.bucket, key)
                seen.append((st.size, st.metadata.get("x-amz-meta-sha256")))
            except (S3Error, urllib3.exceptions.HTTPError):
                pass
            time.sleep(0.005)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def stop():
        time.sleep(0.05)
        done.set()
        thread.join()

    return seen, stop


@pytest.mark.timeout(300)
def test_upload_survives_kills_at_random_points(s3_env, tmp_path, monkeypatch, fault_record):
    monkeypatch.setenv("CLASFLOW_S3_PART_SIZE", str(5 * MiB))
    monkeypatch.setenv("CLASFLOW_S3_PARALLEL", "1")
    monkeypatch.setenv("CLASFLOW_S3_ATTEMPTS", "5")
    rng = random.Random(SEED)
    plan = [(point, rng.choice((1, 2))) for point in CRASH_POINTS]
    src = tmp_path / "best.pdparams"
    src.write_bytes(os.urandom(11 * MiB))
    size, sha = src.stat().st_size, file_digest(src)
    original_part, original_copy, original_verify = Minio._upload_part, Minio.copy_object, storage._S3._verify
    results = []
    for trial, (point, down) in enumerate(plan):
        key = f"models/{trial}/best.pdparams"
        outage = _Outage(s3_env, down)
        parts: list[int] = []

        def upload_part(self, *args, **kwargs):
            etag = original_part(self, *args, **kwargs)
            parts.append(args[5])
            if point == f"after part {args[5]}":
                outage.crash()
            return etag

        def copy_object(self, *args, **kwargs):
            if point.startswith("before the copy"):
                outage.crash()
            return original_copy(self, *args, **kwargs)

        def verify(self, obj, *args):
            if point.startswith("before verifying") and obj.key == key:
                outage.crash()
            return original_verify(self, obj, *args)

        monkeypatch.setattr(Minio, "_upload_part", upload_part)
        monkeypatch.setattr(Minio, "copy_object", copy_object)
        monkeypatch.setattr(storage._S3, "_verify", verify)
        monkeypatch.setattr(storage, "_sleep", outage.sleep)
        seen, stop = _watch(s3_env, key)
        problems = []
        try:
            storage.upload(src, s3_env.uri(key))
        except StorageError as exc:
            problems.append(f"upload failed: {exc}")
        finally:
            stop()
        if not outage.crashed:
            problems.append("the fault was never injected")
        if any(s != (size, sha) for s in seen):
            problems.append(f"a partial object was visible under the final key: {sorted(set(seen))}")
        if not problems:
            back = storage.download(s3_env.uri(key), tmp_path / f"back{trial}.bin")
            if file_digest(back) != sha:
                problems.append("the stored object differs from the file")
            names = [o.object_name for o in outage.admin.list_objects(s3_env.bucket, recursive=True)]
            if names != [key]:
                problems.append(f"objects left besides the final key: {names}")
        if file_digest(src) != sha:
            problems.append("the local file changed")
        results.append({"point": point, "down_attempts": down, "parts_sent": parts, "seen": len(seen), "problems": problems})

    survived = sum(1 for r in results if not r["problems"])
    fault_record("storage: S3 server killed at a random point of an upload, back after 1-2 failed attempts",
                 trials=len(results), survived=survived, data_lost=len(results) - survived,
                 note="kill points: " + "; ".join(f"{r['point']} (down {r['down_attempts']})" for r in results))
    assert all(not r["problems"] for r in results), results


@pytest.mark.timeout(300)
def test_download_survives_a_server_restart(s3_env, tmp_path, monkeypatch, fault_record):
    monkeypatch.setenv("CLASFLOW_S3_ATTEMPTS", "5")
    data = os.urandom(24 * MiB)  # more than the loopback socket buffers: a kill mid-body truncates it
    sha = storage.hashlib.sha256(data).hexdigest()
    key = "datasets/102flowers.tgz"
    s3_env.client().put_object(s3_env.bucket, key, io.BytesIO(data), len(data), metadata={"sha256": sha})
    original_get = Minio.get_object
    results = []
    plan = [("before the transfer", 1), ("mid-body", 1), ("mid-body", 2), ("before the transfer", 2)]
    for trial, (point, down) in enumerate(plan):
        dest = tmp_path / f"dl{trial}" / "102flowers.tgz"
        outage = _Outage(s3_env, down, restore=lambda admin: admin.put_object(
            s3_env.bucket, key, io.BytesIO(data), len(data), metadata={"sha256": sha}))

        def get_object(self, *args, **kwargs):
            if dest.exists():
                outage.checks.append("something under the final name before the transfer")
            if point == "before the transfer":
                outage.crash()  # between the stat and the GET
                return original_get(self, *args, **kwargs)
            resp = original_get(self, *args, **kwargs)
            outage.crash()  # the headers arrived, the body is on its way
            return resp

        monkeypatch.setattr(Minio, "get_object", get_object)
        monkeypatch.setattr(storage, "_sleep", outage.sleep)
        problems = []
        try:
            storage.download(s3_env.uri(key), dest, sha256=sha)
            if dest.read_bytes() != data:
                problems.append("downloaded bytes differ")
        except StorageError as exc:
            problems.append(f"download failed: {exc}")
        problems += outage.checks
        if not outage.crashed:
            problems.append("the fault was never injected")
        if sorted(p.name for p in dest.parent.iterdir()) != [dest.name]:
            problems.append(f"temporaries left: {sorted(p.name for p in dest.parent.iterdir())}")
        results.append({"point": point, "down_attempts": down, "problems": problems})
    survived = sum(1 for r in results if not r["problems"])
    fault_record("storage: S3 server killed during a download, back after 1-2 failed attempts", trials=len(results),
                 survived=survived, data_lost=len(results) - survived,
                 note="; ".join(f"{r['point']} (down {r['down_attempts']})" for r in results))
    assert all(not r["problems"] for r in results), results


@pytest.mark.timeout(120)
def test_folder_upload_meets_a_server_that_stays_down(s3_env, tmp_path, monkeypatch, fault_record):
    tree = tmp_path / "export"
    files = {rel: os.urandom(1000 + i) for i, rel in enumerate(("a/inference.json", "b/inference.pdiparams", "c/model.onnx"))}
    for rel, data in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)
    original_upload = storage._S3.upload
    uploads: list[str] = []

    def upload_then_die(self, src, obj, sha):
        original_upload(self, src, obj, sha)
        uploads.append(obj.key)
        if len(uploads) == 1:
            s3_env.server.stop()  # and it does not come back within the budget (3 attempts)

    monkeypatch.setattr(storage._S3, "upload", upload_then_die)
    t0 = time.monotonic()
    try:
        with pytest.raises(StorageError) as err:
            storage.upload_dir(tree, s3_env.uri("runs/r1/export"))
    finally:
        s3_env.server.start()
    elapsed = time.monotonic() - t0
    msg = str(err.value)
    endpoint_named = s3_env.server.url in msg and "runs/r1/export/b/inference.pdiparams" in msg
    kept = all((tree / rel).read_bytes() == data for rel, data in files.items())
    fault_record("storage: S3 server down beyond the retry budget during a folder upload", trials=1,
                 survived=int(endpoint_named and kept and "after 3 attempt(s)" in msg), data_lost=int(not kept),
                 note=f"gave up after {elapsed:.1f} s naming the endpoint and the key; local files kept")
    assert endpoint_named and "after 3 attempt(s)" in msg and "is kept" in msg, msg
    assert kept
    assert elapsed < 20

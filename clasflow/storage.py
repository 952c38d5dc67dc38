"""Artifacts in MinIO/S3 or in a local folder, behind one small interface addressed by URIs.

``s3://BUCKET/KEY`` goes to the endpoint named by the environment; ``file://`` URIs and plain
paths are local. The environment (never arguments, never logs):

- endpoint: ``CLASFLOW_S3_ENDPOINT``, else ``MINIO_ENDPOINT``, else ``AWS_ENDPOINT_URL``
  (``http://minio-service.kubeflow:9000``; a bare ``host:port`` means HTTPS unless
  ``CLASFLOW_S3_SECURE=0``);
- credentials: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (+ ``AWS_SESSION_TOKEN``), else
  ``MINIO_ACCESS_KEY``/``MINIO_SECRET_KEY``, else anonymous; region: ``CLASFLOW_S3_REGION``,
  ``AWS_REGION`` or ``AWS_DEFAULT_REGION``;
- tuning: ``CLASFLOW_S3_ATTEMPTS`` (5), ``CLASFLOW_S3_BACKOFF`` (1.0 s, doubling),
  ``CLASFLOW_S3_PART_SIZE`` (64 MiB, at least 5 MiB), ``CLASFLOW_S3_PARALLEL`` (3 part uploads
  at once), ``CLASFLOW_S3_TIMEOUT`` (60 s).

Guarantees:

- Nothing partial is ever visible under a final name. An upload goes to a temporary key under
  ``.clasflow-tmp/`` (multipart above the part size), is verified (size, and the sha256 of the
  bytes read from the local file against the one recorded as ``x-amz-meta-sha256``), copied
  server-side onto the final key (a multipart copy above 5 GiB) and the temporary key removed.
  A killed process can leave a temporary key or an incomplete multipart upload behind, never a
  partial final object; a bucket lifecycle rule on ``.clasflow-tmp/`` cleans them up.
- A download lands in a temporary file, is verified against the object's size and recorded
  sha256, then renamed. Local copies are atomic the same way (clasflow.fsutil).
- Connection errors, timeouts and 5xx answers are retried with exponential backoff; an upload
  restarts from scratch each time. When the budget is spent a StorageError names the endpoint
  and the key; local files are never deleted.
- ``cache_put``/``cache_get`` address content by its sha256 (``ROOT/sha256/<hex>``), so a
  dataset or a weight file is uploaded once and each machine downloads it once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import time
import urllib.parse
import uuid
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping, TypeVar

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import REPLACE, ComposeSource, CopySource
from minio.error import InvalidResponseError, S3Error, ServerError

from clasflow.errors import StorageError
from clasflow.fsutil import atomic_write, file_digest

log = logging.getLogger(__name__)

TMP_PREFIX = ".clasflow-tmp/"
SHA256_META = "x-amz-meta-sha256"
MIN_PART_SIZE = 5 << 20
MAX_PARTS = 10_000
MAX_COPY_SIZE = 5 << 30  # the largest single-request server-side copy; above it, compose
CHUNK = 1 << 20
ENDPOINT_VARS = ("CLASFLOW_S3_ENDPOINT", "MINIO_ENDPOINT", "AWS_ENDPOINT_URL")
_TRANSIENT_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "NoSuchUpload", "PreconditionFailed"}
_SECRET_FIELDS = ("access_key", "secret_key", "session_token")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_sleep = time.sleep  # the wait between attempts; tests replace it to act between attempts

T = TypeVar("T")


@dataclass(frozen=True)
class S3Config:
    """Where and how to reach S3/MinIO. Its repr and str mask the credentials."""

    endpoint: str  # scheme://host[:port], as messages show it
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    region: str | None = None
    attempts: int = 5
    backoff: float = 1.0
    part_size: int = 64 << 20
    parallel: int = 3
    timeout: float = 60.0

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in _SECRET_FIELDS:
            if shown[name] is not None:
                shown[name] = "***"
        return "S3Config(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    __str__ = __repr__

    @property
    def secure(self) -> bool:
        return self.endpoint.startswith("https://")

    @property
    def host(self) -> str:
        return self.endpoint.split("://", 1)[1]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "S3Config":
        env = os.environ if env is None else env
        name = next((n for n in ENDPOINT_VARS if env.get(n)), None)
        if name is None:
            raise StorageError(
                "no S3 endpoint configured: set CLASFLOW_S3_ENDPOINT (or MINIO_ENDPOINT / AWS_ENDPOINT_URL), "
                "e.g. http://minio-service.kubeflow:9000"
            )
        raw = env[name].strip()
        parsed = urllib.parse.urlsplit(raw if "://" in raw else "//" + raw)
        if "@" in raw:  # checked before the value appears in any message (a secret may hold "/": not in netloc then)
            raise StorageError(f"{name} must not carry credentials; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY instead")
        try:
            parsed.port
        except ValueError:
            raise StorageError(f"{name}={raw!r} has an invalid port") from None
        if parsed.scheme not in ("", "http", "https") or not parsed.hostname or parsed.path not in ("", "/") or parsed.query:
            raise StorageError(f"{name}={raw!r} is not an endpoint: expected [http(s)://]HOST[:PORT]")
        secure = parsed.scheme != "http"
        if env.get("CLASFLOW_S3_SECURE"):
            secure = _flag(env, "CLASFLOW_S3_SECURE")
        if env.get("AWS_ACCESS_KEY_ID"):
            key_vars, token = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), env.get("AWS_SESSION_TOKEN") or None
        elif env.get("MINIO_ACCESS_KEY"):
            key_vars, token = ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"), None
        else:
            key_vars, token = None, None
        access = secret = None
        if key_vars:
            access, secret = env[key_vars[0]], env.get(key_vars[1])
            if not secret:
                raise StorageError(f"{key_vars[0]} is set but {key_vars[1]} is not; set both or neither")
        return cls(
            endpoint=f"{'https' if secure else 'http'}://{parsed.netloc}",
            access_key=access,
            secret_key=secret,
            session_token=token,
            region=env.get("CLASFLOW_S3_REGION") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            attempts=_number(env, "CLASFLOW_S3_ATTEMPTS", cls.attempts, int, 1),
            backoff=_number(env, "CLASFLOW_S3_BACKOFF", cls.backoff, float, 0.0),
            part_size=_number(env, "CLASFLOW_S3_PART_SIZE", cls.part_size, int, MIN_PART_SIZE),
            parallel=_number(env, "CLASFLOW_S3_PARALLEL", cls.parallel, int, 1),
            timeout=_number(env, "CLASFLOW_S3_TIMEOUT", cls.timeout, float, 0.1),
        )


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env[name].strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise StorageError(f"{name}={env[name]!r}: expected 1/0, true/false, yes/no or on/off")


def _number(env: Mapping[str, str], name: str, default, kind, minimum):
    if not env.get(name):
        return default
    try:
        value = kind(env[name])
    except ValueError:
        raise StorageError(f"{name}={env[name]!r} is not a{'n integer' if kind is int else ' number'}") from None
    if value < minimum:
        raise StorageError(f"{name}={env[name]!r} is below the minimum {minimum}")
    return value


# ---------------------------------------------------------------------------------------- URIs


@dataclass(frozen=True)
class _Obj:
    """An ``s3://bucket/key`` location."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def _parse(uri: str | os.PathLike) -> _Obj | Path:
    text = os.fspath(uri)
    if text.startswith("s3://"):
        bucket, _, key = text[5:].partition("/")
        if not bucket:
            raise StorageError(f"{text}: an s3:// URI needs a bucket, as in s3://BUCKET/KEY")
        return _Obj(bucket, key)
    if text.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(text).path))
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", text):
        raise StorageError(f"{text}: unsupported scheme; use s3://, file:// or a local path")
    return Path(text)


def join(uri: str | os.PathLike, *parts: str) -> str:
    """``join("s3://b/runs", "x", "model.pdparams") == "s3://b/runs/x/model.pdparams"``; paths likewise."""
    base = os.fspath(uri)
    if "://" in base:
        return "/".join([base.rstrip("/")] + [p.strip("/") for p in parts])
    return str(Path(base, *parts))


def run_prefix(base_uri: str | os.PathLike, run_id: str) -> str:
    """Where one run's artifacts live: ``BASE/runs/RUN_ID/`` (the trailing slash keeps ``list`` to this run)."""
    if not _RUN_ID.fullmatch(str(run_id)):
        raise StorageError(
            f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-' (at most 128, starting with a "
            f"letter or digit), e.g. the Kubeflow run id"
        )
    prefix = join(base_uri, "runs", run_id)
    return prefix + ("/" if "://" in prefix else os.sep)


# ------------------------------------------------------------------------------------- retries


class _Transient(Exception):
    """A failure worth another attempt, e.g. an object that did not verify right after its upload."""


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (_Transient, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, S3Error):
        status = getattr(exc.response, "status", 0) or 0
        return exc.code in _TRANSIENT_CODES or status >= 500 or status == 429
    if isinstance(exc, ServerError):
        return exc.status_code >= 500 or exc.status_code == 429
    if isinstance(exc, InvalidResponseError):
        status = getattr(exc, "_code", 0) or 0
        return status >= 500 or status == 429
    return False


def _describe(exc: BaseException) -> str:
    if isinstance(exc, S3Error):
        return f"{exc.code}: {exc.message}"
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


def _hint(exc: S3Error) -> str:
    if exc.code == "NoSuchBucket":
        return "; create the bucket or fix the URI"
    if exc.code in ("NoSuchKey", "NoSuchObject"):
        return "; no such object"
    if exc.code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return (
            "; check the credentials in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or MINIO_ACCESS_KEY/"
            "MINIO_SECRET_KEY) and the bucket policy"
        )
    return ""


def _with_retries(cfg: S3Config, fn: Callable[[], T], *, action: str, note: str = "") -> T:
    """Run `fn`, retrying transient failures with exponential backoff within `cfg.attempts`."""
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as exc:
            if not _is_transient(exc):
                if isinstance(exc, S3Error):
                    raise StorageError(f"{action} failed: {_describe(exc)}{_hint(exc)}.{note}") from exc
                raise
            if attempt >= cfg.attempts:
                raise StorageError(
                    f"{action} failed after {attempt} attempt(s), last error {_describe(exc)}.{note} "
                    f"Check that the endpoint is up and reachable, then run again."
                ) from exc
            delay = cfg.backoff * 2 ** (attempt - 1)
            log.warning("%s failed (%s); attempt %d/%d, retrying in %gs", action, _describe(exc), attempt, cfg.attempts, delay)
            _sleep(delay)
            attempt += 1


# ------------------------------------------------------------------------------------------ S3


class _HashingReader:
    """A file wrapper that hashes exactly the bytes the uploader reads."""

    def __init__(self, fh):
        self._fh = fh
        self._sha = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        self._sha.update(data)
        return data

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


class _S3:
    """One client for one operation (or one directory), with the retry budget of `cfg`."""

    def __init__(self, cfg: S3Config | None = None):
        self.cfg = cfg or S3Config.from_env()
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(self.cfg.timeout, 10.0), read=self.cfg.timeout),
            retries=False,  # one retry layer, ours, with its budget
            maxsize=self.cfg.parallel + 2,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        )
        self.client = Minio(
            self.cfg.host,
            access_key=self.cfg.access_key,
            secret_key=self.cfg.secret_key,
            session_token=self.cfg.session_token,
            secure=self.cfg.secure,
            region=self.cfg.region,
            http_client=http,
        )

    def _at(self, obj: _Obj) -> str:
        return f"{obj} at {self.cfg.endpoint}"

    def upload(self, src: Path, obj: _Obj, sha: str) -> None:
        size = src.stat().st_size
        part_size = max(self.cfg.part_size, -(-size // MAX_PARTS))
        meta = {"sha256": sha}

        def attempt() -> None:
            tmp = f"{TMP_PREFIX}{obj.key}.upload-{uuid.uuid4().hex}"
            try:
                with open(src, "rb") as fh:
                    reader = _HashingReader(fh)
                    self.client.put_object(
                        obj.bucket, tmp, reader, size, metadata=meta, part_size=part_size,
                        num_parallel_uploads=self.cfg.parallel,
                    )
                if reader.hexdigest() != sha:
                    raise StorageError(f"{src} changed while it was uploaded to {self._at(obj)}; upload it again once it is complete")
                self._verify(_Obj(obj.bucket, tmp), size, sha)
                if size > MAX_COPY_SIZE:
                    self.client.compose_object(obj.bucket, obj.key, [ComposeSource(obj.bucket, tmp)], metadata=meta)
                else:
                    self.client.copy_object(obj.bucket, obj.key, CopySource(obj.bucket, tmp), metadata=meta, metadata_directive=REPLACE)
                self._verify(obj, size, sha)
            finally:
                with contextlib.suppress(Exception):  # best effort: the server may be the reason we are here
                    self.client.remove_object(obj.bucket, tmp)

        _with_retries(self.cfg, attempt, action=f"upload of {src} to {self._at(obj)}", note=f" The local copy {src} is kept.")
        log.info("uploaded %s to %s (%d bytes, sha256 %s)", src, self._at(obj), size, sha)

    def _verify(self, obj: _Obj, size: int, sha: str) -> None:
        st = self.client.stat_object(obj.bucket, obj.key)
        recorded = (st.metadata or {}).get(SHA256_META)
        if st.size != size or recorded != sha:
            raise _Transient(f"{obj} did not verify: {st.size} bytes, sha256 {recorded}; expected {size} bytes, sha256 {sha}")

    def download(self, obj: _Obj, dest: Path, want: str | None) -> None:
        def attempt() -> None:
            st = self.client.stat_object(obj.bucket, obj.key)
            recorded = (st.metadata or {}).get(SHA256_META)
            etag = st.etag if (st.etag or "").startswith('"') else f'"{st.etag}"'
            sha, received = hashlib.sha256(), 0
            with atomic_write(dest) as fh:
                resp = self.client.get_object(obj.bucket, obj.key, request_headers={"If-Match": etag})
                try:
                    for chunk in resp.stream(CHUNK):
                        fh.write(chunk)
                        sha.update(chunk)
                        received += len(chunk)
                finally:
                    resp.close()
                    resp.release_conn()
                if received != st.size:
                    raise _Transient(f"truncated transfer: {received} of {st.size} bytes")
                digest = sha.hexdigest()
                for expected, what in ((recorded, "the sha256 recorded with it"), (want, "the expected sha256")):
                    if expected and digest != expected.lower():
                        raise StorageError(
                            f"{self._at(obj)} does not match {what}: expected {expected}, got {digest}. The object "
                            f"was changed outside clasflow or is corrupt; {dest} was left untouched. Upload it again."
                        )

        _with_retries(self.cfg, attempt, action=f"download of {self._at(obj)} to {dest}")
        log.info("downloaded %s to %s", self._at(obj), dest)

    def stat(self, obj: _Obj):
        """The object's stat, or None when there is no such object."""

        def attempt():
            try:
                return self.client.stat_object(obj.bucket, obj.key)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject"):
                    return None
                raise

        return _with_retries(self.cfg, attempt, action=f"lookup of {self._at(obj)}")

    def keys(self, bucket: str, prefix: str) -> list[str]:
        def attempt():
            listing = self.client.list_objects(bucket, prefix=prefix or None, recursive=True)
            return sorted(o.object_name for o in listing if not o.is_dir and not o.object_name.startswith(TMP_PREFIX))

        return _with_retries(self.cfg, attempt, action=f"listing of s3://{bucket}/{prefix} at {self.cfg.endpoint}")

    def remove(self, obj: _Obj) -> None:
        _with_retries(self.cfg, lambda: self.client.remove_object(obj.bucket, obj.key), action=f"removal of {self._at(obj)}")


# --------------------------------------------------------------------------------------- local


def _copy_local(src: Path, dest: Path, want: str | None = None) -> None:
    if not src.is_file():
        raise StorageError(f"{src}: no such file")
    sha = hashlib.sha256()
    with open(src, "rb") as fin, atomic_write(dest) as fout:
        for chunk in iter(lambda: fin.read(CHUNK), b""):
            fout.write(chunk)
            sha.update(chunk)
        if want and sha.hexdigest() != want.lower():
            raise StorageError(f"{src} does not match the expected sha256 {want} (got {sha.hexdigest()}); {dest} was left untouched")


def _local_files(root: Path) -> list[Path]:
    """Regular files under `root`, without fsutil's in-progress temporaries."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not (p.name.startswith(".") and p.name.endswith(".tmp")))


# ---------------------------------------------------------------------------------- public API


def upload(local_path: str | os.PathLike, uri: str | os.PathLike) -> str:
    """Copy a local file to `uri` atomically and verified; returns the URI."""
    src = Path(local_path)
    if not src.is_file():
        raise StorageError(f"cannot upload {src}: no such file")
    dest = _parse(uri)
    if isinstance(dest, Path):
        _copy_local(src, dest)
    else:
        _S3().upload(src, dest, file_digest(src))
    return os.fspath(uri)


def download(uri: str | os.PathLike, local_path: str | os.PathLike, *, sha256: str | None = None) -> Path:
    """Copy `uri` to `local_path` atomically, verified by size, recorded sha256 and `sha256` if given."""
    src, dest = _parse(uri), Path(local_path)
    if isinstance(src, Path):
        _copy_local(src, dest, want=sha256)
    else:
        _S3().download(src, dest, sha256)
    return dest


def exists(uri: str | os.PathLike) -> bool:
    """Whether a file or object (not a folder or prefix) is stored at `uri`."""
    loc = _parse(uri)
    if isinstance(loc, Path):
        return loc.is_file()
    return _S3().stat(loc) is not None


def list(uri_prefix: str | os.PathLike) -> list[str]:  # noqa: A001 (storage.list reads well)
    """URIs of the files or objects under `uri_prefix`, sorted.

    As in S3, ``.../run-4`` also matches ``.../run-42/x``; a trailing slash means the folder only.
    """
    loc, text = _parse(uri_prefix), os.fspath(uri_prefix)
    if isinstance(loc, Path):
        if loc.is_dir():
            found = _local_files(loc)
        elif text.endswith(("/", os.sep)) or not loc.parent.is_dir():
            found = []
        else:
            found = [p for p in _local_files(loc.parent) if str(p).startswith(str(loc))]
        return [f"file://{p.absolute()}" if text.startswith("file://") else str(p) for p in found]
    return [str(_Obj(loc.bucket, key)) for key in _S3().keys(loc.bucket, loc.key)]


def remove(uri: str | os.PathLike) -> int:
    """Delete the file or object at `uri`, or everything under the folder `uri` (ending in a
    slash); returns how many were deleted (0 when nothing was there)."""
    loc, text = _parse(uri), os.fspath(uri)
    if isinstance(loc, Path):
        if loc.is_dir():
            count = len(_local_files(loc))
            shutil.rmtree(loc)
            return count
        if loc.is_file():
            loc.unlink()
            return 1
        return 0
    s3 = _S3()
    keys = s3.keys(loc.bucket, loc.key) if text.endswith("/") else ([loc.key] if s3.stat(loc) is not None else [])
    for key in keys:
        s3.remove(_Obj(loc.bucket, key))
    return len(keys)


def upload_dir(local_dir: str | os.PathLike, uri_prefix: str | os.PathLike) -> list[str]:
    """Upload every file under `local_dir` to `uri_prefix/<relative path>`; returns the URIs."""
    root = Path(local_dir)
    if not root.is_dir():
        raise StorageError(f"cannot upload {root}: not a folder")
    files = _local_files(root)
    dest = _parse(uri_prefix)
    s3 = None if isinstance(dest, Path) else _S3()
    uris = []
    for f in files:
        uri = join(uri_prefix, f.relative_to(root).as_posix())
        if s3 is None:
            _copy_local(f, _parse(uri))
        else:
            s3.upload(f, _parse(uri), file_digest(f))
        uris.append(uri)
    return uris


def download_dir(uri_prefix: str | os.PathLike, local_dir: str | os.PathLike) -> list[Path]:
    """Download everything under the folder `uri_prefix` into `local_dir`; returns the local paths."""
    src, root = _parse(uri_prefix), Path(local_dir)
    out = []
    if isinstance(src, Path):
        if not src.is_dir():
            raise StorageError(f"cannot download {src}: not a folder")
        for f in _local_files(src):
            dest = root / f.relative_to(src)
            _copy_local(f, dest)
            out.append(dest)
    else:
        s3 = _S3()
        prefix = src.key if not src.key or src.key.endswith("/") else src.key + "/"
        for key in s3.keys(src.bucket, prefix):
            rel = PurePosixPath(key[len(prefix):])
            if rel.is_absolute() or any(part in ("", ".", "..") for part in key[len(prefix):].split("/")):
                raise StorageError(f"refusing s3://{src.bucket}/{key} at {s3.cfg.endpoint}: its name would leave {root}")
            dest = root.joinpath(*rel.parts)
            s3.download(_Obj(src.bucket, key), dest, None)
            out.append(dest)
    if not out:
        raise StorageError(f"nothing to download under {uri_prefix}")
    return out


def cache_put(local_path: str | os.PathLike, cache_root_uri: str | os.PathLike) -> str:
    """Store a file under ``ROOT/sha256/<its sha256>`` unless already there; returns that URI."""
    src = Path(local_path)
    if not src.is_file():
        raise StorageError(f"cannot cache {src}: no such file")
    sha, size = file_digest(src), src.stat().st_size
    uri = join(cache_root_uri, "sha256", sha)
    loc = _parse(uri)
    if isinstance(loc, Path):
        hit = loc.is_file() and loc.stat().st_size == size
        if not hit:
            _copy_local(src, loc, want=sha)
    else:
        s3 = _S3()
        st = s3.stat(loc)
        hit = st is not None and st.size == size and (st.metadata or {}).get(SHA256_META) == sha
        if not hit:
            s3.upload(src, loc, sha)
    log.info("cache %s: %s is %s", "hit" if hit else "store", src, uri)
    return uri


def cache_get(sha256: str, cache_root_uri: str | os.PathLike, local_path: str | os.PathLike) -> Path | None:
    """Bring the cached content with this sha256 to `local_path`; None when the cache lacks it.

    A `local_path` that already holds that content is kept as it is (no transfer).
    """
    sha = sha256.lower()
    if not _SHA256.fullmatch(sha):
        raise StorageError(f"{sha256!r} is not a sha256 hex digest")
    dest = Path(local_path)
    if dest.is_file() and file_digest(dest) == sha:
        return dest
    uri = join(cache_root_uri, "sha256", sha)
    if not exists(uri):
        log.info("cache miss: %s", uri)
        return None
    return download(uri, dest, sha256=sha)

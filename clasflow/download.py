"""Robust file download: resume, retries with backoff, checksum verification, atomic rename.

Used by the dataset stage (flowers102) and the pretrained-weight zoo. Sources may be
``http(s)://``, ``file://`` or a plain local path; ``s3://`` goes through ``clasflow.storage``.
Nothing unverified ever appears under the final name: bytes go to ``DEST.part`` (kept between
attempts so a later call resumes) and are renamed only after the checksum matched.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import requests
from tqdm import tqdm

from clasflow.errors import DownloadError
from clasflow.fsutil import file_digest

log = logging.getLogger(__name__)

CHUNK = 1 << 16
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Checksum:
    """An expected digest, e.g. ``Checksum("md5", "5280...")``."""

    algorithm: str
    hexdigest: str

    def matches(self, path: Path) -> bool:
        return file_digest(path, self.algorithm) == self.hexdigest.lower()


class _Retry(Exception):
    """A transient failure worth another attempt."""


def fetch(
    url: str,
    dest: str | os.PathLike,
    checksum: Checksum | None = None,
    *,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 30.0,
    binary: bool = True,
    progress: bool | None = None,
) -> Path:
    """Download `url` to `dest` and return `dest`.

    - Skips the transfer when `dest` exists and matches `checksum`.
    - Resumes a partial ``dest.part`` with an HTTP Range request.
    - Retries connection errors, timeouts, truncated bodies and 5xx/429 answers with
      exponential backoff (`backoff`, 2x`backoff`, ...), at most `retries` extra attempts.
    - Refuses an HTML page when `binary` is set, a 4xx answer, or a checksum mismatch
      (the bad bytes are deleted so no later run trusts them).
    """
    dest = Path(dest)
    if dest.exists():
        if checksum is None or checksum.matches(dest):
            log.info("%s already present%s", dest, " and verified" if checksum else "")
            return dest
        log.warning("%s exists but its %s does not match; downloading again", dest, checksum.algorithm)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if checksum is None:  # nothing could tell stale bytes of an earlier run from good ones
        part.unlink(missing_ok=True)
    scheme = urllib.parse.urlparse(url).scheme
    if progress is None:
        progress = sys.stderr.isatty()

    attempt = 0
    while True:
        try:
            if scheme in ("http", "https"):
                _http_to_part(url, part, timeout=timeout, binary=binary, progress=progress)
            elif scheme == "s3":
                from clasflow import storage  # imported lazily: only s3 mirrors need it

                storage.download(url, part)
            else:
                _copy_to_part(url, part)
            break
        except _Retry as exc:
            attempt += 1
            if attempt > retries:
                raise DownloadError(
                    f"giving up on {url} after {retries + 1} attempts: {exc}. The partial file "
                    f"{part} is kept; run again to resume."
                ) from None
            wait = backoff * 2 ** (attempt - 1)
            log.warning("download of %s failed (%s); retry %d/%d in %.1fs", url, exc, attempt, retries, wait)
            time.sleep(wait)

    if checksum is not None and not checksum.matches(part):
        got = file_digest(part, checksum.algorithm)
        part.unlink()
        raise DownloadError(
            f"checksum mismatch for {url}: expected {checksum.algorithm} {checksum.hexdigest}, "
            f"got {got}. The file was deleted. If the source moved or is a mirror with other "
            f"content, point the checksums at it; otherwise try again later."
        )
    os.replace(part, dest)
    return dest


def _copy_to_part(url: str, part: Path) -> None:
    parsed = urllib.parse.urlparse(url)
    src = Path(urllib.parse.unquote(parsed.path)) if parsed.scheme == "file" else Path(url)
    if not src.is_file():
        raise DownloadError(f"source file not found: {src} (from {url})")
    shutil.copyfile(src, part)


def _http_to_part(url: str, part: Path, *, timeout: float, binary: bool, progress: bool) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        resp = requests.get(url, headers=headers, stream=True, timeout=timeout)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _Retry(f"cannot reach {url}: {exc.__class__.__name__}") from None
    with resp:
        if resp.status_code == 416 and have:  # past the end: complete only if the sizes agree
            total = resp.headers.get("Content-Range", "").rpartition("/")[2]
            if total.isdigit() and int(total) == have:
                return
            part.unlink()
            raise _Retry(f"partial file {part.name} does not fit the server's size ({total or 'unknown'}); starting over")
        if resp.status_code in RETRYABLE_STATUS:
            raise _Retry(f"HTTP {resp.status_code} from {url}")
        if resp.status_code >= 400:
            raise DownloadError(f"HTTP {resp.status_code} {resp.reason} for {url}; check the URL or mirror")
        ctype = resp.headers.get("Content-Type", "")
        if binary and ctype.startswith("text/html"):
            raise DownloadError(
                f"{url} returned an HTML page (Content-Type {ctype!r}) instead of the file: "
                f"the URL probably moved or needs a login; use a mirror (--url-base)"
            )
        if resp.status_code == 206:
            mode, start = "ab", have
        else:
            mode, start = "wb", 0
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        received = start
        bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=part.name[:-5], disable=not progress)
        try:
            with open(part, mode) as fh:
                for chunk in resp.iter_content(CHUNK):
                    fh.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise _Retry(f"transfer interrupted after {received} bytes ({exc.__class__.__name__})") from None
        finally:
            bar.close()
        if total is not None and received < total:
            raise _Retry(f"truncated transfer: {received} of {total} bytes")


"""The pretrained-weight zoo and the download stage (the seed's ``tools/download.py``).

Every architecture of the seed's model list is in ``zoo_models.tsv`` with its v1 ``.tar``
URL and, where one exists, the 2.x ``.pdparams`` URL. Downloads resume, retry, verify a
pinned sha256 (or the one recorded in ``zoo.lock.json`` beside the weights on first
download), extract safely and write atomically. ``--url-base`` / ``CLASFLOW_ZOO_URL`` points
at a mirror (HTTP, ``file://`` or ``s3://``) holding the same file names; a mirror may carry
``ZOO_MIRROR.json`` with its own sha256 pins, and says there when its weights are demo weights
(``clasflow.demo_zoo``: pretrained offline on a generated task); the lock file and the log say so too.
"""

from __future__ import annotations

import csv
import difflib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from clasflow.archive import safe_extract
from clasflow.download import Checksum, fetch
from clasflow.errors import ClasflowError, DownloadError
from clasflow.fsutil import file_digest, write_text_atomic

log = logging.getLogger(__name__)

LOCK_FILE = "zoo.lock.json"
MIRROR_MANIFEST = "ZOO_MIRROR.json"
ZOO_URL_ENV = "CLASFLOW_ZOO_URL"
# The architectures the quick start downloads (and the demo zoo provides).
QUICKSTART_ARCHS = ("ResNet50_vd", "ResNet50_vd_ssld", "MobileNetV3_large_x1_0")


@dataclass(frozen=True)
class ZooEntry:
    name: str
    v1_tar: str
    v2_pdparams: str
    sha256: str

    def url(self, fmt: str) -> str:
        return self.v2_pdparams if fmt == "pdparams" else self.v1_tar


def registry() -> dict[str, ZooEntry]:
    text = resources.files("clasflow").joinpath("zoo_models.tsv").read_text(encoding="utf-8")
    rows = csv.DictReader((line for line in text.splitlines() if not line.startswith("#")), delimiter="\t")
    return {r["name"]: ZooEntry(r["name"], r["v1_tar"], r["v2_pdparams"], r["sha256"]) for r in rows}


def lookup(arch: str) -> ZooEntry:
    zoo = registry()
    if arch not in zoo:
        close = difflib.get_close_matches(arch, list(zoo), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; run `clasflow zoo list` for every name"
        raise ClasflowError(f"unknown architecture {arch!r} in the zoo{hint}")
    return zoo[arch]


@dataclass
class DownloadResult:
    arch: str
    path: str  # the file, or the extracted folder
    sha256: str
    source: str
    demo: bool


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError as exc:
        raise ClasflowError(f"{path} is not valid JSON ({exc}); delete it to record checksums anew") from None


def _mirror_manifest(base: str, dest_dir: Path) -> dict:
    local = dest_dir / f".{MIRROR_MANIFEST}"
    local.unlink(missing_ok=True)
    try:
        fetch(f"{base.rstrip('/')}/{MIRROR_MANIFEST}", local, binary=False, retries=1, backoff=0.5)
    except DownloadError:
        return {}
    try:
        return _read_json(local)
    finally:
        local.unlink(missing_ok=True)


def download_weights(
    arch: str,
    path: str | os.PathLike,
    *,
    decompress: bool = False,
    fmt: str = "auto",
    url_base: str | None = None,
    trust: bool = False,
    retries: int = 4,
) -> DownloadResult:
    """Fetch the pretrained weights of `arch` into folder `path`.

    `fmt`: ``pdparams`` (2.x, loads by key), ``tar`` (the seed's v1 archive) or ``auto``
    (pdparams where it exists). A file whose sha256 differs from the pin or the lock file is
    refused unless `trust` is set.
    """
    entry = lookup(arch)
    if fmt == "auto":
        fmt = "pdparams" if entry.v2_pdparams else "tar"
    if fmt not in ("pdparams", "tar"):
        raise ClasflowError(f"--format must be auto, pdparams or tar, got {fmt!r}")
    official = entry.url(fmt)
    if not official:
        raise ClasflowError(f"{arch} has no {fmt} weights in the zoo; use --format tar")
    dest_dir = Path(path)
    dest_dir.mkdir(parents=True, exist_ok=True)
    filename = official.rsplit("/", 1)[1]
    base = url_base or os.environ.get(ZOO_URL_ENV)
    manifest = _mirror_manifest(base, dest_dir) if base else {}
    url = f"{base.rstrip('/')}/{filename}" if base else official
    demo = bool(manifest.get("demo"))

    lock_path = dest_dir / LOCK_FILE
    lock = _read_json(lock_path)
    pinned = manifest.get("files", {}).get(filename) or (entry.sha256 if not base else "")
    locked = lock.get(filename, {}).get("sha256")
    expected = pinned or locked
    dest = dest_dir / filename
    try:
        fetch(url, dest, Checksum("sha256", expected) if expected else None, retries=retries)
    except DownloadError as exc:
        if not (trust and "checksum mismatch" in str(exc)):
            if "checksum mismatch" in str(exc):
                raise DownloadError(
                    f"{exc} The sha256 came from {'the zoo pin' if pinned else lock_path}; if you trust "
                    f"the new file, pass --trust to accept it and update the lock file."
                ) from None
            raise
        log.warning("--trust: accepting %s despite a checksum mismatch", url)
        fetch(url, dest, None, retries=retries)
    digest = file_digest(dest)
    lock[filename] = {"sha256": digest, "url": url, "demo": demo}
    if demo:
        lock[filename]["note"] = manifest.get("note", "")
    write_text_atomic(lock_path, json.dumps(lock, indent=2, sort_keys=True) + "\n")
    if demo:
        log.warning("%s: DEMO weights from %s: %s", arch, base, manifest.get("note", "not the official weights"))

    result_path = dest
    if decompress and fmt == "tar":
        safe_extract(dest, dest_dir)
        result_path = dest_dir / filename[: -len(".tar")]
    log.info("%s weights at %s (sha256 %s)", arch, result_path, digest[:12])
    return DownloadResult(arch, str(result_path), digest, url, demo)


def write_demo_mirror(out: str | os.PathLike) -> Path:
    """A zoo mirror of the demo weights (pretrained offline by clasflow, see clasflow.demo_zoo) in `out`."""
    from clasflow.demo_zoo import ensure_demo_zoo

    zoo = ensure_demo_zoo()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in [MIRROR_MANIFEST, *_read_json(zoo / MIRROR_MANIFEST)["files"]]:
        shutil.copyfile(zoo / name, out / f".{name}.tmp")
        os.replace(out / f".{name}.tmp", out / name)
    return out

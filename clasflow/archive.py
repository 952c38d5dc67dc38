"""Safe extraction of tar and zip archives.

Refuses members that would land outside the destination (``../``, absolute paths), links
pointing outside it, device files and FIFOs, and archives whose unpacked size exceeds a cap
(decompression bombs). Extraction goes to a temporary folder inside the destination and is
moved into place only when every member passed.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

from clasflow.errors import ArchiveError

DEFAULT_MAX_BYTES = 8 << 30  # 8 GiB: flowers102 unpacks to about 330 MiB


def _inside(root_rel: str) -> bool:
    norm = posixpath.normpath(root_rel)
    return not (norm.startswith("/") or norm == ".." or norm.startswith("../"))


def _check_name(archive: Path, name: str) -> None:
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or not _inside(name):
        raise ArchiveError(f"refusing {archive}: member {name!r} would be written outside the destination")


def _check_tar(archive: Path, members: list[tarfile.TarInfo], max_bytes: int) -> None:
    total = 0
    for m in members:
        _check_name(archive, m.name)
        if m.ischr() or m.isblk() or m.isfifo() or m.isdev():
            raise ArchiveError(f"refusing {archive}: member {m.name!r} is a device file or FIFO")
        if m.issym():
            target = posixpath.join(posixpath.dirname(m.name), m.linkname)
            if m.linkname.startswith("/") or not _inside(target):
                raise ArchiveError(f"refusing {archive}: symlink {m.name!r} -> {m.linkname!r} points outside the destination")
        if m.islnk():
            _check_name(archive, m.linkname)
        total += max(m.size, 0)
        if total > max_bytes:
            raise ArchiveError(
                f"refusing {archive}: it unpacks to more than {max_bytes} bytes (decompression bomb?); "
                f"raise the size cap if the archive is trusted"
            )


def _check_zip(archive: Path, infos: list[zipfile.ZipInfo], max_bytes: int) -> None:
    total = 0
    for info in infos:
        _check_name(archive, info.filename)
        mode = info.external_attr >> 16
        if mode and (mode & 0o170000) not in (0, 0o100000, 0o040000):
            raise ArchiveError(f"refusing {archive}: member {info.filename!r} is a link or special file")
        total += info.file_size
        if total > max_bytes:
            raise ArchiveError(
                f"refusing {archive}: it unpacks to more than {max_bytes} bytes (decompression bomb?); "
                f"raise the size cap if the archive is trusted"
            )


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> list[str]:
    """Extract `archive` (tar, tar.gz, tgz or zip) into `dest`; return the top-level names.

    Top-level entries that already exist in `dest` are replaced.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                _check_zip(archive, infos, max_bytes)
                written = 0
                for info in infos:
                    target = staging / info.filename
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "wb") as out:
                        for chunk in iter(lambda: src.read(1 << 20), b""):
                            written += len(chunk)
                            if written > max_bytes:  # declared sizes can lie
                                raise ArchiveError(f"refusing {archive}: it unpacks to more than {max_bytes} bytes")
                            out.write(chunk)
        else:
            try:
                tf = tarfile.open(archive)
            except (tarfile.TarError, OSError) as exc:
                raise ArchiveError(f"{archive} is not a readable tar or zip archive: {exc}") from None
            with tf:
                members = tf.getmembers()
                _check_tar(archive, members, max_bytes)
                tf.extractall(staging, filter="data")
        tops = sorted({Path(p).parts[0] for p in os.listdir(staging)})
        for name in tops:
            final = dest / name
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            elif final.exists() or final.is_symlink():
                final.unlink()
            os.replace(staging / name, final)
        return tops
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise ArchiveError(f"{archive} is corrupt or truncated: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)

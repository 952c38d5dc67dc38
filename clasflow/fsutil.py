"""Atomic file writes: write to a temporary name in the same folder, then rename."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to `path`; on success fsync and rename it onto `path`.

    On any exception the temporary file is removed and `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as fh:
        fh.write(text)


def read_bytes(path: str | os.PathLike, error: type[Exception], what: str) -> bytes:
    """A file's content, or `error` naming the file and what it was meant to be."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise error(f"{what} {str(path)!r} not found") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def read_utf8(path: str | os.PathLike, error: type[Exception], what: str) -> str:
    """A text file's content, or `error` naming the file (and the line of a non-UTF-8 byte)."""
    path = Path(path)
    data = read_bytes(path, error, what)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise error(f"{path}:{line}: not valid UTF-8 text (byte {data[exc.start]:#04x})") from None


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def recover_dir(final: Path) -> None:
    """Undo a `replace_dir` cut short between its two renames: if `final` is missing but its
    previous version waits as ``.NAME.old-PID``, put that back."""
    final = Path(final)
    if final.exists() or not final.parent.is_dir():
        return
    olds = sorted(final.parent.glob(f".{final.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds:
        os.replace(olds[-1], final)


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished folder `tmp` (same parent) onto `final`, replacing what is there.

    Files are fsynced first; the old folder is moved aside, the new one moved in, the old one
    deleted. A kill in between leaves the old one as ``.NAME.old-PID``, which `recover_dir`
    restores.
    """
    recover_dir(final)
    for f in Path(tmp).rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

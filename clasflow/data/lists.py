"""PaddleClas list files (``relative/path label`` per line) and cheap image-file checks."""

from __future__ import annotations

import os
from dataclasses import dataclass

from clasflow.errors import DataError
from clasflow.fsutil import read_utf8

__all__ = ["ListEntry", "read_list", "check_image_file"]


@dataclass(frozen=True)
class ListEntry:
    path: str  # as written in the list, relative to data_dir
    label: int  # -1 for unlabeled lists
    line: int  # 1-based line number in the list file


def _int(token: str) -> int | None:
    try:
        return int(token)
    except ValueError:
        return None


def read_list(file_list: str, *, labeled: bool = True, class_num: int | None = None) -> list[ListEntry]:
    """Parse a list file.

    labeled: every non-blank line is ``path label`` (the path may contain spaces;
    the label is the last field) with an integer label in [0, class_num).
    unlabeled (``labeled=False``, e.g. distillation's extra data): ``path`` or
    ``path label``; a trailing integer is ignored and the label is -1.
    Raises DataError naming the file and line for anything malformed.
    """
    text = read_utf8(file_list, DataError, "list file")
    if class_num is not None and (isinstance(class_num, bool) or not isinstance(class_num, int) or class_num < 1):
        raise DataError(f"class_num must be a positive int, got {class_num!r}")

    entries: list[ListEntry] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if "\x00" in line:
            raise DataError(f"{file_list}:{lineno}: NUL byte in the line (a binary file, or a corrupt list?)")
        parts = line.rsplit(maxsplit=1)
        if labeled:
            if len(parts) != 2:
                raise DataError(
                    f"{file_list}:{lineno}: expected 'relative/path label', got {line!r}"
                )
            path, tok = parts
            label = _int(tok)
            if label is None:
                raise DataError(f"{file_list}:{lineno}: label {tok!r} is not an integer")
            if label < 0 or (class_num is not None and label >= class_num):
                bound = f"[0, {class_num})" if class_num is not None else ">= 0"
                raise DataError(f"{file_list}:{lineno}: label {label} is outside {bound}")
        else:
            if len(parts) == 2 and _int(parts[1]) is not None:
                path = parts[0]
            else:
                path = line
            label = -1
        entries.append(ListEntry(path=path, label=label, line=lineno))
    if not entries:
        raise DataError(f"list file {file_list} has no entries")
    return entries


# ----------------------------------------------------------------------- file checks

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_problem(f, size: int) -> str | None:
    """Walk the JPEG markers up to the frame header; check dimensions and the EOI tail."""
    f.seek(2)
    pos = 2
    found = False
    for _ in range(256):
        head = f.read(4)
        if len(head) < 4:
            return "truncated JPEG header"
        if head[0] != 0xFF:
            return f"corrupt JPEG header (no marker at byte {pos})"
        marker = head[1]
        if marker == 0xFF:  # fill byte
            f.seek(pos + 1)
            pos += 1
            continue
        if marker == 0xD8 or marker == 0xD9 or 0xD0 <= marker <= 0xD7:
            return f"corrupt JPEG header (unexpected marker 0xFF{marker:02X})"
        seglen = (head[2] << 8) | head[3]
        if seglen < 2:
            return "corrupt JPEG header (bad segment length)"
        if marker in _SOF:
            body = f.read(5)
            if len(body) < 5:
                return "truncated JPEG frame header"
            h = (body[1] << 8) | body[2]
            w = (body[3] << 8) | body[4]
            if h == 0 or w == 0:
                return f"JPEG frame header gives an empty image ({w}x{h})"
            found = True
            break
        if marker == 0xDA:  # start of scan before any frame header
            break
        pos += 2 + seglen
        if pos >= size:
            return "truncated JPEG header"
        f.seek(pos)
    if not found:
        return "corrupt JPEG header (no frame header)"
    tail_len = min(size, 4096)
    f.seek(size - tail_len)
    if b"\xff\xd9" not in f.read(tail_len):
        return "truncated JPEG (no end-of-image marker)"
    return None


def check_image_file(path: str) -> str | None:
    """Cheap sanity check of one image file: None if it looks fine, else the reason.

    Checks existence, non-zero size, a known image signature, and for JPEG the
    frame header (non-empty dimensions) and the end-of-image marker.  Reads a few
    hundred bytes per file; it does not decode.
    """
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return "file not found"
    except OSError as e:
        return f"cannot stat file ({e.strerror or e})"
    if size == 0:
        return "empty file"
    try:
        with open(path, "rb") as f:
            magic = f.read(16)
            if magic[:3] == b"\xff\xd8\xff":
                return _jpeg_problem(f, size)
    except OSError as e:
        return f"cannot read file ({e.strerror or e})"
    if magic.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    if magic[:2] == b"BM" or magic[:4] in (b"II*\x00", b"MM\x00*"):
        return None
    if magic[:4] == b"RIFF" and magic[8:12] == b"WEBP":
        return None
    if magic[:2] in (b"P1", b"P2", b"P3", b"P4", b"P5", b"P6"):
        return None
    if magic[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or magic[:4] == b"\xff\x4f\xff\x51":
        return None
    return f"not a recognised image file (starts with {magic[:8].hex()})"

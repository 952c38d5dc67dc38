"""Download faults beyond tests/test_download.py (truncation, HTML, checksum, 404, 500, slow server).

Here the faults combine and span runs: a transfer cut at a random byte and then refused with HTTP
500 beyond the retries leaves only ``DEST.part`` (never the final name); a later run resumes it
with a Range request and renames it only once the checksum matched; a ``.part`` left damaged or
stale by an earlier run is never trusted.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from clasflow.download import Checksum, fetch
from clasflow.errors import DownloadError

PAYLOAD = bytes(random.Random(1).getrandbits(8) for _ in range(1 << 19))  # 512 KiB, incompressible
MD5 = Checksum("md5", hashlib.md5(PAYLOAD).hexdigest())


def _serve(server, name="w.bin"):
    (server.root / name).write_bytes(PAYLOAD)
    return f"{server.url}/{name}"


@pytest.mark.timeout(120)
def test_cut_then_persistent_500_leaves_only_part_and_a_later_run_resumes(http_server, tmp_path, fault_record):
    url = _serve(http_server)
    rng = random.Random(11)
    results = []
    for trial, cut in enumerate(sorted(rng.sample(range(1, len(PAYLOAD)), 4))):
        dest = tmp_path / f"t{trial}" / "w.bin"
        part = dest.with_name("w.bin.part")
        http_server.faults.truncate_after["w.bin"] = cut
        problems = []
        with pytest.raises(DownloadError, match="giving up"):  # the cut, no retry left
            fetch(url, dest, MD5, retries=0, backoff=0)
        http_server.faults.fail_500["w.bin"] = 99  # the next run meets a server that fails every retry
        with pytest.raises(DownloadError) as err:
            fetch(url, dest, MD5, retries=2, backoff=0)
        msg = str(err.value)
        if not (url in msg and "giving up" in msg and f"{part} is kept" in msg):
            problems.append(f"unclear error: {msg}")
        if dest.exists():
            problems.append("the final name exists after a failed download")
        kept = part.read_bytes() if part.exists() else b""
        if not (len(kept) <= cut and PAYLOAD.startswith(kept)):
            problems.append(f".part holds {len(kept)} bytes, not a prefix of at most {cut}")
        http_server.faults.fail_500["w.bin"] = 0  # the server recovers; a later run
        before = len(http_server.faults.requests)
        try:
            fetch(url, dest, MD5, retries=2, backoff=0)
        except DownloadError as exc:
            problems.append(f"the later run failed: {exc}")
        resumed = [r for p, r in http_server.faults.requests[before:] if p == "w.bin"]
        if resumed != [f"bytes={len(kept)}-" if kept else None]:
            problems.append(f"the later run did not resume the .part: {resumed}")
        if not dest.is_file() or dest.read_bytes() != PAYLOAD or part.exists():
            problems.append("the resumed file is not the verified payload under the final name")
        results.append({"cut": cut, "kept": len(kept), "problems": problems})
    survived = sum(1 for r in results if not r["problems"])
    fault_record("downloads: cut at a random byte, then HTTP 500 beyond the retries; resumed by a later run",
                 trials=len(results), survived=survived, data_lost=len(results) - survived,
                 note="cut at bytes " + ", ".join(str(r["cut"]) for r in results) + f" of {len(PAYLOAD)}")
    assert all(not r["problems"] for r in results), results


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


STALE_PARTS = {
    "a flipped byte in a resumable prefix": lambda: _flip(PAYLOAD[:200_000], 1234),
    "the right length, other bytes": lambda: _flip(PAYLOAD, len(PAYLOAD) // 2),
    "longer than the file (answered 416)": lambda: PAYLOAD + b"trailing garbage",
    "another file's prefix": lambda: bytes(100_000),
}


@pytest.mark.timeout(120)
def test_damaged_or_stale_part_is_never_trusted(http_server, tmp_path, fault_record):
    url = _serve(http_server)
    results = []
    for trial, (what, make) in enumerate(STALE_PARTS.items()):
        dest = tmp_path / f"t{trial}" / "w.bin"
        part = dest.with_name("w.bin.part")
        part.parent.mkdir(parents=True)
        part.write_bytes(make())
        problems = []
        try:
            fetch(url, dest, MD5, retries=1, backoff=0)
            if dest.read_bytes() != PAYLOAD:  # starting over is fine; keeping the bad bytes is not
                problems.append("a damaged .part was accepted")
            dest.unlink()
        except DownloadError as exc:
            if "checksum mismatch" not in str(exc) or url not in str(exc):
                problems.append(f"unclear error: {exc}")
        if dest.exists():
            problems.append("unverified bytes under the final name")
        if part.exists():
            problems.append("the damaged .part was kept for the next run to resume")
        try:  # the next run starts clean and succeeds
            fetch(url, dest, MD5, retries=1, backoff=0)
            if dest.read_bytes() != PAYLOAD:
                problems.append("the next run did not get the payload")
        except DownloadError as exc:
            problems.append(f"the next run failed: {exc}")
        results.append({"part": what, "problems": problems})
    survived = sum(1 for r in results if not r["problems"])
    fault_record("downloads: damaged or stale .part left by an earlier run (checksum known)", trials=len(results),
                 survived=survived, data_lost=len(results) - survived, note="; ".join(STALE_PARTS))
    assert all(not r["problems"] for r in results), results


@pytest.mark.timeout(60)
@pytest.mark.parametrize("checksum", [MD5, None], ids=["md5", "no-checksum"])
def test_truncated_transfer_is_never_renamed(http_server, tmp_path, checksum, fault_record):
    url = _serve(http_server)
    http_server.faults.truncate_after["w.bin"] = 300_000
    with pytest.raises(DownloadError, match=r"giving up .* (truncated transfer|transfer interrupted)"):
        fetch(url, tmp_path / "w.bin", checksum, retries=0, backoff=0)
    kept = (tmp_path / "w.bin.part").read_bytes()
    ok = not (tmp_path / "w.bin").exists() and len(kept) <= 300_000 and PAYLOAD.startswith(kept)
    fault_record("downloads: transfer cut with no retry left (Content-Length tells)", trials=1, survived=int(ok),
                 data_lost=0)
    assert ok


@pytest.mark.timeout(60)
def test_stale_part_without_a_checksum_is_not_trusted(http_server, tmp_path, fault_record):
    url = _serve(http_server)
    (tmp_path / "w.bin.part").write_bytes(b"stale bytes of another version " * 20_000)
    fetch(url, tmp_path / "w.bin", None, retries=0, backoff=0)
    ok = (tmp_path / "w.bin").read_bytes() == PAYLOAD
    fault_record("downloads: stale .part as long as the file, no checksum known (first zoo download from a mirror)",
                 trials=1, survived=int(ok), data_lost=int(not ok),
                 note="" if ok else "the stale bytes became the final file (and would be recorded in zoo.lock.json)")
    assert ok

"""The downloader against a local HTTP server: resume, retry, refusal, atomicity."""

import hashlib

import pytest

from clasflow.download import Checksum, fetch
from clasflow.errors import DownloadError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


def _serve(server, name="w.bin", data=PAYLOAD):
    (server.root / name).write_bytes(data)
    return f"{server.url}/{name}", Checksum("md5", hashlib.md5(data).hexdigest())


def test_plain_download_verifies_and_renames(http_server, tmp_path):
    url, md5 = _serve(http_server)
    dest = fetch(url, tmp_path / "out" / "w.bin", md5, backoff=0)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "out" / "w.bin.part").exists()


def test_present_and_verified_file_is_not_downloaded_again(http_server, tmp_path):
    url, md5 = _serve(http_server)
    fetch(url, tmp_path / "w.bin", md5, backoff=0)
    before = len(http_server.faults.requests)
    fetch(url, tmp_path / "w.bin", md5, backoff=0)
    assert len(http_server.faults.requests) == before


def test_truncated_transfer_resumes_with_range(http_server, tmp_path):
    url, md5 = _serve(http_server)
    http_server.faults.truncate_after["w.bin"] = 300_000
    dest = fetch(url, tmp_path / "w.bin", md5, backoff=0)
    assert dest.read_bytes() == PAYLOAD
    ranges = [r for p, r in http_server.faults.requests if p == "w.bin"]
    assert ranges[0] is None and len(ranges) == 2
    resumed_at = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= 300_000  # the bytes that arrived were kept, not fetched again


def test_part_file_from_an_earlier_run_is_resumed(http_server, tmp_path):
    url, md5 = _serve(http_server)
    (tmp_path / "w.bin.part").write_bytes(PAYLOAD[:1000])
    fetch(url, tmp_path / "w.bin", md5, backoff=0)
    assert (tmp_path / "w.bin").read_bytes() == PAYLOAD
    assert http_server.faults.requests[-1] == ("w.bin", "bytes=1000-")


def test_server_ignoring_range_restarts_cleanly(http_server, tmp_path):
    url, md5 = _serve(http_server)
    http_server.faults.ignore_range.add("w.bin")
    (tmp_path / "w.bin.part").write_bytes(b"garbage")
    fetch(url, tmp_path / "w.bin", md5, backoff=0)
    assert (tmp_path / "w.bin").read_bytes() == PAYLOAD


def test_http_500_is_retried(http_server, tmp_path):
    url, md5 = _serve(http_server)
    http_server.faults.fail_500["w.bin"] = 2
    fetch(url, tmp_path / "w.bin", md5, backoff=0, retries=3)
    assert (tmp_path / "w.bin").read_bytes() == PAYLOAD
    assert len(http_server.faults.requests) == 3


def test_persistent_500_gives_up_with_the_url(http_server, tmp_path):
    url, md5 = _serve(http_server)
    http_server.faults.fail_500["w.bin"] = 99
    with pytest.raises(DownloadError, match=r"giving up on .*w\.bin after 3 attempts"):
        fetch(url, tmp_path / "w.bin", md5, backoff=0, retries=2)
    assert not (tmp_path / "w.bin").exists()


def test_404_is_refused_at_once(http_server, tmp_path):
    with pytest.raises(DownloadError, match=r"HTTP 404 .*missing\.bin"):
        fetch(f"{http_server.url}/missing.bin", tmp_path / "m.bin", backoff=0)
    assert len(http_server.faults.requests) == 1
    assert not (tmp_path / "m.bin").exists()


def test_html_instead_of_archive_is_refused(http_server, tmp_path):
    url, md5 = _serve(http_server)
    http_server.faults.html.add("w.bin")
    with pytest.raises(DownloadError, match="HTML page"):
        fetch(url, tmp_path / "w.bin", md5, backoff=0)
    assert not (tmp_path / "w.bin").exists()


def test_checksum_mismatch_is_refused_and_leaves_nothing(http_server, tmp_path):
    url, _ = _serve(http_server)
    with pytest.raises(DownloadError, match=r"checksum mismatch .* expected md5 0{32}, got"):
        fetch(url, tmp_path / "w.bin", Checksum("md5", "0" * 32), backoff=0)
    assert list(tmp_path.iterdir()) == [tmp_path / "served"]


def test_slow_server_times_out_and_retries(http_server, tmp_path):
    url, md5 = _serve(http_server)
    http_server.faults.slow["w.bin"] = 1.0
    with pytest.raises(DownloadError, match="giving up"):
        fetch(url, tmp_path / "w.bin", md5, backoff=0, retries=1, timeout=0.2)
    assert [p for p, _ in http_server.faults.requests] == ["w.bin", "w.bin"]  # timed out, retried once, gave up
    assert not (tmp_path / "w.bin").exists()


def test_file_url_and_plain_path(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    md5 = Checksum("md5", hashlib.md5(PAYLOAD).hexdigest())
    assert fetch(f"file://{src}", tmp_path / "a.bin", md5).read_bytes() == PAYLOAD
    assert fetch(str(src), tmp_path / "b.bin", md5).read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="source file not found"):
        fetch(f"file://{tmp_path}/nope.bin", tmp_path / "c.bin")

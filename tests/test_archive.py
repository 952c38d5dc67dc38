"""Safe extraction refuses hostile members and extracts good archives completely."""

import io
import tarfile
import zipfile

import pytest

from clasflow.archive import safe_extract
from clasflow.errors import ArchiveError


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def test_good_archive_extracts_and_replaces(tmp_path):
    arc = _tar(tmp_path / "a.tgz", [_file("jpg/a.jpg", b"1"), _file("jpg/b.jpg", b"2"), _link("jpg/c.jpg", "a.jpg")])
    dest = tmp_path / "d"
    (dest / "jpg").mkdir(parents=True)
    (dest / "jpg" / "stale.jpg").write_bytes(b"old")
    assert safe_extract(arc, dest) == ["jpg"]
    assert sorted(p.name for p in (dest / "jpg").iterdir()) == ["a.jpg", "b.jpg", "c.jpg"]
    assert [p.name for p in dest.iterdir()] == ["jpg"]  # no staging folder left


@pytest.mark.parametrize(
    "member, message",
    [
        (_file("../evil.txt"), "outside the destination"),
        (_file("jpg/../../evil.txt"), "outside the destination"),
        (_file("/etc/evil.txt"), "outside the destination"),
        (_link("jpg/l", "/etc/passwd"), "points outside"),
        (_link("jpg/l", "../../etc/passwd"), "points outside"),
        (_link("jpg/h", "../outside", tarfile.LNKTYPE), "outside the destination"),
    ],
)
def test_hostile_tar_members_are_refused(tmp_path, member, message):
    arc = _tar(tmp_path / "bad.tgz", [_file("jpg/ok.jpg"), member])
    dest = tmp_path / "d"
    with pytest.raises(ArchiveError, match=message):
        safe_extract(arc, dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


def test_device_file_is_refused(tmp_path):
    info = tarfile.TarInfo("jpg/dev")
    info.type = tarfile.CHRTYPE
    arc = _tar(tmp_path / "dev.tgz", [(info, None)])
    with pytest.raises(ArchiveError, match="device file"):
        safe_extract(arc, tmp_path / "d")


def test_tar_bomb_over_the_cap_is_refused(tmp_path):
    arc = _tar(tmp_path / "bomb.tgz", [_file("big.bin", b"\0" * 200_000)])
    assert arc.stat().st_size < 2_000
    with pytest.raises(ArchiveError, match="more than 100000 bytes"):
        safe_extract(arc, tmp_path / "d", max_bytes=100_000)


def test_zip_traversal_and_bomb_are_refused(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../evil.txt", b"x")
    with pytest.raises(ArchiveError, match="outside the destination"):
        safe_extract(evil, tmp_path / "d")
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.bin", b"\0" * 300_000)
    with pytest.raises(ArchiveError, match="more than"):
        safe_extract(bomb, tmp_path / "d2", max_bytes=100_000)


def test_zip_symlink_is_refused(tmp_path):
    arc = tmp_path / "link.zip"
    info = zipfile.ZipInfo("jpg/l")
    info.external_attr = (0o120777) << 16
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="link or special file"):
        safe_extract(arc, tmp_path / "d")


def test_truncated_archive_is_a_clear_error(tmp_path):
    arc = _tar(tmp_path / "a.tgz", [_file("jpg/a.jpg", bytes(range(256)) * 400)])
    data = arc.read_bytes()
    arc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match="corrupt or truncated|not a readable"):
        safe_extract(arc, tmp_path / "d")
    assert not (tmp_path / "d" / "jpg").exists()

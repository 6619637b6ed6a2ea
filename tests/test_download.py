"""Downloads (mirrors, resume, checksums, caching) and safe archive extraction, against a local server."""

from __future__ import annotations

import io
import os
import socket
import stat
import tarfile
import zipfile

import pytest

from esol.data import archive as archive_mod
from esol.data import download
from esol.data.archive import ArchiveError, extract
from esol.data.download import DownloadError, RemoteFile, fetch

from .fake_remote import add_bytes, tar_bytes

DATA = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes: more than one read chunk


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/gone/file.bin"


def test_fetch_verifies_places_atomically_and_never_fetches_twice(file_server, tmp_path, monkeypatch):
    remote = file_server.remote("file.bin", DATA, sha256=True)
    path = fetch(remote, tmp_path / "dl")
    assert path == tmp_path / "dl" / "file.bin" and path.read_bytes() == DATA
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == [".file.bin.verified", "file.bin"]
    assert len(file_server.requests) == 1

    def no_hashing(*args, **kwargs):
        raise AssertionError("a verified file was hashed again")

    monkeypatch.setattr(download, "_hash_file", no_hashing)
    assert fetch(remote, tmp_path / "dl") == path
    assert len(file_server.requests) == 1  # nothing fetched, nothing re-hashed (stamp)


def test_checksum_mismatch_is_refused_and_leaves_nothing(file_server, tmp_path):
    good = file_server.remote("file.bin", DATA)
    bad = RemoteFile("file.bin", urls=good.urls, md5="0" * 32, size=good.size)
    with pytest.raises(DownloadError) as err:
        fetch(bad, tmp_path)
    message = str(err.value)
    assert "file.bin" in message and "0" * 32 in message and good.md5 in message
    assert list(tmp_path.iterdir()) == []


def test_size_announced_wrong_moves_on(file_server, tmp_path):
    good = file_server.remote("file.bin", DATA)
    bad = RemoteFile("file.bin", urls=good.urls, md5=good.md5, size=len(DATA) + 1)
    with pytest.raises(DownloadError, match="announces"):
        fetch(bad, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cut_download_resumes_with_range_on_the_next_run(file_server, tmp_path):
    remote = file_server.remote("file.bin", DATA)
    file_server.cut_after["/m1/file.bin"] = 300_000
    with pytest.raises(DownloadError, match="interrupted"):
        fetch(remote, tmp_path, attempts=1)
    part = tmp_path / "file.bin.part"
    assert part.stat().st_size == 300_000 and not (tmp_path / "file.bin").exists()

    path = fetch(remote, tmp_path, attempts=1)
    assert file_server.requests == [("/m1/file.bin", None), ("/m1/file.bin", "bytes=300000-")]
    assert path.read_bytes() == DATA and not part.exists()


def test_cut_download_is_retried_within_one_run(file_server, tmp_path):
    remote = file_server.remote("file.bin", DATA)
    file_server.cut_after["/m1/file.bin"] = 123_457
    assert fetch(remote, tmp_path).read_bytes() == DATA
    assert [r for _, r in file_server.requests] == [None, "bytes=123457-"]


def test_server_ignoring_range_restarts_cleanly(file_server, tmp_path):
    remote = file_server.remote("file.bin", DATA)
    file_server.ignore_range.add("/m1/file.bin")
    (tmp_path / "file.bin.part").write_bytes(b"x" * 5000)  # stale bytes that must not survive
    assert fetch(remote, tmp_path).read_bytes() == DATA
    assert file_server.requests == [("/m1/file.bin", "bytes=5000-")]


def test_complete_part_without_known_size_is_not_fetched_again(file_server, tmp_path):
    remote = file_server.remote("file.bin", DATA, size=False)
    (tmp_path / "file.bin.part").write_bytes(DATA)  # e.g. killed between the last byte and the rename
    assert fetch(remote, tmp_path).read_bytes() == DATA
    assert file_server.requests == [("/m1/file.bin", f"bytes={len(DATA)}-")]  # answered 416, nothing sent


def test_404_and_refused_mirrors_fall_through_to_the_next(file_server, tmp_path, caplog):
    remote = file_server.remote("file.bin", DATA, mirrors=("/m1", "/m2"))
    file_server.not_found.add("/m1/file.bin")
    remote = RemoteFile("file.bin", urls=(closed_port_url(), *remote.urls), md5=remote.md5, size=remote.size)
    with caplog.at_level("WARNING", logger="esol.download"):
        assert fetch(remote, tmp_path).read_bytes() == DATA
    assert [p for p, _ in file_server.requests] == ["/m1/file.bin", "/m2/file.bin"]
    assert "cannot connect" in caplog.text and "HTTP 404" in caplog.text and "next mirror" in caplog.text


def test_all_mirrors_failing_names_each(file_server, tmp_path):
    remote = file_server.remote("file.bin", DATA, mirrors=("/m1", "/m2"))
    file_server.not_found.update({"/m1/file.bin", "/m2/file.bin"})
    with pytest.raises(DownloadError) as err:
        fetch(remote, tmp_path)
    assert all(url in str(err.value) for url in remote.urls)


def test_file_already_on_disk_is_verified_not_fetched(file_server, tmp_path):
    remote = file_server.remote("file.bin", DATA)
    (tmp_path / "file.bin").write_bytes(DATA)
    assert fetch(remote, tmp_path).read_bytes() == DATA
    assert file_server.requests == []
    (tmp_path / "other.bin").write_bytes(DATA[:-1])
    other = RemoteFile("other.bin", urls=remote.urls, md5=remote.md5, size=remote.size)
    with pytest.raises(DownloadError, match=r"other\.bin: found on disk.*left in place"):
        fetch(other, tmp_path)
    assert (tmp_path / "other.bin").exists() and file_server.requests == []


# ------------------------------------------------------------------------------------- archives


def hostile_tar(kind: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        add_bytes(tar, "pkg/ok.txt", b"fine")
        if kind == "absolute":
            add_bytes(tar, "/tmp/esol-evil.txt", b"evil")
        elif kind == "dotdot":
            add_bytes(tar, "pkg/../../outside/evil.txt", b"evil")
        elif kind in ("symlink", "hardlink"):
            info = tarfile.TarInfo("pkg/link")
            info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
            info.linkname = "../../outside" if kind == "symlink" else "../outside/target"
            tar.addfile(info)
            add_bytes(tar, "pkg/link/evil.txt", b"evil")
        elif kind == "chained":  # each link harmless on its own, together they escape
            for name, target in (("a", "."), ("a/b", "..")):
                info = tarfile.TarInfo(name)
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
            add_bytes(tar, "a/b/outside/evil.txt", b"evil")
        elif kind == "device":
            info = tarfile.TarInfo("pkg/null")
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            tar.addfile(info)
    return buf.getvalue()


MEMBERS = {
    "absolute": "/tmp/esol-evil.txt",
    "dotdot": "pkg/../../outside/evil.txt",
    "symlink": "pkg/link",
    "hardlink": "pkg/link",
    "chained": "a/b",
    "device": "pkg/null",
}


@pytest.mark.parametrize("kind", list(MEMBERS))
def test_hostile_tar_members_are_refused(tmp_path, kind):
    work = tmp_path / "work"
    work.mkdir()
    path = work / "evil.tar"
    path.write_bytes(hostile_tar(kind))
    with pytest.raises(ArchiveError) as err:
        extract(path, work / "x" / "dest")
    assert str(path) in str(err.value) and repr(MEMBERS[kind]) in str(err.value)
    assert sorted(p.name for p in work.rglob("*")) == ["evil.tar", "x"]  # no dest, no temp dir
    assert not (tmp_path / "outside").exists() and not os.path.exists("/tmp/esol-evil.txt")


def hostile_zip(kind: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("pkg/ok.txt", b"fine")
        if kind == "absolute":
            zf.writestr(zipfile.ZipInfo("/tmp/esol-evil.txt"), b"evil")
        elif kind == "dotdot":
            zf.writestr(zipfile.ZipInfo("pkg/../../outside/evil.txt"), b"evil")
        elif kind == "symlink":
            info = zipfile.ZipInfo("pkg/link")
            info.create_system, info.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "../../outside")
            zf.writestr("pkg/link/evil.txt", b"evil")
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink"])
def test_hostile_zip_members_are_refused(tmp_path, kind):
    work = tmp_path / "work"
    work.mkdir()
    path = work / "evil.zip"
    path.write_bytes(hostile_zip(kind))
    with pytest.raises(ArchiveError) as err:
        extract(path, work / "dest")
    assert str(path) in str(err.value) and repr(MEMBERS[kind]) in str(err.value)
    assert sorted(p.name for p in work.iterdir()) == ["evil.zip"]
    assert not (tmp_path / "outside").exists() and not os.path.exists("/tmp/esol-evil.txt")


def test_extraction_is_complete_then_skipped(tmp_path, monkeypatch):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        add_bytes(tar, "top/a/file.txt", b"hello")
        info = tarfile.TarInfo("top/b")
        info.type, info.linkname = tarfile.SYMTYPE, "a/file.txt"  # links that stay inside are fine
        tar.addfile(info)
        info = tarfile.TarInfo("top/c")
        info.type, info.linkname = tarfile.LNKTYPE, "top/a/file.txt"
        tar.addfile(info)
    path = tmp_path / "good.tgz"
    path.write_bytes(buf.getvalue())
    dest = extract(path, tmp_path / "out", key={"archive": "good.tgz", "md5": "x"})
    assert (dest / "top" / "b").read_bytes() == (dest / "top" / "c").read_bytes() == b"hello"

    def boom(*args):
        raise AssertionError("extracted twice")

    monkeypatch.setattr(archive_mod, "_extract_tar", boom)
    assert extract(path, tmp_path / "out", key={"archive": "good.tgz", "md5": "x"}) == dest
    with pytest.raises(AssertionError, match="extracted twice"):  # another archive version: extract again
        extract(path, tmp_path / "out", key={"archive": "good.tgz", "md5": "y"})
    assert (dest / "top" / "a" / "file.txt").exists()  # the failed re-extraction left the old tree


def test_corrupt_archive_names_the_file(tmp_path):
    path = tmp_path / "broken.tar"
    path.write_bytes(tar_bytes({"x/file": b"1" * 2000})[:700])
    with pytest.raises(ArchiveError, match=r"broken\.tar"):
        extract(path, tmp_path / "dest")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.tar"]

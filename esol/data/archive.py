"""Safe, all-or-nothing extraction of tar (``.tar``, ``.tgz``, ``.tar.gz``) and zip archives.

``extract(archive, dest)`` unpacks into ``.<dest>.extracting`` beside ``dest`` and renames it onto
``dest`` only when every member came out, so ``dest`` is either absent or complete. A marker file
(``.esol-extracted.json``, holding the archive's name and md5) makes a second call a no-op.

Members are refused, with an :class:`ArchiveError` naming the archive and the member, when they
would land outside ``dest``: absolute paths (``/x``, ``C:\\x``), ``..`` components, symbolic or
hard links whose target leaves ``dest`` (or that are absolute), paths that pass through a link
extracted earlier, and device files, FIFOs and other special members. Tar members are also passed
through the standard library's ``data`` extraction filter as a second line of defence. A refused
member aborts the whole extraction and nothing is left behind.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

from esol.infra.io import InputError, write_json
from esol.infra.progress import tqdm

log = logging.getLogger("esol.archive")

MARKER = ".esol-extracted.json"


class ArchiveError(InputError):
    """An archive is unreadable or holds a member that would escape the extraction directory."""


def is_extracted(dest: Path, key: dict) -> bool:
    """True when ``dest`` holds a finished extraction whose marker matches ``key``."""
    try:
        return json.loads((Path(dest) / MARKER).read_text()) == key
    except (OSError, ValueError):
        return False


class _Guard:
    """Validates member names and link targets of one archive, remembering links seen so far."""

    def __init__(self, archive: Path, root: Path) -> None:
        self.archive, self.root = archive, os.path.realpath(root)
        self.links: set[str] = set()

    def refuse(self, name: str, reason: str) -> ArchiveError:
        return ArchiveError(f"{self.archive}: refusing member {name!r}: {reason}; nothing was extracted")

    def path(self, name: str) -> str:
        """Check a member name; return it normalised (relative, '/'-separated)."""
        if not name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
            raise self.refuse(name, "absolute path")
        parts = [p for p in re.split(r"[\\/]+", name) if p not in ("", ".")]
        if ".." in parts:
            raise self.refuse(name, "'..' path component")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in self.links:
                raise self.refuse(name, f"path passes through the link {'/'.join(parts[:i])!r}")
        normalised = "/".join(parts)
        real = os.path.realpath(os.path.join(self.root, normalised))
        if normalised and real != self.root and not real.startswith(self.root + os.sep):
            raise self.refuse(name, "resolves outside the extraction directory")
        return normalised

    def link(self, name: str, target: str, *, hard: bool) -> None:
        """Check a link member (target relative to the archive root for hard links)."""
        kind = "hard link" if hard else "symlink"
        if not target or target.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", target):
            raise self.refuse(name, f"{kind} to the absolute path {target!r}")
        base = "" if hard else posixpath.dirname(name)
        resolved = posixpath.normpath(posixpath.join(base, target.replace("\\", "/")))
        if resolved == ".." or resolved.startswith("../"):
            raise self.refuse(name, f"{kind} to {target!r} points outside the extraction directory")
        if not hard:
            self.links.add(name)


def _extract_tar(archive: Path, tmp: Path) -> None:
    guard = _Guard(archive, tmp)
    try:
        with (
            open(archive, "rb") as raw,
            tarfile.open(fileobj=raw, mode="r|*") as tar,
            tqdm(
                total=archive.stat().st_size, unit="B", unit_scale=True, desc=f"extract {archive.name}", mininterval=5
            ) as bar,
        ):
            for member in tar:
                name = guard.path(member.name)
                if member.issym() or member.islnk():
                    guard.link(name, member.linkname, hard=member.islnk())
                elif not (member.isfile() or member.isdir()):
                    raise guard.refuse(member.name, "device file, FIFO or other special member")
                if not name:
                    continue
                try:
                    tar.extract(member, tmp, set_attrs=False, filter="data")
                except tarfile.FilterError as exc:
                    raise guard.refuse(member.name, str(exc)) from exc
                bar.update(raw.tell() - bar.n)  # compressed bytes read so far
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArchiveError(f"{archive}: cannot read the tar archive ({exc})") from exc


def _extract_zip(archive: Path, tmp: Path) -> None:
    guard = _Guard(archive, tmp)
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in tqdm(infos, desc=f"extract {archive.name}", unit="file", mininterval=5):
                name = guard.path(info.filename)
                # Unix zips keep st_mode in the high bits; a file type of 0 (no type recorded) is a plain file
                mode = info.external_attr >> 16 if info.create_system == 3 else 0
                target = tmp / name
                if stat.S_ISLNK(mode):
                    link_to = zf.read(info).decode("utf-8")
                    guard.link(name, link_to, hard=False)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(link_to, target)
                elif stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise guard.refuse(info.filename, "device file, FIFO or other special member")
                elif info.is_dir() or not name:
                    target.mkdir(parents=True, exist_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"{archive}: cannot read the zip archive ({exc})") from exc


def extract(archive: Path, dest: Path, *, key: dict | None = None) -> Path:
    """Extract ``archive`` into ``dest`` safely and atomically; skip when already done.

    ``key`` (default: the archive's name) is stored in the marker; a marker with another key
    (a different archive version) makes the extraction run again.
    """
    archive, dest = Path(archive), Path(dest)
    key = key if key is not None else {"archive": archive.name}
    if is_extracted(dest, key):
        log.info("%s: already extracted into %s", archive.name, dest)
        return dest
    if not archive.is_file():
        raise ArchiveError(f"{archive}: archive not found")
    tmp = dest.with_name(f".{dest.name}.extracting")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    log.info("extracting %s into %s", archive, dest)
    try:
        name = archive.name.lower()
        if name.endswith(".zip") or (not name.endswith((".tar", ".tgz", ".tar.gz")) and zipfile.is_zipfile(archive)):
            _extract_zip(archive, tmp)
        else:
            _extract_tar(archive, tmp)
        write_json(tmp / MARKER, key)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return dest

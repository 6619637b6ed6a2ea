"""Checked, resumable downloads of the dataset archives.

``fetch(remote, downloads)`` returns ``<downloads>/<remote.filename>``, a file whose size, md5
(and sha256 when given) match the registry; nothing is extracted before that holds.

* **Mirrors** are tried in order. A 404 (or any HTTP error), a refused connection or a server
  announcing the wrong size moves on to the next mirror, with a log line naming the URL.
* **Resuming**: bytes go to ``<filename>.part``. A connection cut mid-file is retried (``attempts``
  per mirror) with an HTTP ``Range`` request from where it stopped, and a later run resumes the
  ``.part`` it finds. A server that ignores ``Range`` (answers 200) restarts the file from zero.
* **Verification** happens on the ``.part``; on a mismatch the ``.part`` is deleted and the error
  names the file, the URL, the expected and the actual checksum. Only a verified file is renamed
  to its final name, so ``<filename>`` is always complete.
* **No second fetch**: an existing ``<filename>`` is verified instead of fetched. The result is
  cached in ``.<filename>.verified`` (size, mtime, checksums), so a 13 GB zip is hashed once,
  not on every run.

Data already on disk: copy or link the archive into the downloads directory
(``data/downloads`` in the workflow) and it is verified and used. An archive found there that does
not verify is left in place and reported (it is not ours to delete). Already-extracted trees are
handled one level up, in :mod:`esol.data.real` (``ESOL_DATA_DIR``).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esol.infra.io import InputError, write_json
from esol.infra.progress import tqdm

log = logging.getLogger("esol.download")

CHUNK = 1 << 20
USER_AGENT = "esol-wsss/0.1 (+urllib)"


class DownloadError(InputError):
    """An archive could not be fetched or does not verify; the message names file, URL and checksums."""


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file: its name on disk, mirrors (tried in order) and expected checksums."""

    filename: str
    urls: tuple[str, ...]
    md5: str
    size: int | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "urls", tuple(self.urls))
        if not self.urls:
            raise ValueError(f"{self.filename}: no mirror given")


class _Interrupted(Exception):
    """The transfer stopped early; retry the same mirror from where it stopped."""


class _NextMirror(Exception):
    """This mirror cannot serve the file; try the next one."""


def _stamp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified")


def _hashers(remote: RemoteFile) -> dict[str, Any]:
    hashers = {"md5": hashlib.md5()}
    if remote.sha256:
        hashers["sha256"] = hashlib.sha256()
    return hashers


def _hash_file(path: Path, hashers: dict, desc: str) -> None:
    size = path.stat().st_size
    with (
        open(path, "rb") as handle,
        tqdm(total=size, unit="B", unit_scale=True, desc=desc, mininterval=5, leave=False) as bar,
    ):
        while chunk := handle.read(CHUNK):
            for h in hashers.values():
                h.update(chunk)
            bar.update(len(chunk))


def _mismatches(remote: RemoteFile, size: int, digests: dict[str, str]) -> list[str]:
    problems = []
    if remote.size is not None and size != remote.size:
        problems.append(f"size {size} bytes, expected {remote.size}")
    if digests["md5"] != remote.md5.lower():
        problems.append(f"md5 {digests['md5']}, expected {remote.md5.lower()}")
    if remote.sha256 and digests.get("sha256") != remote.sha256.lower():
        problems.append(f"sha256 {digests.get('sha256')}, expected {remote.sha256.lower()}")
    return problems


def _stamp_ok(path: Path, remote: RemoteFile) -> bool:
    try:
        stamp = json.loads(_stamp_path(path).read_text())
        st = path.stat()
    except (OSError, ValueError):
        return False
    return (
        stamp.get("size") == st.st_size
        and stamp.get("mtime_ns") == st.st_mtime_ns
        and stamp.get("md5") == remote.md5.lower()
        and (not remote.sha256 or stamp.get("sha256") == remote.sha256.lower())
    )


def _write_stamp(path: Path, digests: dict[str, str]) -> None:
    st = path.stat()
    write_json(_stamp_path(path), {"size": st.st_size, "mtime_ns": st.st_mtime_ns, **digests})


def verify_existing(path: Path, remote: RemoteFile) -> None:
    """Check a file already at its final name (cached by a stamp); raise DownloadError, keep the file."""
    if _stamp_ok(path, remote):
        log.info("%s: present and verified earlier (stamp), not fetched", path)
        return
    log.info("%s: present, verifying its checksum", path)
    hashers = _hashers(remote)
    _hash_file(path, hashers, f"verify {path.name}")
    digests = {k: h.hexdigest() for k, h in hashers.items()}
    problems = _mismatches(remote, path.stat().st_size, digests)
    if problems:
        raise DownloadError(
            f"{path}: found on disk but does not match the expected checksum ({'; '.join(problems)}). "
            "It was left in place: delete it to download it again, or replace it with a good copy."
        )
    _write_stamp(path, digests)


def _content_range_start(value: str | None) -> int | None:
    match = re.match(r"bytes\s+(\d+)-\d+/(\d+|\*)", value or "")
    return int(match.group(1)) if match else None


def _transfer(url: str, part: Path, remote: RemoteFile, timeout: float) -> dict[str, str]:
    """Download ``url`` into ``part`` (resuming it when possible); return the hex digests of the result."""
    offset = part.stat().st_size if part.exists() else 0
    if remote.size is not None and offset > remote.size:
        log.warning("%s: longer than the expected %d bytes, starting again", part, remote.size)
        part.unlink()
        offset = 0
    hashers = _hashers(remote)
    if offset:  # hash the kept bytes first: a long hash must not leave an open connection idle
        _hash_file(part, hashers, f"hash {part.name}")
    if remote.size is not None and offset == remote.size:
        return {k: h.hexdigest() for k, h in hashers.items()}

    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            match = re.fullmatch(r"bytes \*/(\d+)", exc.headers.get("Content-Range", "") if exc.headers else "")
            if match and int(match.group(1)) == offset:  # the .part is already complete
                return {k: h.hexdigest() for k, h in hashers.items()}
            log.warning("%s: server refused to resume at byte %d (416), starting again", url, offset)
            part.unlink()
            raise _Interrupted("range not satisfiable") from exc
        raise _NextMirror(f"HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _NextMirror(f"cannot connect ({getattr(exc, 'reason', exc)})") from exc

    with response:
        mode = "wb"
        if offset and response.status == 206:
            content_range = response.headers.get("Content-Range")
            if _content_range_start(content_range) != offset:
                raise _NextMirror(f"asked for bytes from {offset}, got Content-Range {content_range!r}")
            log.info("%s: resuming at byte %d", url, offset)
            mode = "ab"
        elif offset:
            log.warning(
                "%s: server ignored the Range request (HTTP %d), downloading from the start", url, response.status
            )
            offset = 0
            hashers = _hashers(remote)
        length = response.headers.get("Content-Length")
        expected_body = int(length) if length is not None and length.isdigit() else None
        if remote.size is not None and expected_body is not None and offset + expected_body != remote.size:
            raise _NextMirror(f"server announces {offset + expected_body} bytes, expected {remote.size}")
        total = remote.size or (offset + expected_body if expected_body is not None else None)
        received = 0
        with (
            open(part, mode) as handle,
            tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=remote.filename, mininterval=5) as bar,
        ):
            try:
                while chunk := response.read(CHUNK):
                    handle.write(chunk)
                    for h in hashers.values():
                        h.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                raise _Interrupted(f"{type(exc).__name__}: {exc}") from exc
        if expected_body is not None and received < expected_body:
            raise _Interrupted(f"connection closed after {offset + received} of {offset + expected_body} bytes")
    return {k: h.hexdigest() for k, h in hashers.items()}


def fetch(remote: RemoteFile, downloads: Path, *, attempts: int = 3, timeout: float = 60.0) -> Path:
    """Return ``downloads/remote.filename``, downloading and verifying it first if needed.

    Raises DownloadError naming the file, each mirror's failure and, on a checksum mismatch, the
    expected and actual values; a failed download leaves at most a resumable ``.part`` behind
    (none after a checksum mismatch).
    """
    downloads = Path(downloads)
    dest = downloads / remote.filename
    if dest.is_file():
        verify_existing(dest, remote)
        return dest
    downloads.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures: list[str] = []
    for url in remote.urls:
        for attempt in range(1, attempts + 1):
            try:
                digests = _transfer(url, part, remote, timeout)
            except _NextMirror as exc:
                log.warning("%s: %s; trying the next mirror", url, exc)
                failures.append(f"{url}: {exc}")
                break
            except _Interrupted as exc:
                done = part.stat().st_size if part.exists() else 0
                log.warning(
                    "%s: interrupted (%s), %d bytes kept in %s (attempt %d/%d)", url, exc, done, part, attempt, attempts
                )
                if attempt == attempts:
                    failures.append(f"{url}: interrupted {attempts} times, last: {exc}")
                continue
            problems = _mismatches(remote, part.stat().st_size, digests)
            if problems:
                part.unlink()
                message = f"checksum mismatch ({'; '.join(problems)}), download removed"
                log.error("%s from %s: %s", dest, url, message)
                failures.append(f"{url}: {message}")
                break
            os.replace(part, dest)
            _write_stamp(dest, digests)
            log.info("%s: downloaded from %s and verified (md5 %s)", dest, url, digests["md5"])
            return dest
    kept = f"; {part.stat().st_size} bytes kept in {part} for the next try" if part.exists() else ""
    raise DownloadError(
        f"{dest}: could not be fetched from any mirror{kept}:\n  "
        + "\n  ".join(failures)
        + f"\nPlace a copy of {remote.filename} (md5 {remote.md5}) in {downloads} to skip the download."
    )

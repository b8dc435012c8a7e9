"""Reproducible archives: the same files always give the same bytes.

Entries are sorted by name; every entry has the same time (the run's end), owner 0 with
no user or group name, mode 0644; the gzip header has no file name and time 0; zip
entries carry the same time and Unix mode. Compression level 6 throughout, so a given
audit-job (and zlib) writes a run's bundle byte for byte the same every time.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from audit_job.errors import ConfigError, EvidenceMismatch

COMPRESS_LEVEL = 6
FILE_MODE = 0o644
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MAX_ENTRIES = 64


def archive_kind(path: Path) -> str:
    """'tar.gz' or 'zip', by the file's suffix."""
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    if name.endswith(".zip"):
        return "zip"
    raise ConfigError(f"--out {path}: must end in .tar.gz, .tgz or .zip")


def write_archive(out: Path, files: Sequence[tuple[str, Path]], mtime: int) -> None:
    """Write `files` ((name in the archive, file on disk)) to `out` atomically: a temporary
    file beside it, renamed when complete, so a failure never leaves half a bundle."""
    kind = archive_kind(out)
    entries = sorted(files, key=lambda item: item[0].encode("utf-8"))
    fd, temporary = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as raw:
            if kind == "zip":
                _write_zip(raw, entries, mtime)
            else:
                _write_tar_gz(raw, entries, mtime)
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write_tar_gz(raw: object, entries: Sequence[tuple[str, Path]], mtime: int) -> None:
    with (
        gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=COMPRESS_LEVEL
        ) as gz,  # type: ignore[arg-type]
        tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, path in entries:
            info = tarfile.TarInfo(name)
            info.size = path.stat().st_size
            info.mtime = mtime
            info.mode = FILE_MODE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with path.open("rb") as source:
                tar.addfile(info, source)


def _write_zip(raw: object, entries: Sequence[tuple[str, Path]], mtime: int) -> None:
    stamp = datetime.fromtimestamp(max(mtime, 315532800), UTC)  # zip times start in 1980
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL) as zf:  # type: ignore[arg-type]
        for name, path in entries:
            info = zipfile.ZipInfo(name, date_time=stamp.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, so external_attr holds the mode
            info.external_attr = (0o100000 | FILE_MODE) << 16
            info.file_size = path.stat().st_size
            with path.open("rb") as source, zf.open(info, "w") as target:
                shutil.copyfileobj(source, target, 1 << 20)


def extract(bundle: Path, into: Path) -> list[str]:
    """Unpack a bundle (tar.gz or zip, told apart by their first bytes) into `into`; the
    names of its entries. Only plain files with plain names are accepted."""
    try:
        with bundle.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise EvidenceMismatch(f"{bundle}: cannot read: {exc.strerror}") from None
    try:
        if magic[:2] == b"\x1f\x8b":
            return _extract_tar(bundle, into)
        if magic == b"PK\x03\x04":
            return _extract_zip(bundle, into)
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
        raise EvidenceMismatch(f"{bundle}: not a readable bundle archive ({reason})") from None
    raise EvidenceMismatch(f"{bundle}: not a bundle (neither tar.gz nor zip)")


def _accept(bundle: Path, name: str, seen: set[str], regular: bool) -> None:
    if not regular:
        raise EvidenceMismatch(f"{bundle}: entry {name!r} is not a regular file")
    if not SAFE_NAME.match(name):
        raise EvidenceMismatch(f"{bundle}: entry {name!r} is not a plain file name")
    if name in seen:
        raise EvidenceMismatch(f"{bundle}: entry {name!r} appears twice")
    if len(seen) >= MAX_ENTRIES:
        raise EvidenceMismatch(f"{bundle}: more than {MAX_ENTRIES} entries")
    seen.add(name)


def _extract_tar(bundle: Path, into: Path) -> list[str]:
    seen: set[str] = set()
    names = []
    with tarfile.open(bundle, mode="r|gz") as tar:
        for member in tar:
            _accept(bundle, member.name, seen, member.isreg())
            source = tar.extractfile(member)
            assert source is not None
            with (into / member.name).open("wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
            names.append(member.name)
    return names


def _extract_zip(bundle: Path, into: Path) -> list[str]:
    seen: set[str] = set()
    names = []
    with zipfile.ZipFile(bundle) as zf:
        for info in zf.infolist():
            _accept(bundle, info.filename, seen, not info.is_dir())
            with zf.open(info) as source, (into / info.filename).open("wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
            names.append(info.filename)
    return names

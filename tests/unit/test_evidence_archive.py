"""Reproducible archives (the same bytes every time, fixed owners, modes, times), what the
unpacker refuses, and Ed25519 keys and signatures."""

from __future__ import annotations

import gzip
import hashlib
import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from audit_job.errors import ConfigError, EvidenceMismatch
from audit_job.evidence import archive, keys

MTIME = 1_764_547_200  # 2025-12-01T00:00:00Z


def files(folder: Path) -> list[tuple[str, Path]]:
    folder.mkdir(exist_ok=True)
    entries = []
    for name, body in (("run.json", b"{}\n"), ("b.csv", b"x\n" * 1000), ("README.txt", b"hi")):
        (folder / name).write_bytes(body)
        entries.append((name, folder / name))
    return entries


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_the_same_files_give_the_same_bytes(tmp_path: Path, suffix: str) -> None:
    first, second = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    archive.write_archive(first, files(tmp_path / "one"), MTIME)
    later = files(tmp_path / "two")  # other paths, other file times, other order
    archive.write_archive(second, list(reversed(later)), MTIME)
    assert first.read_bytes() == second.read_bytes()
    assert stat.S_IMODE(first.stat().st_mode) == 0o644
    unpacked = tmp_path / "out"
    unpacked.mkdir()
    assert archive.extract(first, unpacked) == ["README.txt", "b.csv", "run.json"]
    assert (unpacked / "b.csv").read_bytes() == b"x\n" * 1000


def test_tar_entries_and_gzip_header_are_fixed(tmp_path: Path) -> None:
    out = tmp_path / "a.tar.gz"
    archive.write_archive(out, files(tmp_path / "in"), MTIME)
    raw = out.read_bytes()
    assert raw[3] == 0  # FLG: no file name, no comment
    assert raw[4:8] == b"\0\0\0\0"  # MTIME 0
    with tarfile.open(out) as tar:
        for member in tar.getmembers():
            assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
            assert (member.mode, member.mtime, member.isreg()) == (0o644, MTIME, True)
    with gzip.open(out) as plain:
        assert b"root" not in plain.read()


def test_zip_entries_are_fixed(tmp_path: Path) -> None:
    out = tmp_path / "a.zip"
    archive.write_archive(out, files(tmp_path / "in"), MTIME)
    with zipfile.ZipFile(out) as zf:
        for info in zf.infolist():
            assert info.date_time == (2025, 12, 1, 0, 0, 0)
            assert info.external_attr >> 16 == 0o100644


def test_the_suffix_chooses_the_format(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"must end in \.tar\.gz, \.tgz or \.zip"):
        archive.write_archive(tmp_path / "a.rar", [], MTIME)
    assert not list(tmp_path.iterdir())  # nothing half-written


def _tar_with(tmp_path: Path, members: list[tarfile.TarInfo]) -> Path:
    out = tmp_path / "bad.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return out


@pytest.mark.parametrize(
    ("member", "problem"),
    [
        (tarfile.TarInfo("../escape"), "not a plain file name"),
        (tarfile.TarInfo("sub/file"), "not a plain file name"),
        (tarfile.TarInfo(".hidden"), "not a plain file name"),
    ],
)
def test_unsafe_entries_are_refused(tmp_path: Path, member: tarfile.TarInfo, problem: str) -> None:
    bad = _tar_with(tmp_path, [member])
    (tmp_path / "out").mkdir()
    with pytest.raises(EvidenceMismatch, match=problem):
        archive.extract(bad, tmp_path / "out")


def test_links_and_repeated_names_are_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("run.json")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    (tmp_path / "out").mkdir()
    with pytest.raises(EvidenceMismatch, match="not a regular file"):
        archive.extract(_tar_with(tmp_path, [link]), tmp_path / "out")
    twice = [tarfile.TarInfo("run.json"), tarfile.TarInfo("run.json")]
    with pytest.raises(EvidenceMismatch, match="appears twice"):
        archive.extract(_tar_with(tmp_path, twice), tmp_path / "out")


def test_a_corrupt_or_foreign_file_is_named(tmp_path: Path) -> None:
    good = tmp_path / "a.tar.gz"
    archive.write_archive(good, files(tmp_path / "in"), MTIME)
    raw = bytearray(good.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(bytes(raw))
    (tmp_path / "out").mkdir()
    with pytest.raises(EvidenceMismatch, match=r"broken\.tar\.gz: not a readable bundle archive"):
        archive.extract(broken, tmp_path / "out")
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(EvidenceMismatch, match=r"neither tar\.gz nor zip"):
        archive.extract(other, tmp_path / "out")


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(
    tmp_path: Path,
) -> None:
    prefix = str(tmp_path / "signer")
    private, public, fingerprint = keys.generate(prefix)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = keys.load_public(public)
    raw = loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert fingerprint == hashlib.sha256(raw).hexdigest() == keys.fingerprint(loaded)
    before = private.read_bytes()
    with pytest.raises(ConfigError, match="exists; not overwriting"):
        keys.generate(prefix)
    assert private.read_bytes() == before


def test_signatures_verify_with_the_right_key_only(tmp_path: Path) -> None:
    signer = keys.load_private(keys.generate(str(tmp_path / "a"))[0])
    other = keys.load_public(keys.generate(str(tmp_path / "b"))[1])
    manifest = b'{"files":[]}\n'
    document = keys.signature_document(signer, manifest)
    assert keys.check_signature(document, manifest, signer.public_key()) == keys.fingerprint(
        signer.public_key()
    )
    with pytest.raises(EvidenceMismatch, match="not with the given key"):
        keys.check_signature(document, manifest, other)
    with pytest.raises(EvidenceMismatch, match="does not verify"):
        keys.check_signature(document, manifest.replace(b"[]", b"[1]"), signer.public_key())
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        keys.load_private(tmp_path / "b.pub")

"""Ed25519 keys and the manifest's signature (the `cryptography` package).

A key's fingerprint is the SHA-256 of its 32 raw public bytes, in hex; standard tools give
the same: `openssl pkey -pubin -in KEY.pub -outform DER | tail -c 32 | sha256sum`.
The signature file (manifest.json.sig) is one canonical JSON line naming the algorithm,
the signed file, the key's fingerprint and the signature in base64.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit_job.errors import ConfigError, EvidenceMismatch
from audit_job.evidence.canonical import line
from audit_job.evidence.manifest import MANIFEST, SIGNATURE

ALGORITHM = "Ed25519"
PRIVATE_MODE = 0o600


def fingerprint(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def generate(prefix: str) -> tuple[Path, Path, str]:
    """PREFIX.key (private, PEM PKCS#8, mode 0600) and PREFIX.pub (public, PEM); refuses
    to overwrite either."""
    private_path, public_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for path in (private_path, public_path):
        if path.exists():
            raise ConfigError(f"--out {prefix}: {path} exists; not overwriting a key")
    if not private_path.parent.is_dir():
        raise ConfigError(f"--out {prefix}: folder {private_path.parent} does not exist")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # O_EXCL: a file that appeared since the check above is not overwritten either.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(public_pem)
    return private_path, public_path, fingerprint(key.public_key())


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read: {exc.strerror}") from None


def load_private(path: Path, what: str = "--sign") -> Ed25519PrivateKey:
    data = _read(path, what)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(
            f"{what} {path}: not an unencrypted PEM private key "
            "(make one with: audit-job evidence keygen --out PREFIX)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{what} {path}: not an Ed25519 key")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    data = _read(path, "--public-key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(f"--public-key {path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"--public-key {path}: not an Ed25519 key")
    return key


def signature_document(key: Ed25519PrivateKey, manifest: bytes) -> bytes:
    return line(
        {
            "algorithm": ALGORITHM,
            "signed_file": MANIFEST,
            "key_fingerprint": fingerprint(key.public_key()),
            "signature": base64.b64encode(key.sign(manifest)).decode("ascii"),
        }
    )


def signature_fingerprint(document: bytes) -> str:
    """The fingerprint a signature file names (EvidenceMismatch when it is malformed)."""
    return _parse(document)[0]


def _parse(document: bytes) -> tuple[str, bytes]:
    try:
        data = json.loads(document)
        if data["algorithm"] != ALGORITHM or data["signed_file"] != MANIFEST:
            raise ValueError("not an Ed25519 signature of manifest.json")
        return str(data["key_fingerprint"]), base64.b64decode(data["signature"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise EvidenceMismatch(f"{SIGNATURE}: malformed ({exc})") from None


def check_signature(document: bytes, manifest: bytes, key: Ed25519PublicKey) -> str:
    """The fingerprint, when the signature is `key`'s over `manifest`."""
    named, signature = _parse(document)
    expected = fingerprint(key)
    if named != expected:
        raise EvidenceMismatch(
            f"{SIGNATURE}: made with key {named}, not with the given key {expected}"
        )
    try:
        key.verify(signature, manifest)
    except InvalidSignature:
        raise EvidenceMismatch(
            f"{SIGNATURE}: the signature does not verify: manifest.json was changed, "
            "or signed with another key"
        ) from None
    return expected

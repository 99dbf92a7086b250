"""What a package must be: its expected size and digests, and the optional signed manifest.

With Ed25519 public keys configured, every package needs a manifest signed by one of them::

    custom_info = '{"manifest": "<base64 of the manifest JSON>", "signature": "<base64>"}'
    manifest    = {"version": "2.1.0", "size": 123456, "sha256": "<64 hex>"}

(``task_ext_info`` may carry the same two keys.) The signature covers the manifest's exact
bytes, so no canonical JSON is needed. It is checked before anything is downloaded; the
manifest's size and SHA-256 then bind the streamed bytes, and must agree with what the
platform announced. Ed25519 has no streaming mode, which is why a small manifest is signed
rather than the image itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.core.errors import ConfigError, UpgradeFailed
from agent.core.model import UpgradeRequest, UpgradeStatus
from agent.upgrade.download import Downloaded
from agent.upgrade.urls import host_of

if TYPE_CHECKING:  # cryptography is loaded only when keys are configured
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_MAX_MANIFEST = 4096


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the downloaded bytes must be (None: not known, not checked)."""

    size: int | None
    sha256: str | None
    md5: str | None
    signed: bool


def load_public_keys(paths: list[Path]) -> list[Ed25519PublicKey]:
    """Read Ed25519 public keys from PEM files.

    Raises:
        ConfigError: a file is unreadable or holds another kind of key.
    """
    if not paths:
        return []
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys = []
    for index, path in enumerate(paths):
        key_name = f"upgrades.public_keys.{index}"
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except OSError as exc:
            raise ConfigError([(key_name, str(path), f"cannot read: {exc.strerror}")]) from exc
        except ValueError as exc:
            raise ConfigError([(key_name, str(path), f"not a PEM public key: {exc}")]) from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError([(key_name, str(path), "is not an Ed25519 public key")])
        keys.append(key)
    return keys


def expectation(request: UpgradeRequest, keys: list[Ed25519PublicKey]) -> Expectation:
    """What the package must turn out to be; checks the signed manifest when keys are set.

    Raises:
        UpgradeFailed: ``verify_failed`` for a missing, malformed or badly signed manifest, or
            one that contradicts the platform's announcement.
    """
    sha256 = request.sha256.lower() if request.sha256 else None
    md5 = request.md5.lower() if request.md5 else None
    if sha256 is not None and not _HEX64.fullmatch(sha256):
        raise UpgradeFailed(UpgradeStatus.UNSUPPORTED, "sha256 must be 64 hex characters")
    if md5 is not None and not _HEX32.fullmatch(md5):
        raise UpgradeFailed(UpgradeStatus.UNSUPPORTED, "md5sum must be 32 hex characters")
    if not keys:
        return Expectation(request.file_size, sha256, md5, signed=False)
    manifest = _verified_manifest(request, keys)
    if manifest["version"] != request.version:
        raise _bad(f"manifest is for version {manifest['version']!r}, not {request.version!r}")
    if request.file_size is not None and manifest["size"] != request.file_size:
        raise _bad(f"manifest size {manifest['size']} differs from file_size {request.file_size}")
    if sha256 is not None and manifest["sha256"] != sha256:
        raise _bad("manifest sha256 differs from the announced one")
    return Expectation(manifest["size"], manifest["sha256"], md5, signed=True)


def require_digest(expected: Expectation, url: str, allow_unsigned_hosts: list[str]) -> None:
    """Refuse an offer that gives nothing to check the package against.

    An offer without ``sign`` (or ``md5sum``) and without a signed manifest would be installed
    unchecked; only hosts the configuration names in ``upgrades.allow_unsigned_hosts`` may
    send such packages.

    Raises:
        UpgradeFailed: ``verify_failed``.
    """
    if expected.sha256 is not None or expected.md5 is not None:
        return
    host = host_of(url)
    if host and host in allow_unsigned_hosts:
        return
    raise _bad(
        "the offer carries no digest (sign) to check the package against, and"
        f" upgrades.allow_unsigned_hosts does not name {host!r}"
    )


def check_download(result: Downloaded, expected: Expectation) -> None:
    """Compare a finished download with what it must be.

    Raises:
        UpgradeFailed: ``verify_failed``, naming what differed.
    """
    if expected.size is not None and result.size != expected.size:
        raise _bad(f"package is {result.size} bytes, {expected.size} expected")
    if expected.sha256 is not None and result.sha256 != expected.sha256:
        raise _bad(f"SHA-256 mismatch: got {result.sha256}, expected {expected.sha256}")
    if expected.md5 is not None and result.md5 != expected.md5:
        raise _bad(f"MD5 mismatch: got {result.md5}, expected {expected.md5}")


def _bad(reason: str) -> UpgradeFailed:
    return UpgradeFailed(UpgradeStatus.VERIFY_FAILED, reason)


def _carrier(request: UpgradeRequest) -> dict[str, Any] | None:
    if request.custom_info:
        try:
            value = json.loads(request.custom_info)
        except ValueError:
            value = None
        if isinstance(value, dict) and "manifest" in value:
            return value
    ext = request.task_ext_info or {}
    return ext if "manifest" in ext else None


def _verified_manifest(request: UpgradeRequest, keys: list[Ed25519PublicKey]) -> dict[str, Any]:
    from cryptography.exceptions import InvalidSignature

    carrier = _carrier(request)
    if carrier is None:
        raise _bad("a signed manifest is required (upgrades.public_keys is set) but none came")
    encoded, signature_b64 = carrier.get("manifest"), carrier.get("signature")
    if not isinstance(encoded, str) or not isinstance(signature_b64, str):
        raise _bad("manifest and signature must be base64 strings")
    try:
        data = base64.b64decode(encoded, validate=True)
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _bad(f"manifest or signature is not valid base64: {exc}") from exc
    if len(data) > _MAX_MANIFEST or len(signature) != 64:
        raise _bad("manifest too large or signature not 64 bytes")
    for key in keys:
        try:
            key.verify(signature, data)
        except InvalidSignature:
            continue
        break
    else:
        raise _bad("manifest signature does not verify with any configured key")
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise _bad(f"signed manifest is not JSON: {exc}") from exc
    if (
        not isinstance(manifest, dict)
        or not isinstance(manifest.get("version"), str)
        or type(manifest.get("size")) is not int
        or not isinstance(manifest.get("sha256"), str)
        or not _HEX64.fullmatch(manifest["sha256"].lower())
    ):
        raise _bad("signed manifest needs version (string), size (integer), sha256 (64 hex)")
    manifest["sha256"] = manifest["sha256"].lower()
    return manifest

"""TLS contexts for package downloads: built once per CA file and shared, not per download."""

from __future__ import annotations

from pathlib import Path

from agent.upgrade.download import _tls_context
from tests.support.tls import CertificateAuthority


def test_downloads_share_one_tls_context_per_ca_file(tmp_path: Path) -> None:
    """The same CA file gives the same context; another CA file (or the system's) another."""
    first = CertificateAuthority(tmp_path / "one").cert
    second = CertificateAuthority(tmp_path / "two").cert
    assert _tls_context(str(first)) is _tls_context(str(first))
    assert _tls_context(str(first)) is not _tls_context(str(second))
    assert _tls_context(None) is _tls_context(None)
    assert _tls_context(None) is not _tls_context(str(first))
    assert _tls_context(str(first)).verify_mode.name == "CERT_REQUIRED"

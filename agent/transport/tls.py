"""TLS towards the broker: the client context, and failures described so an operator can act.

``ssl`` reports a refused certificate as ``CERTIFICATE_VERIFY_FAILED`` whatever the cause; the
cause (unknown issuer, expired, host name mismatch) is in ``verify_message``, and that is what
the log line must say.
"""

from __future__ import annotations

import ssl

from agent.config import TlsSettings


def build_tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """A client TLS context for the broker.

    The CA comes from ``ca_file`` (or the system store); TLS 1.2 or newer; mutual TLS when a
    certificate is configured; hostname verification unless disabled. Turning hostname
    verification off never turns off the check that the certificate chains to a trusted CA.
    """
    context = ssl.create_default_context(
        cafile=str(tls.ca_file) if tls.ca_file is not None else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = tls.verify_hostname
    if tls.cert_file is not None and tls.key_file is not None:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return context


def describe_tls_error(exc: ssl.SSLError) -> str:
    """One line saying why a TLS handshake failed."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or str(exc)
        return f"TLS certificate verification failed: {detail}"
    return f"TLS handshake failed: {exc.reason or exc}"

"""Tencent Cloud API 3.0 request signatures: TC3-HMAC-SHA256 (signing, checking) and the older form.

TC3: the canonical request covers the method, path, query (as sent), the ``content-type`` and
``host`` headers and the SHA-256 of the body (empty for GET); the signing key is derived from
the secret key, the request's UTC date, the service name and ``tc3_request``. The older
``HmacSHA256``/``HmacSHA1`` form signs ``{method}{host}{path}?{sorted k=v}`` of the request's
parameters (``Signature`` left out) and sends the base64 HMAC as the ``Signature`` parameter.
A signature older than five minutes is refused, as the cloud does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import UTC, datetime
from urllib.parse import quote

ALGORITHM = "TC3-HMAC-SHA256"
MAX_SKEW_S = 300
_AUTH = re.compile(
    r"^TC3-HMAC-SHA256 Credential=(?P<id>[^/]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<service>[a-z]+)"
    r"/tc3_request, SignedHeaders=(?P<headers>[a-z0-9;\-]+), Signature=(?P<sig>[0-9a-f]{64})$"
)


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _canonical_query(query: str) -> str:
    return query  # the encoded query string exactly as the client sent it


def signature(
    *,
    secret_key: str,
    service: str,
    timestamp: int,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    signed_headers: list[str],
    body: bytes,
) -> str:
    """The hex signature of one request."""
    lower = {k.lower(): v for k, v in headers.items()}
    canonical_headers = "".join(f"{h}:{lower.get(h, '').strip().lower()}\n" for h in signed_headers)
    canonical = "\n".join(
        [
            method.upper(),
            quote(path or "/"),
            _canonical_query(query),
            canonical_headers,
            ";".join(signed_headers),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    scope = f"{date}/{service}/tc3_request"
    to_sign = "\n".join(
        [ALGORITHM, str(timestamp), scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(_hmac(_hmac(("TC3" + secret_key).encode(), date), service), "tc3_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def sign_headers(
    *,
    secret_id: str,
    secret_key: str,
    service: str,
    action: str,
    version: str,
    host: str,
    body: bytes,
    timestamp: int,
) -> dict[str, str]:
    """Headers for a signed JSON POST (what an SDK sends)."""
    headers = {"Content-Type": "application/json; charset=utf-8", "Host": host}
    signed = ["content-type", "host"]
    sig = signature(
        secret_key=secret_key,
        service=service,
        timestamp=timestamp,
        method="POST",
        path="/",
        query="",
        headers=headers,
        signed_headers=signed,
        body=body,
    )
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    return {
        **headers,
        "X-TC-Action": action,
        "X-TC-Version": version,
        "X-TC-Timestamp": str(timestamp),
        "Authorization": (
            f"{ALGORITHM} Credential={secret_id}/{date}/{service}/tc3_request, "
            f"SignedHeaders={';'.join(signed)}, Signature={sig}"
        ),
    }


def verify(
    *,
    secret_id: str,
    secret_key: str,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    now: float,
) -> str | None:
    """None when the request is signed with these credentials, else the error code to return."""
    lower = {k.lower(): v for k, v in headers.items()}
    match = _AUTH.match(lower.get("authorization", ""))
    if match is None:
        return "AuthFailure.SignatureFailure"
    if match["id"] != secret_id:
        return "AuthFailure.SecretIdNotFound"
    try:
        timestamp = int(lower.get("x-tc-timestamp", ""))
    except ValueError:
        return "AuthFailure.SignatureFailure"
    if abs(now - timestamp) > MAX_SKEW_S:
        return "AuthFailure.SignatureExpire"
    expected = signature(
        secret_key=secret_key,
        service=match["service"],
        timestamp=timestamp,
        method=method,
        path=path,
        query=query,
        headers=lower,
        signed_headers=match["headers"].split(";"),
        body=body,
    )
    if not hmac.compare_digest(expected, match["sig"]):
        return "AuthFailure.SignatureFailure"
    return None


_LEGACY_DIGESTS = {"HmacSHA256": hashlib.sha256, "HmacSHA1": hashlib.sha1}


def verify_legacy(
    *,
    secret_id: str,
    secret_key: str,
    method: str,
    host: str,
    path: str,
    params: dict[str, str],
    now: float,
) -> str | None:
    """None when parameters carry a valid older-form signature, else the error code."""
    method_name = params.get("SignatureMethod", "HmacSHA1")
    digest = _LEGACY_DIGESTS.get(method_name)
    given = params.get("Signature", "")
    if digest is None or not given:
        return "AuthFailure.SignatureFailure"
    if params.get("SecretId") != secret_id:
        return "AuthFailure.SecretIdNotFound"
    try:
        timestamp = int(params.get("Timestamp", ""))
    except ValueError:
        return "AuthFailure.SignatureFailure"
    if abs(now - timestamp) > MAX_SKEW_S:
        return "AuthFailure.SignatureExpire"
    signed = {k.replace("_", "."): v for k, v in params.items() if k != "Signature"}
    text = "&".join(f"{k}={signed[k]}" for k in sorted(signed))
    message = f"{method.upper()}{host}{path}?{text}"
    expected = base64.b64encode(
        hmac.new(secret_key.encode(), message.encode(), digest).digest()
    ).decode()
    if not hmac.compare_digest(expected.encode(), given.encode()):
        return "AuthFailure.SignatureFailure"
    return None

"""Huawei Cloud API Gateway request signatures (``SDK-HMAC-SHA256``): signing and checking.

The algorithm is the public one the cloud SDKs implement (as ``huaweicloudsdkcore``'s signer
does it): the canonical request is the method, the path with every segment
percent-encoded and a trailing ``/``, the sorted and encoded query, the signed headers
(lower-cased names, trimmed values), and the SHA-256 of the body (or the value of
``X-Sdk-Content-Sha256``, ``UNSIGNED-PAYLOAD`` for multipart uploads). The string to sign is
the algorithm, ``X-Sdk-Date`` and the hash of the canonical request; the signature is its
HMAC-SHA256 under the secret key, in hex. A date more than 15 minutes off is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote, unquote

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
MAX_SKEW_S = 15 * 60
EMPTY_HASH = hashlib.sha256(b"").hexdigest()
_AUTH = re.compile(
    r"^SDK-HMAC-SHA256\s+Access=(?P<ak>[^,\s]+),\s*SignedHeaders=(?P<headers>[a-z0-9;\-]+),"
    r"\s*Signature=(?P<sig>[0-9a-f]{64})$"
)


def _encode(text: str) -> str:
    return quote(text, safe="~")


def canonical_uri(path: str) -> str:
    """Each segment encoded, always ending in ``/``."""
    uri = "/".join(_encode(part) for part in unquote(path).split("/"))
    return uri if uri.endswith("/") else uri + "/"


def canonical_query(raw_query: str) -> str:
    """The query's pairs, decoded, sorted and encoded again."""
    pairs = sorted(parse_qsl(raw_query, keep_blank_values=True))
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in pairs)


def signature(
    *,
    secret_key: str,
    method: str,
    path: str,
    raw_query: str,
    headers: dict[str, str],
    signed_headers: list[str],
    body: bytes,
) -> str:
    """The hex signature of one request (``headers`` keyed by lower-case name)."""
    lower = {k.lower(): v for k, v in headers.items()}
    payload_hash = lower.get("x-sdk-content-sha256") or (
        hashlib.sha256(body).hexdigest() if body else EMPTY_HASH
    )
    canonical = "\n".join(
        [
            method.upper(),
            canonical_uri(path),
            canonical_query(raw_query),
            "".join(f"{h}:{lower.get(h, '').strip()}\n" for h in signed_headers),
            ";".join(signed_headers),
            payload_hash,
        ]
    )
    to_sign = "\n".join(
        [ALGORITHM, lower.get("x-sdk-date", ""), hashlib.sha256(canonical.encode()).hexdigest()]
    )
    return hmac.new(secret_key.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


def verify(  # noqa: PLR0911 - one return per way a signature is wrong
    *,
    access_key: str,
    secret_key: str,
    method: str,
    path: str,
    raw_query: str,
    headers: dict[str, str],
    body: bytes,
    now: float,
) -> str | None:
    """None when the request is signed with this key pair, else what is wrong with it."""
    lower = {k.lower(): v for k, v in headers.items()}
    match = _AUTH.match(lower.get("authorization", "").strip())
    if match is None:
        return "the request is not signed with SDK-HMAC-SHA256"
    if not hmac.compare_digest(match["ak"].encode(), access_key.encode()):
        return "the access key is unknown"
    try:
        moment = datetime.strptime(lower.get("x-sdk-date", ""), DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return "X-Sdk-Date is missing or not yyyyMMdd'T'HHmmss'Z'"
    if abs(now - moment.timestamp()) > MAX_SKEW_S:
        return "X-Sdk-Date is more than 15 minutes off"
    signed = match["headers"].split(";")
    if "x-sdk-date" not in signed:
        return "X-Sdk-Date is not among the signed headers"
    expected = signature(
        secret_key=secret_key,
        method=method,
        path=path,
        raw_query=raw_query,
        headers=lower,
        signed_headers=signed,
        body=body,
    )
    if not hmac.compare_digest(expected, match["sig"]):
        return "the signature does not verify"
    return None


def sign_headers(
    *,
    access_key: str,
    secret_key: str,
    method: str,
    host: str,
    path: str,
    raw_query: str,
    body: bytes,
    now: float,
    content_type: str = "application/json",
) -> dict[str, str]:
    """Headers for a signed request (what the SDK sends)."""
    headers = {
        "Content-Type": content_type,
        "Host": host,
        "X-Sdk-Date": datetime.fromtimestamp(now, UTC).strftime(DATE_FORMAT),
    }
    signed = sorted(h.lower() for h in headers)
    sig = signature(
        secret_key=secret_key,
        method=method,
        path=path,
        raw_query=raw_query,
        headers=headers,
        signed_headers=signed,
        body=body,
    )
    headers["Authorization"] = (
        f"{ALGORITHM} Access={access_key}, SignedHeaders={';'.join(signed)}, Signature={sig}"
    )
    return headers

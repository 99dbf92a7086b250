"""The emulator's SDK-HMAC-SHA256 check against requests signed by the official SDK's signer."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

from agent.sim.emulator.huawei_auth import verify

AK, SK = "AKTEST0123456789", "secret-key-for-tests"
PATH = "/v5/iot/project-1/batchtasks"


def _signed_by_the_sdk(body: bytes) -> tuple[dict[str, str], float]:
    """Headers the SDK's own signer puts on a request, and the moment it stamped."""
    request = SdkRequest(
        method="POST",
        schema="https",
        host="127.0.0.1:8443",
        resource_path=PATH,
        query_params=[("limit", 10), ("marker", "a b")],
        header_params={"Content-Type": "application/json"},
        body=body,
    )
    Signer(SimpleNamespace(ak=AK, sk=SK)).sign(request)
    headers = {name: str(value) for name, value in request.header_params.items()}
    stamped = datetime.strptime(headers["X-Sdk-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return headers, stamped.timestamp()


def _verify(headers: dict[str, str], body: bytes, now: float, secret: str = SK) -> str | None:
    return verify(
        access_key=AK,
        secret_key=secret,
        method="POST",
        path=PATH,
        raw_query="limit=10&marker=a%20b",
        headers=headers,
        body=body,
        now=now,
    )


@pytest.mark.parametrize("offset_s", [0, 14 * 60, -14 * 60])
def test_a_request_the_sdk_signed_verifies_within_fifteen_minutes(offset_s: int) -> None:
    """The check agrees with the SDK's signer, including a clock up to 15 minutes apart."""
    body = b'{"task_type":"createCommands"}'
    headers, stamped = _signed_by_the_sdk(body)
    assert _verify(headers, body, stamped + offset_s) is None


@pytest.mark.parametrize("offset_s", [16 * 60, -16 * 60])
def test_a_date_more_than_fifteen_minutes_off_is_refused(offset_s: int) -> None:
    """A replayed or badly clocked request is refused, saying why."""
    body = b"{}"
    headers, stamped = _signed_by_the_sdk(body)
    assert _verify(headers, body, stamped + offset_s) == "X-Sdk-Date is more than 15 minutes off"


def test_a_changed_body_or_another_secret_does_not_verify() -> None:
    """The signature covers the body and is keyed by the secret."""
    headers, stamped = _signed_by_the_sdk(b'{"a":1}')
    assert _verify(headers, b'{"a":2}', stamped) == "the signature does not verify"
    assert _verify(headers, b'{"a":1}', stamped, secret="other") == "the signature does not verify"

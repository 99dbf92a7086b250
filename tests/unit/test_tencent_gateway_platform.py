"""Tencent IoT Hub gateway operations as the platform reads and answers them.

Per 拓扑关系管理.md and 代理子设备上下线.md (docs/platforms.md, Sources).
"""

from __future__ import annotations

import json

import pytest

from agent.core.errors import RemoteProtocolError
from agent.profiles.tencent_iothub import gateway_platform as gp

KEY = "MDEyMzQ1Njc4OWFiY2RlZg=="  # a test key, used as a string as the SDKs do
TOPIC = "$gateway/operation/GWPRODUCT/gw1"


def test_the_bind_signature_matches_the_reference_vector() -> None:
    """HMAC-SHA1 of "SUBPIDXXXXsub1;123456;1700000000" under the key string, base64."""
    assert gp.bind_signature(KEY, "SUBPIDXXXX", "sub1", 123456, 1700000000) == (
        "mdSdybBhMuDJo5Y1AeczCXOUoSs="
    )


def _bind(**fields: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "product_id": "SUBPIDXXXX", "device_name": "sub1", "random": 123456,
        "timestamp": 1700000000, "signmethod": "hmacsha1", "authtype": "psk",
        "signature": "mdSdybBhMuDJo5Y1AeczCXOUoSs=",
    }  # fmt: skip
    return {**entry, **fields}


@pytest.mark.parametrize(
    ("entry", "code"),
    [
        (_bind(), 0),
        (_bind(signature="AAAA"), 803),
        (_bind(random=654321), 803),
        (_bind(signmethod="md5"), 804),
        (_bind(authtype="certificate"), 810),
        (_bind(random="123456"), 801),
        (_bind(timestamp=None), 801),
        ({"product_id": "SUBPIDXXXX"}, 801),
    ],
)
def test_bind_entries_get_the_documented_codes(entry: dict[str, object], code: int) -> None:
    """0 for the SDKs' signature; 801/803/804/810 name what is wrong."""
    assert gp.bind_problem(entry, KEY) == code


def test_requests_decode_and_replies_keep_the_type() -> None:
    """The doc's online request; the answer goes to the gateway's result topic."""
    body = {"type": "online", "payload": {"devices": [
        {"product_id": "CFCSQ5EAG7", "device_name": "onlinedev00"}]}}  # fmt: skip
    request = gp.decode(TOPIC, json.dumps(body).encode())
    assert (request.type, request.gateway_product, request.gateway_name) == (
        "online", "GWPRODUCT", "gw1"
    )  # fmt: skip
    answer = gp.reply(request, [{"product_id": "CFCSQ5EAG7", "device_name": "onlinedev00",
                                 "result": 0}])  # fmt: skip
    assert answer.topic == "$gateway/operation/result/GWPRODUCT/gw1"
    assert json.loads(answer.payload) == {"type": "online", "payload": {"devices": [
        {"product_id": "CFCSQ5EAG7", "device_name": "onlinedev00", "result": 0}]}}  # fmt: skip


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[]", b'{"type": "reboot"}', b'{"type": "bind"}',
     b'{"type": "online", "payload": {"devices": []}}'],
)  # fmt: skip
def test_malformed_requests_are_refused_with_a_reason(payload: bytes) -> None:
    """Not JSON, unknown types and empty device lists are protocol errors."""
    with pytest.raises(RemoteProtocolError):
        gp.decode(TOPIC, payload)

"""Tencent IoT Hub gateway operations, as the platform answers them, pure.

A gateway publishes ``{"type": op, "payload": {"devices": [...]}}`` on
``$gateway/operation/{pid}/{dn}`` (its own ids) with ``op`` one of ``bind``, ``unbind``,
``online``, ``offline`` or ``describe_sub_devices``; the platform answers on
``$gateway/operation/result/{pid}/{dn}`` with the same ``type`` and each device's ``result``
(拓扑关系管理.md, 代理子设备上下线.md; see docs/platforms.md, Sources). Result codes: 0 success, -1
the gateway is not bound to the sub-device, 801 bad parameters, 802 no such device, 803 signature
check failed, 804 signing method not supported, 806 already bound (to another gateway), 808
operation not allowed, 810 unsupported sub-device. A ``bind`` carries a signature: base64 of
``HMAC(sub-device secret as a string, "{product_id}{device_name};{random};{timestamp}")`` with
``signmethod`` hmacsha1 or hmacsha256, as every official SDK computes it. The state (who is bound
and online) belongs to the caller; this module only reads requests and writes replies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from agent.core.errors import RemoteProtocolError
from agent.core.model import Publish
from agent.profiles.base import dump_json, parse_json

OPERATIONS = ("bind", "unbind", "online", "offline", "describe_sub_devices")
OK = 0
NOT_BOUND = -1
BAD_PARAMETERS = 801
NO_DEVICE = 802
BAD_SIGNATURE = 803
BAD_SIGN_METHOD = 804
ALREADY_BOUND = 806
NOT_ALLOWED = 808
UNSUPPORTED = 810
_DIGESTS = {"hmacsha1": hashlib.sha1, "hmacsha256": hashlib.sha256}


@dataclass(frozen=True, slots=True)
class GatewayRequest:
    """One operation a gateway asks for: its type and the devices it names (raw objects)."""

    gateway_product: str
    gateway_name: str
    type: str
    devices: list[dict[str, Any]]


def decode(topic: str, payload: bytes) -> GatewayRequest:
    """Read a request on ``$gateway/operation/{pid}/{dn}``.

    Raises:
        RemoteProtocolError: not a gateway operation (the reason names the field).
    """
    levels = topic.split("/")
    if len(levels) != 4 or levels[:2] != ["$gateway", "operation"]:
        raise RemoteProtocolError(f"not a gateway operation topic: {topic!r}")
    body = parse_json(payload, what="gateway operation")
    if not isinstance(body, dict):
        raise RemoteProtocolError("gateway operation must be a JSON object")
    kind = body.get("type")
    if kind not in OPERATIONS:
        raise RemoteProtocolError(f"gateway operation type {kind!r} is not one of {OPERATIONS}")
    devices: list[dict[str, Any]] = []
    if kind != "describe_sub_devices":
        inner = body.get("payload")
        listed = inner.get("devices") if isinstance(inner, dict) else None
        if not isinstance(listed, list) or not listed:
            raise RemoteProtocolError(f"{kind}: payload.devices must be a non-empty list")
        devices = [d if isinstance(d, dict) else {} for d in listed]
    return GatewayRequest(levels[2], levels[3], str(kind), devices)


def names(device: dict[str, Any]) -> tuple[str, str] | None:
    """``(product_id, device_name)`` of a listed device, or None when either is missing."""
    product_id, device_name = device.get("product_id"), device.get("device_name")
    if not isinstance(product_id, str) or not isinstance(device_name, str):
        return None
    if not product_id or not device_name:
        return None
    return product_id, device_name


def bind_signature(secret: str, product_id: str, device_name: str, random: int, ts: int) -> str:
    """The SDKs' bind signature with HMAC-SHA1 (the key is the secret string, not decoded)."""
    return _sign(secret, f"{product_id}{device_name};{random};{ts}", "hmacsha1")


def _sign(secret: str, text: str, method: str) -> str:
    digest = hmac.new(secret.encode(), text.encode(), _DIGESTS[method]).digest()
    return base64.b64encode(digest).decode()


def bind_problem(device: dict[str, Any], secret: str) -> int:  # noqa: PLR0911 - one per code
    """The result code for binding ``device`` (whose secret is ``secret``) on signature grounds.

    0 when the signature verifies; 801 for missing or mistyped fields, 804 for a signing
    method other than hmacsha1/hmacsha256, 810 for ``authtype`` certificate (the emulator has
    no certificates to hash), 803 for a signature that does not verify.
    """
    found = names(device)
    random, ts = device.get("random"), device.get("timestamp")
    signature, method = device.get("signature"), device.get("signmethod")
    if found is None or not isinstance(signature, str):
        return BAD_PARAMETERS
    if not isinstance(random, int) or isinstance(random, bool):
        return BAD_PARAMETERS
    if not isinstance(ts, int) or isinstance(ts, bool):
        return BAD_PARAMETERS
    if method not in _DIGESTS:
        return BAD_SIGN_METHOD
    if device.get("authtype", "psk") != "psk":
        return UNSUPPORTED
    expected = _sign(secret, f"{found[0]}{found[1]};{random};{ts}", str(method))
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        return BAD_SIGNATURE
    return OK


def reply(request: GatewayRequest, devices: list[dict[str, Any]]) -> Publish:
    """The platform's answer: the same ``type`` and the devices with their results."""
    topic = f"$gateway/operation/result/{request.gateway_product}/{request.gateway_name}"
    body: dict[str, Any] = {"type": request.type, "payload": {"devices": devices}}
    if request.type == "describe_sub_devices":
        body["result"] = OK
    return Publish(topic=topic, payload=dump_json(body), qos=1)

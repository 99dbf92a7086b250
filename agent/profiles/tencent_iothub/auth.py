"""Tencent IoT Hub connection identity: client id, signed username and HMAC password.

Username ``{product_id}{device_name};12010126;{connid};{expiry}`` (``12010126`` is the fixed
sdkappid of the documentation; ``expiry`` is absolute Unix seconds); password
``hex(HMAC(base64decode(secret), username)) + ";hmacsha256"`` (or ``;hmacsha1``). Source: IoT
Hub "设备基于 TCP 的 MQTT 接入", section 密钥认证设备接入指引.

The documentation asks for a random ``connid``. Profiles draw no random numbers, so it is
derived from the client id and the moment of the attempt (microseconds included): every
attempt gets a different one, and the same inputs give the same identity in tests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from datetime import datetime
from typing import Literal

from agent.core.errors import ConfigError

SDKAPPID = "12010126"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DIGESTS = {"hmacsha256": hashlib.sha256, "hmacsha1": hashlib.sha1}

Signature = Literal["hmacsha256", "hmacsha1"]


def client_id(product_id: str, device_name: str) -> str:
    """``{product_id}{device_name}``."""
    return f"{product_id}{device_name}"


def connid(client: str, now: datetime) -> str:
    """Five characters of ``[0-9A-Za-z]`` that differ from one connection attempt to the next."""
    seed = hashlib.sha256(f"{client}|{now.isoformat()}".encode()).digest()
    number = int.from_bytes(seed[:8], "big")
    chars = []
    for _ in range(5):
        number, index = divmod(number, len(_ALPHABET))
        chars.append(_ALPHABET[index])
    return "".join(chars)


def username(product_id: str, device_name: str, conn: str, expiry: int) -> str:
    """The signed username."""
    return f"{client_id(product_id, device_name)};{SDKAPPID};{conn};{expiry}"


def password(secret: str, user: str, signature: Signature = "hmacsha256") -> str:
    """The HMAC password for ``user``.

    Raises:
        ConfigError: the device secret is not base64.
    """
    try:
        key = base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(
            [("device.secret_file", None, "is not a base64 device secret (DevicePsk)")]
        ) from exc
    token = hmac.new(key, user.encode(), _DIGESTS[signature]).hexdigest()
    return f"{token};{signature}"


# The documentation's sdkappid, and the one the official C and Python SDKs send
# (qcloud-iot-sdk-embedded-c ``qcloud_iot_common.h``, iot-device-python ``protocol.py``). That
# the platform accepts both is inferred from the official SDKs sending 21010406.
KNOWN_SDKAPPIDS = (SDKAPPID, "21010406")


def connect_problem(  # noqa: PLR0911 - one return per refusal reason
    *,
    client: str,
    user: str | None,
    given_password: str | None,
    product_id: str,
    device_name: str,
    secret: str,
    now: int,
) -> str | None:
    """Why IoT Hub would refuse this CONNECT of a key device, or None when it is accepted.

    The platform's side of :func:`username` and :func:`password`: the client id is
    ``{product_id}{device_name}``, the username ``{client id};{sdkappid};{connid};{expiry}`` with
    an expiry in the future, the password the HMAC of the username under the base64-decoded
    device secret, ``;hmacsha256`` or ``;hmacsha1`` (设备基于 TCP 的 MQTT 接入). Each reason names
    the field.
    """
    expected_client = client_id(product_id, device_name)
    if client != expected_client:
        return f"client id {client!r} is not {{ProductId}}{{DeviceName}} ({expected_client!r})"
    parts = (user or "").split(";")
    if len(parts) != 4:
        return "username must be {ProductId}{DeviceName};{sdkappid};{connid};{expiry}"
    name, appid, conn, expiry = parts
    if name != expected_client:
        return f"username names {name!r}, not the client id {expected_client!r}"
    if appid not in KNOWN_SDKAPPIDS:
        return f"username sdkappid {appid!r} is not {SDKAPPID}"
    if not conn:
        return "username connid is empty"
    if not expiry.isdigit():
        return f"username expiry {expiry!r} is not Unix seconds"
    if int(expiry) <= now:
        return f"username expiry {expiry} has passed (signature expired)"
    token, _, method = (given_password or "").partition(";")
    if method not in _DIGESTS:
        return "password must be {hex HMAC};hmacsha256 or {hex HMAC};hmacsha1"
    try:
        key = base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        return "the device secret registered for this device is not base64"
    wanted = hmac.new(key, (user or "").encode(), _DIGESTS[method]).hexdigest()
    if not hmac.compare_digest(token.encode(), wanted.encode()):
        return f"password HMAC ({method}) does not match the username and the device secret"
    return None

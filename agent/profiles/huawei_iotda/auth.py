"""Huawei IoTDA connection identity: ``{device_id}_0_{sign_type}_{YYYYMMDDHH}`` and password.

The password is the lower-case hex HMAC-SHA256 of the device secret keyed with the same UTC
``YYYYMMDDHH`` timestamp that ends the client id (IoTDA doc iot_06_v5_3009, "Device Connection
Authentication"; see docs/platforms.md, Sources; the official SDKs compute it the same way).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

from agent.core.model import ConnectIdentity


def timestamp(now: datetime) -> str:
    """The ``YYYYMMDDHH`` form of ``now`` in UTC."""
    return now.astimezone(UTC).strftime("%Y%m%d%H")


def client_id(device_id: str, sign_type: int, stamp: str) -> str:
    """The MQTT client id; identity type 0 means "device id"."""
    return f"{device_id}_0_{sign_type}_{stamp}"


def password(secret: str, stamp: str) -> str:
    """HMAC-SHA256(key=timestamp, message=secret), hex encoded."""
    return hmac.new(stamp.encode(), secret.encode(), hashlib.sha256).hexdigest()


def identity(
    device_id: str, sign_type: int, secret: str, now: datetime, anchor: datetime | None
) -> ConnectIdentity:
    """Client id, username and password for an attempt at ``now``.

    With sign type 0 the platform does not check the timestamp, so it is taken from ``anchor``
    (when the device's session began): the client id then stays the same across reconnects and
    restarts, and so does the broker-side session with what it queued.
    """
    moment = anchor if (sign_type == 0 and anchor is not None) else now
    stamp = timestamp(moment)
    return ConnectIdentity(
        client_id=client_id(device_id, sign_type, stamp),
        username=device_id,
        password=password(secret, stamp),
    )

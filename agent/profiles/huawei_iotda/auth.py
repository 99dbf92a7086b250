"""Huawei IoTDA connection identity: ``{device_id}_0_{sign_type}_{YYYYMMDDHH}`` and password.

The password is the lower-case hex HMAC-SHA256 of the device secret keyed with the same UTC
``YYYYMMDDHH`` timestamp that ends the client id (IoTDA API reference, "Device Connection
Authentication"; the official SDKs compute it the same way).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime


def timestamp(now: datetime) -> str:
    """The ``YYYYMMDDHH`` form of ``now`` in UTC."""
    return now.astimezone(UTC).strftime("%Y%m%d%H")


def client_id(device_id: str, sign_type: int, stamp: str) -> str:
    """The MQTT client id; identity type 0 means "device id"."""
    return f"{device_id}_0_{sign_type}_{stamp}"


def password(secret: str, stamp: str) -> str:
    """HMAC-SHA256(key=timestamp, message=secret), hex encoded."""
    return hmac.new(stamp.encode(), secret.encode(), hashlib.sha256).hexdigest()

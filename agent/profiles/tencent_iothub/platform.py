"""Tencent IoT Hub platform side: shadow requests and custom-topic publishing, as the cloud.

Used by the task service emulator and by tests playing the platform. The shadow's state lives
with the emulator (:class:`agent.sim.shadows.TencentShadow`), which keeps one device's shadow
the way the documentation describes it: ``UpdateShadow`` merges
into ``desired`` and pushes a ``delta`` with the changed keys; a device ``update`` must carry
the current version, none, or 0 (the official Java SDK sends 0 "to avoid the 5005 version
conflict" in ``TXShadowConnection.java``, so 0 is read as "no check": an inference, the
documentation says nothing of 0) or is refused with 5005 and
the full document; ``null`` deletes a key, ``"desired": null`` the whole desired half; every
accepted change bumps the version. Documents and replies carry ``metadata`` (each top-level
key's last update time) as 设备影子详情.md shows it: an empty shadow is
``{"state":{},"metadata":{},"version":0}``. Timestamps are passed in: this side is as pure as
the device side.
"""

from __future__ import annotations

from typing import Any, Literal

from agent.core.errors import RemoteProtocolError
from agent.core.model import Model, Publish
from agent.profiles.base import parse_json
from agent.profiles.tencent_iothub import wire

VERSION_CONFLICT = 5005
NO_VERSION_CHECK = 0  # an update with this version is not checked against the shadow's


class ShadowRequest(Model):
    """A device's ``get`` or ``update`` on ``$shadow/operation/{pid}/{dn}``."""

    type: Literal["get", "update"]
    client_token: str | None = None
    version: int | None = None
    state: dict[str, Any] | None = None


class TencentIothubPlatform:
    """Builds downlinks for one device and decodes its shadow requests."""

    def __init__(self, product_id: str, device_name: str) -> None:
        self.product_id = product_id
        self.device_name = device_name
        self.shadow_topic = f"$shadow/operation/{product_id}/{device_name}"

    def uplink_filters(self) -> list[str]:
        """Topic filters the platform listens on for this device."""
        return [self.shadow_topic]

    def message(self, suffix: str, payload: bytes, *, qos: Literal[0, 1] = 1) -> Publish:
        """A ``PublishMessage`` subtask: the payload verbatim on ``{pid}/{dn}/{suffix}``."""
        topic = f"{self.product_id}/{self.device_name}/{suffix}"
        return Publish(topic=topic, payload=payload, qos=qos)

    def decode_uplink(self, topic: str, payload: bytes) -> ShadowRequest:
        """Read a device's shadow request.

        Raises:
            RemoteProtocolError: not a shadow request this side understands.
        """
        if topic != self.shadow_topic:
            raise RemoteProtocolError(f"not a shadow request topic: {topic!r}")
        body = wire.parse(wire.ShadowUp, parse_json(payload), what="shadow request")
        if body.type not in ("get", "update"):
            raise RemoteProtocolError(f"shadow request of unknown type {body.type!r}")
        return ShadowRequest(
            type=body.type,
            client_token=body.client_token,
            version=body.version,
            state=body.state,
        )

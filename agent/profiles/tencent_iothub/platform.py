"""Tencent IoT Hub platform side: the shadow service and custom-topic publishing, as the cloud.

Used by the task service emulator and by tests playing the platform. :class:`TencentShadow`
keeps one device's shadow the way the documentation describes it: ``UpdateShadow`` merges
into ``desired`` and pushes a ``delta`` with the changed keys; a device ``update`` must carry
the current version, none, or 0 (the official Java SDK sends 0 "to avoid the 5005 version
conflict", so 0 is read as "no check": reference §3.3, inferred) or is refused with 5005 and
the full document; ``null`` deletes a key, ``"desired": null`` the whole desired half; every
accepted change bumps the version. Documents and replies carry ``metadata`` (each top-level
key's last update time) as 设备影子详情.md shows it: an empty shadow is
``{"state":{},"metadata":{},"version":0}``. Timestamps are passed in: this side is as pure as
the device side.
"""

from __future__ import annotations

from typing import Any, Literal

from agent.core.errors import RemoteProtocolError
from agent.core.merge_patch import merge, pending
from agent.core.model import Model, Publish
from agent.profiles.base import dump_json, parse_json
from agent.profiles.tencent_iothub import wire

VERSION_CONFLICT = 5005
NO_VERSION_CHECK = 0  # an update with this version is not checked against the shadow's


class ShadowRequest(Model):
    """A device's ``get`` or ``update`` on ``$shadow/operation/{pid}/{dn}``."""

    type: Literal["get", "update"]
    client_token: str | None = None
    version: int | None = None
    state: dict[str, Any] | None = None


class TencentShadow:
    """One device's shadow document and the replies the shadow service gives."""

    def __init__(self, product_id: str, device_name: str) -> None:
        self.result_topic = f"$shadow/operation/result/{product_id}/{device_name}"
        self.desired: dict[str, Any] | None = None
        self.reported: dict[str, Any] = {}
        self.version = 0
        # Per half, each top-level key's last update time (the documents' ``metadata``).
        self._stamps: dict[str, dict[str, int]] = {"reported": {}, "desired": {}}

    def _stamp(self, half: str, change: dict[str, Any] | None, now: int) -> dict[str, Any]:
        """Record the update time of the keys ``change`` sets; their ``metadata`` entries."""
        stamps = self._stamps[half]
        if change is None:
            stamps.clear()
            return {}
        for key, value in change.items():
            if value is None:
                stamps.pop(key, None)
            else:
                stamps[key] = now
        return {key: {"timestamp": now} for key, value in change.items() if value is not None}

    def _metadata(self, half: str, keys: dict[str, Any]) -> dict[str, Any]:
        stamps = self._stamps[half]
        return {key: {"timestamp": stamps[key]} for key in keys if key in stamps}

    def set_desired(self, change: dict[str, Any], now: int) -> Publish | None:
        """Merge ``change`` into desired (an ``UpdateShadow`` subtask); the delta to push.

        Returns None when nothing differs from reported (there is no delta to push).
        """
        self.desired = merge(self.desired or {}, change)
        self._stamp("desired", change, now)
        self.version += 1
        delta = pending(change, self.reported)
        if not delta:
            return None
        body = {
            "type": "delta",
            "timestamp": now,
            "payload": {
                "state": delta,
                "metadata": self._metadata("desired", delta),
                "version": self.version,
                "timestamp": now,
            },
        }
        return Publish(topic=self.result_topic, payload=dump_json(body), qos=0)

    def document(self) -> dict[str, Any]:
        """The document as a get reply (and a 5005 refusal) carries it."""
        state: dict[str, Any] = {}
        metadata: dict[str, Any] = {}
        if self.reported:
            state["reported"] = self.reported
            metadata["reported"] = self._metadata("reported", self.reported)
        if self.desired:
            state["desired"] = self.desired
            metadata["desired"] = self._metadata("desired", self.desired)
            delta = pending(self.desired, self.reported)
            if delta:
                state["delta"] = delta
                metadata["delta"] = self._metadata("desired", delta)
        return {"state": state, "metadata": metadata, "version": self.version}

    def handle(self, request: ShadowRequest, now: int) -> Publish:
        """The shadow service's reply to a device request."""
        if request.type == "get":
            return self._reply("get", 0, request, {**self.document(), "timestamp": now}, now)
        if request.version not in (None, NO_VERSION_CHECK, self.version):
            payload = {**self.document(), "timestamp": now}
            return self._reply("update", VERSION_CONFLICT, request, payload, now)
        state = request.state or {}
        metadata: dict[str, Any] = {}
        if "reported" in state:
            self.reported = merge(self.reported, state["reported"] or {})
            metadata["reported"] = self._stamp("reported", state["reported"] or {}, now)
        if "desired" in state:
            cleared = state["desired"]
            self.desired = None if cleared is None else merge(self.desired or {}, cleared) or None
            stamped = self._stamp("desired", cleared, now)
            if stamped:
                metadata["desired"] = stamped
        self.version += 1
        payload = {"state": state, "metadata": metadata, "version": self.version, "timestamp": now}
        return self._reply("update", 0, request, payload, now)

    def _reply(
        self, kind: str, result: int, request: ShadowRequest, payload: dict[str, Any], now: int
    ) -> Publish:
        body: dict[str, Any] = {"type": kind, "result": result, "timestamp": now}
        if request.client_token is not None:
            body["clientToken"] = request.client_token
        body["payload"] = payload
        return Publish(topic=self.result_topic, payload=dump_json(body), qos=0)


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

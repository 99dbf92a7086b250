"""The platform's device shadows, as the task service emulator (and tests) keep them.

State, not wire format: the profiles' platform sides decode what devices send and encode what
the cloud sends; these classes hold what the cloud remembers between the two. Both are pure
(timestamps are passed in). The rules each follows are in its class docstring and in
:mod:`agent.profiles.tencent_iothub.platform`.
"""

from __future__ import annotations

from typing import Any

from agent.core.merge_patch import merge, pending
from agent.core.model import Publish
from agent.profiles.base import dump_json
from agent.profiles.huawei_iotda.platform import ShadowGetRequest
from agent.profiles.tencent_iothub.platform import NO_VERSION_CHECK, VERSION_CONFLICT, ShadowRequest


class HuaweiShadow:
    """The platform's device shadow for one device: desired and reported per service.

    Pure state, as the task service emulator and the tests keep it: ``updateDeviceShadows``
    writes desired values, reports merge into reported ones, and a shadow read is answered
    with both halves and a version that grows with every change.
    """

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.desired: dict[str, dict[str, Any]] = {}
        self.reported: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, int] = {}

    def set_desired(self, service_id: str, properties: dict[str, Any]) -> None:
        """Write desired properties of one service (an ``updateDeviceShadows`` subtask)."""
        self.desired[service_id] = merge(self.desired.get(service_id, {}), properties)
        self._bump(service_id)

    def report(self, services: dict[str, dict[str, Any]]) -> None:
        """Merge a device's property report into the reported half."""
        for service_id, properties in services.items():
            self.reported[service_id] = merge(self.reported.get(service_id, {}), properties)
            self._bump(service_id)

    def pending_desired(self) -> dict[str, dict[str, Any]]:
        """Desired properties the reported half does not hold (what the platform would push)."""
        left = {}
        for service_id, properties in self.desired.items():
            missing = pending(properties, self.reported.get(service_id, {}))
            if missing:
                left[service_id] = missing
        return left

    def response(self, request: ShadowGetRequest) -> Publish:
        """The platform's answer to a shadow read."""
        services = sorted(set(self.desired) | set(self.reported))
        if request.service_id is not None:
            services = [s for s in services if s == request.service_id]
        shadow = []
        for service_id in services:
            entry: dict[str, Any] = {"service_id": service_id}
            if service_id in self.desired:
                entry["desired"] = {"properties": self.desired[service_id]}
            if service_id in self.reported:
                entry["reported"] = {"properties": self.reported[service_id]}
            entry["version"] = self.versions.get(service_id, 0)
            shadow.append(entry)
        body = {"object_device_id": self.device_id, "shadow": shadow}
        topic = (
            f"$oc/devices/{request.device_id}/sys/shadow/get/response/"
            f"request_id={request.request_id}"
        )
        return Publish(topic=topic, payload=dump_json(body))

    def _bump(self, service_id: str) -> None:
        self.versions[service_id] = self.versions.get(service_id, 0) + 1


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

"""Huawei IoTDA platform side: what the cloud sends and how it reads the device's answers.

Used by the task service emulator and by tests playing the platform; it shares topic layout and
wire models with the device side, while the golden wire samples in the tests keep the two honest.
"""

from __future__ import annotations

import re
from typing import Any

from agent.errors import RemoteProtocolError
from agent.model import Model, Publish
from agent.profiles.base import dump_json, parse_json
from agent.profiles.huawei_iotda import wire

_RESPONSE = re.compile(
    r"^\$oc/devices/(?P<dev>[^/]+)/sys/commands/response/request_id=(?P<rid>.+)$"
)
_PROPS_RESPONSE = re.compile(
    r"^\$oc/devices/(?P<dev>[^/]+)/sys/properties/set/response/request_id=(?P<rid>.+)$"
)


class CommandAnswer(Model):
    """A device's answer to a command, as the platform reads it."""

    device_id: str
    request_id: str
    result_code: int
    response_name: str | None = None
    paras: dict[str, Any] = {}


class PropertiesSetAnswer(Model):
    """A device's answer to a property-set request."""

    device_id: str
    request_id: str
    result_code: int
    result_desc: str | None = None


class HuaweiIotdaPlatform:
    """Builds downlinks for one device and decodes its uplinks."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self._prefix = f"$oc/devices/{device_id}/sys/"

    def uplink_filters(self) -> list[str]:
        """Topic filters the platform listens on for this device."""
        return [
            self._prefix + "commands/response/#",
            self._prefix + "properties/set/response/#",
            self._prefix + "properties/report",
            self._prefix + "events/up",
            self._prefix + "messages/up",
        ]

    def command(
        self,
        request_id: str,
        command_name: str,
        paras: dict[str, Any] | None = None,
        *,
        service_id: str | None = None,
        object_device_id: str | None = None,
    ) -> Publish:
        """A ``createCommands`` subtask as delivered to the device."""
        body: dict[str, Any] = {"command_name": command_name, "paras": paras or {}}
        if service_id is not None:
            body["service_id"] = service_id
        if object_device_id is not None:
            body["object_device_id"] = object_device_id
        topic = f"{self._prefix}commands/request_id={request_id}"
        return Publish(topic=topic, payload=dump_json(body))

    def message(
        self,
        content: str | bytes,
        *,
        message_id: str | None = None,
        name: str | None = None,
        object_device_id: str | None = None,
        raw: bool = False,
        topic: str | None = None,
    ) -> Publish:
        """A ``createMessages`` subtask: the system format unless ``raw``; custom topic if given."""
        target = topic or f"{self._prefix}messages/down"
        if raw:
            data = content if isinstance(content, bytes) else content.encode()
            return Publish(topic=target, payload=data)
        text = content.decode() if isinstance(content, bytes) else content
        body: dict[str, Any] = {"content": text}
        for field, value in (
            ("id", message_id),
            ("name", name),
            ("object_device_id", object_device_id),
        ):
            if value is not None:
                body[field] = value
        return Publish(topic=target, payload=dump_json(body))

    def decode_uplink(self, topic: str, payload: bytes) -> CommandAnswer | PropertiesSetAnswer:
        """Read a device's answer.

        Raises:
            RemoteProtocolError: the uplink is not an answer this side understands.
        """
        match = _RESPONSE.match(topic)
        if match:
            body = wire.parse(wire.CommandUp, parse_json(payload), what="command response")
            return CommandAnswer(
                device_id=match["dev"],
                request_id=match["rid"],
                result_code=body.result_code,
                response_name=body.response_name,
                paras=body.paras or {},
            )
        match = _PROPS_RESPONSE.match(topic)
        if match:
            props = wire.parse(wire.PropertiesSetUp, parse_json(payload), what="set response")
            return PropertiesSetAnswer(
                device_id=match["dev"],
                request_id=match["rid"],
                result_code=props.result_code,
                result_desc=props.result_desc,
            )
        raise RemoteProtocolError(f"not an answer topic: {topic!r}")


def user_topic(device_id: str, suffix: str) -> str:
    """The custom topic a ``createMessages`` ``topic`` suffix names (``$oc/.../user/{suffix}``)."""
    return f"$oc/devices/{device_id}/user/{suffix}"


def sub_device_notify(
    gateway_id: str, event_type: str, devices: list[dict[str, Any]], version: int, event_time: str
) -> Publish:
    """``add_sub_device_notify`` / ``delete_sub_device_notify`` on the gateway's ``events/down``."""
    body = {
        "object_device_id": gateway_id,
        "services": [
            {
                "service_id": "$sub_device_manager",
                "event_type": event_type,
                "event_time": event_time,
                "paras": {"devices": devices, "version": version},
            }
        ],
    }
    return Publish(topic=f"$oc/devices/{gateway_id}/sys/events/down", payload=dump_json(body))
